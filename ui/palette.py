"""Every colour the Streamlit app uses, in one place.

The speed palette is the legacy dashboard's: green -> blue -> yellow -> orange -> red as the
speed rises through fixed bands. Vehicle-state colours are separate, so a point on the map
says what the car is doing, while its trail says how fast it went.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

RGB = tuple[int, int, int]

SPEED_BAND_LIMITS_KMH: tuple[float, ...] = (30.0, 60.0, 90.0, 120.0)
"""Upper bounds (exclusive) of the first four speed bands; the fifth is >= 120 km/h."""

SPEED_BAND_COLORS: tuple[RGB, ...] = (
    (34, 197, 94),   # green   < 30 km/h
    (59, 130, 246),  # blue    < 60
    (250, 204, 21),  # yellow  < 90
    (249, 115, 22),  # orange  < 120
    (239, 68, 68),   # red    >= 120
)
SPEED_BAND_LABELS: tuple[str, ...] = ("< 30", "30-60", "60-90", "90-120", ">= 120")

# Vehicle states, in priority order: the first that applies colours the point.
VEHICLE_STATES: tuple[str, ...] = (
    "speeding", "over redline", "fault", "low fuel", "stopped", "moving",
)
STATE_COLORS: dict[str, RGB] = {
    "speeding": (239, 68, 68),       # red
    "over redline": (217, 70, 239),  # magenta
    "fault": (249, 115, 22),         # orange
    "low fuel": (250, 204, 21),      # yellow
    "stopped": (148, 163, 184),      # slate grey
    "moving": (34, 211, 238),        # cyan
}
VIOLATION_COLOR: RGB = (255, 32, 96)
GEOFENCE_COLOR: RGB = (167, 139, 250)
"""Geofences (violet): a light fill and a solid outline, under the vehicles."""
VIOLATION_KIND_COLORS: dict[str, RGB] = {
    "speeding": STATE_COLORS["speeding"],
    "over-redline": STATE_COLORS["over redline"],
}
ROAD_TYPE_COLORS: dict[str, RGB] = {
    "urban": (96, 165, 250),
    "rural": (74, 222, 128),
    "highway": (251, 146, 60),
}
# Heatmap ramp (cold -> hot), deck.gl HeatmapLayer colorRange.
HEAT_COLORS: tuple[RGB, ...] = (
    (30, 64, 175), (59, 130, 246), (34, 197, 94), (250, 204, 21), (249, 115, 22), (239, 68, 68),
)

LOW_FUEL_PCT = 15.0
"""At or below this fuel level a vehicle counts as low on fuel."""


def speed_band(speed_kmh: float) -> int:
    """Index of the speed band (0 = slowest, 4 = >= 120 km/h)."""
    return int(np.searchsorted(SPEED_BAND_LIMITS_KMH, speed_kmh, side="right"))


def speed_bands(speeds: Iterable[float] | np.ndarray) -> np.ndarray:
    """Vectorised :func:`speed_band`."""
    return np.searchsorted(SPEED_BAND_LIMITS_KMH, np.asarray(speeds, dtype=float), side="right")


def speed_color(speed_kmh: float) -> list[int]:
    """The legacy palette colour for one speed, as [r, g, b]."""
    return list(SPEED_BAND_COLORS[speed_band(speed_kmh)])


def hex_color(rgb: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


def speed_scale_domain_range() -> tuple[list[str], list[str]]:
    """Band labels and hex colours, for an altair ordinal scale in palette order."""
    return list(SPEED_BAND_LABELS), [hex_color(c) for c in SPEED_BAND_COLORS]
