"""Telemetry events as numpy columns: reading JSON lines, consecutive pairs, local metres."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson

EARTH_R = 6_371_008.8
ROAD_CODES = {"urban": 0, "rural": 1, "highway": 2}
VEHICLE_TYPES = ("car", "van", "truck")
STOP_KMH = 1.0
"""Below this a car counts as stopped."""

@dataclass
class Events:
    """One run's events as columns, sorted by (vehicle, time)."""

    vid: np.ndarray  # int32: index into ids
    t: np.ndarray  # seconds since the first event of the run
    lat: np.ndarray
    lon: np.ndarray
    v: np.ndarray  # m/s
    fuel: np.ndarray  # percent
    road: np.ndarray  # int8: ROAD_CODES
    heading: np.ndarray  # degrees, NaN when the event has none
    parked: np.ndarray  # bool: the event says the ignition is off
    vtype: np.ndarray  # int8: index into VEHICLE_TYPES, -1 when the event has none
    ids: list[str] = field(default_factory=list)
    has_ignition: bool = False
    has_vtype: bool = False

    def __len__(self) -> int:
        return int(self.t.size)



CHUNK = 65_536
_COLS = (("vid", np.int32), ("t", np.float64), ("lat", np.float64), ("lon", np.float64),
         ("v", np.float64), ("fuel", np.float64), ("road", np.int8), ("heading", np.float64),
         ("parked", np.bool_), ("vtype", np.int8))


def parse_events(lines: Iterable[bytes | str]) -> Events:
    """Stream JSON lines into numpy columns, CHUNK lines at a time (no JSON is kept)."""
    done: dict[str, list[np.ndarray]] = {k: [] for k, _ in _COLS}
    rows: list[tuple[Any, ...]] = []
    ids: dict[str, int] = {}
    stamps: dict[str, float] = {}
    has_ign = has_vt = False

    def flush() -> None:
        if rows:
            for (k, dtype), col in zip(_COLS, zip(*rows, strict=True), strict=True):
                done[k].append(np.asarray(col, dtype=dtype))
            rows.clear()

    for raw in lines:
        if not raw.strip():
            continue
        ev = orjson.loads(raw)
        ts = ev["timestamp"]
        sec = stamps.get(ts)
        if sec is None:
            if len(stamps) > 100_000:
                stamps.clear()
            sec = stamps[ts] = datetime.fromisoformat(ts).timestamp()
        ign, vt = ev.get("ignition"), ev.get("vehicle_type")
        has_ign |= ign is not None
        has_vt |= vt is not None
        rows.append((ids.setdefault(ev["vehicle_id"], len(ids)), sec, ev["location"]["lat"],
                     ev["location"]["lon"], ev["speed_kmh"] / 3.6, ev["fuel_level_pct"],
                     ROAD_CODES.get(ev["road_type"], 0), ev.get("heading_deg", math.nan),
                     ign is False, VEHICLE_TYPES.index(vt) if vt in VEHICLE_TYPES else -1))
        if len(rows) >= CHUNK:
            flush()
    flush()
    if not done["t"]:
        raise ValueError("no events")
    arr = {k: np.concatenate(v) for k, v in done.items()}
    order = np.lexsort((arr["t"], arr["vid"]))
    cols = {k: v[order] for k, v in arr.items()}
    cols["t"] = cols["t"] - arr["t"].min()
    return Events(**cols, ids=list(ids), has_ignition=has_ign, has_vtype=has_vt)


def pairs(ev: Events) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i, i+1) of consecutive events of the same vehicle."""
    i = np.flatnonzero(ev.vid[:-1] == ev.vid[1:])
    return i, i + 1


class Projection:
    """Local equirectangular metres around a reference point (fine over a city)."""

    def __init__(self, lat0: float, lon0: float) -> None:
        self.lat0, self.lon0 = lat0, lon0
        self.kx = math.radians(1.0) * EARTH_R * math.cos(math.radians(lat0))
        self.ky = math.radians(1.0) * EARTH_R

    def xy(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return ((np.asarray(lon) - self.lon0) * self.kx, (np.asarray(lat) - self.lat0) * self.ky)


def angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Absolute difference of two bearings, 0..180 degrees."""
    return np.abs((np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0)


def bearing(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray) -> np.ndarray:
    return np.degrees(np.arctan2(x2 - x1, y2 - y1)) % 360.0
