"""JSON items from the web API -> tidy pandas frames the map and chart builders take.

Event frames have one row per event with the contract's fields, ``location`` flattened to
``lat``/``lon``, ``timestamp`` as a UTC datetime, plus derived columns: ``faults`` (codes
joined by ", "), ``state`` (see ui/palette.py VEHICLE_STATES) and ``speed_band``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ui.palette import LOW_FUEL_PCT, speed_bands

EVENT_COLUMNS: tuple[str, ...] = (
    "vehicle_id", "timestamp", "lat", "lon", "speed_kmh", "engine_rpm", "gear",
    "fuel_level_pct", "fault_codes", "road_type", "speed_limit_kmh", "speeding",
    "rpm_over_redline", "seq",
)
TRAIL_COLUMNS: tuple[str, ...] = ("vehicle_id", "timestamp", "lat", "lon", "speed_kmh")


def events_frame(items: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Events (as the API returns them) -> a frame with EVENT_COLUMNS and derived columns."""
    if not items:
        df = pd.DataFrame({c: pd.Series(dtype="object") for c in EVENT_COLUMNS})
        df["timestamp"] = pd.Series(dtype="datetime64[ns, UTC]")
        for col in ("lat", "lon", "speed_kmh", "fuel_level_pct"):
            df[col] = pd.Series(dtype="float64")
        for col in ("engine_rpm", "gear", "speed_limit_kmh", "seq"):
            df[col] = pd.Series(dtype="int64")
        for col in ("speeding", "rpm_over_redline"):
            df[col] = pd.Series(dtype="bool")
        return _derive(df)
    rows = {c: [it.get(c) for it in items] for c in EVENT_COLUMNS if c not in ("lat", "lon")}
    locs = [it.get("location") or {} for it in items]
    rows["lat"] = [loc.get("lat") for loc in locs]
    rows["lon"] = [loc.get("lon") for loc in locs]
    df = pd.DataFrame(rows)[list(EVENT_COLUMNS)]
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True, format="ISO8601")
    for col in ("lat", "lon", "speed_kmh", "fuel_level_pct"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in ("engine_rpm", "gear", "speed_limit_kmh", "seq"):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).astype("int64")
    for col in ("speeding", "rpm_over_redline"):
        df[col] = df[col].fillna(False).astype(bool)
    df["fault_codes"] = [list(v) if isinstance(v, list) else [] for v in df["fault_codes"]]
    df["vehicle_id"] = df["vehicle_id"].astype(str)
    return _derive(df)


def _derive(df: pd.DataFrame) -> pd.DataFrame:
    df["faults"] = [", ".join(map(str, v)) if v else "" for v in df["fault_codes"]]
    df["state"] = vehicle_states(df)
    df["speed_band"] = speed_bands(df["speed_kmh"]).astype("int64")
    return df


def vehicle_states(df: pd.DataFrame) -> np.ndarray:
    """The first state of palette.VEHICLE_STATES that applies to each row."""
    if df.empty:
        return np.array([], dtype=object)
    has_fault = np.array([bool(v) for v in df["fault_codes"]], dtype=bool)
    conditions = [
        df["speeding"].to_numpy(bool),
        df["rpm_over_redline"].to_numpy(bool),
        has_fault,
        df["fuel_level_pct"].to_numpy(float) <= LOW_FUEL_PCT,
        df["speed_kmh"].to_numpy(float) < 1.0,
    ]
    choices = ["speeding", "over redline", "fault", "low fuel", "stopped"]
    return np.select(conditions, choices, default="moving").astype(object)


def trails_frame(items: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """/telemetry/trails items -> one row per point, oldest first within each vehicle."""
    rows: dict[str, list[Any]] = {c: [] for c in TRAIL_COLUMNS}
    for trail in items:
        vid = str(trail.get("vehicle_id", ""))
        for p in trail.get("points") or []:
            rows["vehicle_id"].append(vid)
            rows["timestamp"].append(p.get("timestamp"))
            rows["lat"].append(p.get("lat"))
            rows["lon"].append(p.get("lon"))
            rows["speed_kmh"].append(p.get("speed_kmh"))
    df = pd.DataFrame(rows)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True, format="ISO8601")
    for col in ("lat", "lon", "speed_kmh"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    df["vehicle_id"] = df["vehicle_id"].astype(str)
    return df.sort_values(["vehicle_id", "timestamp"], kind="stable").reset_index(drop=True)


def violation_kinds(df: pd.DataFrame) -> pd.DataFrame:
    """Violation events -> one row per (event, kind), kind in {speeding, over-redline}."""
    cols = ["timestamp", "vehicle_id", "kind"]
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in cols}).astype(
            {"timestamp": "datetime64[ns, UTC]"})
    parts = []
    for flag, kind in (("speeding", "speeding"), ("rpm_over_redline", "over-redline")):
        sel = df.loc[df[flag], ["timestamp", "vehicle_id"]].copy()
        sel["kind"] = kind
        parts.append(sel)
    return pd.concat(parts, ignore_index=True)[cols]


def windows_frame(items: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Analytics window rows -> a frame with parsed window_start / window_end."""
    df = pd.DataFrame(list(items))
    for col in ("window_start", "window_end"):
        if col in df.columns:
            df[col] = pd.to_datetime(df[col], utc=True, format="ISO8601")
    return df
