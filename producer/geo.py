"""Great-circle helpers over numpy arrays (WGS84 sphere approximation)."""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_M = 6_371_008.8
WARSAW = (52.2304, 21.0122)
"""Centre of the built-in network (lat, lon)."""


def haversine_m(lat1: np.ndarray | float, lon1: np.ndarray | float,
                lat2: np.ndarray | float, lon2: np.ndarray | float) -> np.ndarray:
    """Great-circle distance in metres."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp = p2 - p1
    dl = np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


def bearing_deg(lat1: np.ndarray | float, lon1: np.ndarray | float,
                lat2: np.ndarray | float, lon2: np.ndarray | float) -> np.ndarray:
    """Initial bearing from point 1 to point 2, degrees in [0, 360), 0 = north, clockwise."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(np.asarray(lon2) - np.asarray(lon1))
    x = np.sin(dl) * np.cos(p2)
    y = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    return np.asarray(np.degrees(np.arctan2(x, y)) % 360.0)


def offset_m(lat0: float, lon0: float, east_m: np.ndarray | float,
             north_m: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Points ``east_m``/``north_m`` metres from (lat0, lon0) (local tangent plane)."""
    lat = lat0 + np.degrees(np.asarray(north_m) / EARTH_RADIUS_M)
    lon = lon0 + np.degrees(np.asarray(east_m) / (EARTH_RADIUS_M * np.cos(np.radians(lat0))))
    return np.asarray(lat), np.asarray(lon)
