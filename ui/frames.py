"""JSON items from the web API -> tidy pandas frames the map and chart builders take.

Event frames have one row per event with the contract's fields, ``location`` flattened to
``lat``/``lon``, ``timestamp`` as a UTC datetime, plus derived columns: ``faults`` (codes
joined by ", "), ``stale`` (the API's ``include_stale`` mark; False when absent), ``state``
(see ui/palette.py VEHICLE_STATES) and ``speed_band``.

Whatever the API serves, framing never raises: a timestamp pandas cannot hold (before 1677
or after 2262), a missing or non-numeric position, speed or fuel level, or a missing vehicle
id drops the row, and the number dropped is in ``df.attrs["dropped"]``; other odd values
become 0, False or empty.
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


def timestamps(values: Sequence[Any]) -> pd.Series:
    """ISO 8601 strings -> UTC datetimes; anything else (or out of pandas' range) -> NaT."""
    text = pd.Series([v if isinstance(v, str) else None for v in values], dtype=object)
    return pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _keep(df: pd.DataFrame, ok: pd.Series) -> pd.DataFrame:
    dropped = int((~ok).sum())
    out = df.loc[ok.to_numpy()].reset_index(drop=True) if dropped else df
    out.attrs["dropped"] = dropped
    return out


def events_frame(items: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Events (as the API returns them) -> a frame with EVENT_COLUMNS and derived columns."""
    items = [it for it in items if isinstance(it, dict)]
    if not items:
        df = pd.DataFrame({c: pd.Series(dtype="object") for c in EVENT_COLUMNS})
        df["timestamp"] = pd.Series(dtype="datetime64[ns, UTC]")
        for col in ("lat", "lon", "speed_kmh", "fuel_level_pct"):
            df[col] = pd.Series(dtype="float64")
        for col in ("engine_rpm", "gear", "speed_limit_kmh", "seq"):
            df[col] = pd.Series(dtype="int64")
        for col in ("speeding", "rpm_over_redline", "stale"):
            df[col] = pd.Series(dtype="bool")
        return _derive(df)
    rows = {c: [it.get(c) for it in items] for c in EVENT_COLUMNS if c not in ("lat", "lon")}
    locs: list[dict[str, Any]] = [
        loc if isinstance(loc := it.get("location"), dict) else {} for it in items]
    rows["lat"] = [loc.get("lat") for loc in locs]
    rows["lon"] = [loc.get("lon") for loc in locs]
    rows["vehicle_id"] = [_text(v) for v in rows["vehicle_id"]]
    df = pd.DataFrame({c: pd.Series(rows[c], dtype=object) for c in EVENT_COLUMNS})
    df["timestamp"] = timestamps(rows["timestamp"])
    for col in ("lat", "lon", "speed_kmh", "fuel_level_pct"):
        df[col] = _floats(df[col])
    for col in ("engine_rpm", "gear", "speed_limit_kmh", "seq"):
        df[col] = _floats(df[col]).clip(-(2**53), 2**53).fillna(0).astype("int64")
    for col in ("speeding", "rpm_over_redline"):
        df[col] = [v is True for v in df[col]]
        df[col] = df[col].astype(bool)
    df["fault_codes"] = [[str(c) for c in v] if isinstance(v, list) else []
                         for v in df["fault_codes"]]
    df["road_type"] = [v if isinstance(v, str) else "" for v in df["road_type"]]
    df["stale"] = np.array([it.get("stale") is True for it in items], dtype=bool)
    ok = (df["timestamp"].notna() & df["lat"].between(-90, 90) & df["lon"].between(-180, 180)
          & df["vehicle_id"].notna() & df["speed_kmh"].notna() & df["fuel_level_pct"].notna())
    df = _keep(df, ok)
    dropped = df.attrs["dropped"]
    df["vehicle_id"] = df["vehicle_id"].astype(str)
    df = _derive(df)
    df.attrs["dropped"] = dropped
    return df


def _floats(col: pd.Series) -> pd.Series:
    """Numbers as float64; strings, booleans, lists, infinities -> NaN."""
    vals = [v if isinstance(v, int | float) and not isinstance(v, bool) else None for v in col]
    out = pd.to_numeric(pd.Series(vals, dtype=object, index=col.index), errors="coerce")
    return out.astype("float64").replace([np.inf, -np.inf], np.nan)


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
        vid = _text(trail.get("vehicle_id")) if isinstance(trail, dict) else None
        points = trail.get("points") if vid is not None else None
        for p in points if isinstance(points, list) else []:
            if not isinstance(p, dict):
                continue
            rows["vehicle_id"].append(vid)
            rows["timestamp"].append(p.get("timestamp"))
            rows["lat"].append(p.get("lat"))
            rows["lon"].append(p.get("lon"))
            rows["speed_kmh"].append(p.get("speed_kmh"))
    df = pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in rows.items()})
    df["timestamp"] = timestamps(rows["timestamp"])
    for col in ("lat", "lon", "speed_kmh"):
        df[col] = _floats(df[col])
    df["vehicle_id"] = df["vehicle_id"].astype(str)
    df = _keep(df, df["timestamp"].notna() & df["lat"].between(-90, 90)
               & df["lon"].between(-180, 180) & df["speed_kmh"].notna())
    dropped = df.attrs["dropped"]
    df = df.sort_values(["vehicle_id", "timestamp"], kind="stable").reset_index(drop=True)
    df.attrs["dropped"] = dropped
    return df


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
    df = pd.DataFrame([it for it in items if isinstance(it, dict)])
    for col in ("window_start", "window_end"):
        if col in df.columns:
            df[col] = timestamps(list(df[col]))
    if "window_start" in df.columns:
        df = _keep(df, df["window_start"].notna())
    return df
