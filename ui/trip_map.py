"""A trip as the Trips page draws it (pure: no Streamlit, no I/O): GET /trips items as a
table, GET /trips/{trip_id} as a deck (the route coloured by speed with the live trails'
palette, violation segments as thicker red paths under it, start and end as dots) and its
TripSummary as metric texts.

Nothing here raises on what the API sends: rows without a trip id, route points without a
usable position and segments with fewer than two are left out; a missing or odd summary
shows as dashes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import pydeck as pdk

from ui import maps
from ui.frames import timestamps
from ui.palette import (
    SPEED_BAND_COLORS,
    SPEED_BAND_LABELS,
    STATE_COLORS,
    VIOLATION_COLOR,
    hex_color,
)

TRIP_COLUMNS: tuple[str, ...] = (
    "started_at", "vehicle_id", "status", "duration_min", "distance_km", "max_speed_kmh",
    "avg_speed_kmh", "stops", "speeding", "over_redline", "alerts", "end_reason", "ended_at",
    "trip_id",
)
ROUTE_COLUMNS: tuple[str, ...] = ("timestamp", "lat", "lon", "speed_kmh", "speeding",
                                  "rpm_over_redline", "seq")
SEGMENT_COLUMNS: tuple[str, ...] = ("kind", "started_at", "ended_at", "max_speed_kmh", "points")
VIOLATION_WIDTH_M = maps.TRAIL_WIDTH_M * 3
START_COLOR = STATE_COLORS["moving"]
END_COLOR = (248, 250, 252)


def num(value: Any) -> float:
    """A finite number from the API, else NaN (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    f = float(value)
    return f if math.isfinite(f) and abs(f) < 1e15 else math.nan


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def position(value: Any) -> tuple[float, float] | None:
    """(lon, lat) of a ``{lat, lon}`` object, or None when it is not a valid position."""
    loc = _dict(value)
    lat, lon = num(loc.get("lat")), num(loc.get("lon"))
    if math.isnan(lat) or math.isnan(lon) or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lon, lat


def trips_frame(items: Sequence[Any]) -> pd.DataFrame:
    """GET /trips items -> one row per trip (TRIP_COLUMNS), in the API's order (newest
    first). Items without a trip id are dropped (``attrs["dropped"]``)."""
    rows = [it for it in items if isinstance(it, dict) and _text(it.get("trip_id"))]
    summaries = [_dict(it.get("summary")) for it in rows]
    viol = [_dict(s.get("violations")) for s in summaries]
    df = pd.DataFrame({
        "started_at": timestamps([it.get("started_at") for it in rows]),
        "vehicle_id": [_text(it.get("vehicle_id")) for it in rows],
        "status": [_text(it.get("status")).replace("_", " ") or "?" for it in rows],
        "duration_min": [num(s.get("duration_s")) / 60 for s in summaries],
        "distance_km": [num(s.get("distance_km")) for s in summaries],
        "max_speed_kmh": [num(s.get("max_speed_kmh")) for s in summaries],
        "avg_speed_kmh": [num(s.get("avg_speed_kmh")) for s in summaries],
        "stops": [num(s.get("stops")) for s in summaries],
        "speeding": [num(v.get("speeding")) for v in viol],
        "over_redline": [num(v.get("over_redline")) for v in viol],
        "alerts": [num(v.get("alerts")) for v in viol],
        "end_reason": [_text(s.get("end_reason")) for s in summaries],
        "ended_at": timestamps([it.get("ended_at") for it in rows]),
        "trip_id": [it["trip_id"] for it in rows],
    }, columns=list(TRIP_COLUMNS))
    df.attrs["dropped"] = len(items) - len(rows)
    return df


def trip_label(row: pd.Series) -> str:
    """How a trip reads in the picker: vehicle, start time, status."""
    start = row["started_at"]
    when = start.strftime("%Y-%m-%d %H:%M:%S") if not pd.isna(start) else "unknown start"
    return f"{row['vehicle_id'] or '?'} · {when} UTC · {row['status']}"


def route_frame(route: Any) -> pd.DataFrame:
    """The trip's route points (ROUTE_COLUMNS); points without a usable position dropped,
    a missing speed drawn as 0 km/h."""
    items = [p for p in route if isinstance(p, dict)] if isinstance(route, list) else []
    df = pd.DataFrame({
        "timestamp": timestamps([p.get("timestamp") for p in items]),
        "lat": [num(p.get("lat")) for p in items],
        "lon": [num(p.get("lon")) for p in items],
        "speed_kmh": [num(p.get("speed_kmh")) for p in items],
        "speeding": [p.get("speeding") is True for p in items],
        "rpm_over_redline": [p.get("rpm_over_redline") is True for p in items],
        "seq": [num(p.get("seq")) for p in items],
    }, columns=list(ROUTE_COLUMNS))
    ok = (df["lat"].between(-90, 90) & df["lon"].between(-180, 180)).to_numpy(bool)
    out = df.loc[ok].reset_index(drop=True)
    out["speed_kmh"] = out["speed_kmh"].fillna(0.0).clip(lower=0.0)
    out.attrs["dropped"] = int((~ok).sum())
    return out


def segments_frame(segments: Any) -> pd.DataFrame:
    """Violation segments with at least two valid [lon, lat] points (SEGMENT_COLUMNS)."""
    rows: dict[str, list[Any]] = {c: [] for c in SEGMENT_COLUMNS}
    for seg in segments if isinstance(segments, list) else []:
        if not isinstance(seg, dict) or not isinstance(seg.get("points"), list):
            continue
        pts = []
        for p in seg["points"]:
            if isinstance(p, list | tuple) and len(p) >= 2:
                lon, lat = num(p[0]), num(p[1])
                if -180 <= lon <= 180 and -90 <= lat <= 90:
                    pts.append([round(lon, 6), round(lat, 6)])
        if len(pts) < 2:
            continue
        rows["kind"].append(_text(seg.get("kind")) or "violation")
        rows["started_at"].append(seg.get("started_at"))
        rows["ended_at"].append(seg.get("ended_at"))
        rows["max_speed_kmh"].append(num(seg.get("max_speed_kmh")))
        rows["points"].append(pts)
    df = pd.DataFrame(rows, columns=list(SEGMENT_COLUMNS))
    df["started_at"] = timestamps(list(df["started_at"]))
    df["ended_at"] = timestamps(list(df["ended_at"]))
    return df


def route_layer(route: pd.DataFrame) -> pdk.Layer:
    """The route as paths coloured by speed band (the live trails' palette)."""
    data = maps.trail_paths(route.assign(vehicle_id="route"))
    data["tip"] = [f"route\n{SPEED_BAND_LABELS[b]} km/h" for b in data["band"]]
    return pdk.Layer(
        "PathLayer", data=data, id="trip_route", pickable=True, get_path="path",
        get_color="color", get_width=maps.TRAIL_WIDTH_M, width_min_pixels=3,
        width_max_pixels=8, cap_rounded=True, joint_rounded=True,
    )


def _hms(ts: Any) -> str:
    return ts.strftime("%H:%M:%S") if isinstance(ts, datetime) and not pd.isna(ts) else "?"


def violation_layer(segments: pd.DataFrame) -> pdk.Layer:
    """Violation segments as thick red paths, drawn under the route (a red casing)."""
    data = pd.DataFrame({
        "path": segments["points"],
        "tip": [f"VIOLATION: {k.replace('_', ' ')}\n{_hms(a)} - {_hms(b)} UTC"
                + (f"\nmax {v:.0f} km/h" if not math.isnan(v) else "")
                for k, a, b, v in zip(segments["kind"], segments["started_at"],
                                      segments["ended_at"], segments["max_speed_kmh"],
                                      strict=True)],
    })
    return pdk.Layer(
        "PathLayer", data=data, id="trip_violations", pickable=True, get_path="path",
        get_color=list(VIOLATION_COLOR) + [255], get_width=VIOLATION_WIDTH_M,
        width_min_pixels=10, width_max_pixels=22, cap_rounded=True, joint_rounded=True,
    )


def ends_layer(start: tuple[float, float] | None,
               end: tuple[float, float] | None) -> pdk.Layer | None:
    """The trip's start (cyan) and end (white) as dots; None when neither is known."""
    pts = [(p, c, t) for p, c, t in ((start, START_COLOR, "start"), (end, END_COLOR, "end"))
           if p is not None]
    if not pts:
        return None
    data = pd.DataFrame({"lon": [p[0] for p, _, _ in pts], "lat": [p[1] for p, _, _ in pts],
                         "color": [list(c) + [240] for _, c, _ in pts],
                         "tip": [t for _, _, t in pts]})
    return pdk.Layer(
        "ScatterplotLayer", data=data, id="trip_ends", pickable=True, stroked=True,
        filled=True, get_position="[lon, lat]", get_fill_color="color",
        get_line_color=[15, 23, 42, 255], get_radius=maps.VEHICLE_RADIUS_M,
        radius_min_pixels=6, radius_max_pixels=12, line_width_min_pixels=2,
    )


def trip_deck(detail: dict[str, Any], base: Sequence[pdk.Layer] = ()) -> tuple[
        pdk.Deck, pd.DataFrame, pd.DataFrame]:
    """The chosen trip's map (base layers, violation segments, route, start and end), fitted
    to the route; also the route and segment frames it was drawn from."""
    route = route_frame(detail.get("route"))
    segments = segments_frame(detail.get("violation_segments"))
    layers = list(base)
    if not segments.empty:
        layers.append(violation_layer(segments))
    if len(route) >= 2:
        layers.append(route_layer(route))
    start = position(detail.get("start_location"))
    end = position(detail.get("end_location"))
    if (ends := ends_layer(start, end)) is not None:
        layers.append(ends)
    pts = route[["lat", "lon"]]
    extra = [p for p in (start, end) if p is not None]
    if extra:
        pts = pd.concat([pts, pd.DataFrame({"lon": [p[0] for p in extra],
                                            "lat": [p[1] for p in extra]})],
                        ignore_index=True)
    return maps.fleet_deck(layers, maps.view_state(pts)), route, segments


def duration_text(seconds: float) -> str:
    if math.isnan(seconds) or seconds < 0:
        return "–"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def summary_metrics(summary: Any) -> list[tuple[str, str]]:
    """(label, value) pairs of a TripSummary; "–" for anything missing or odd."""
    s = _dict(summary)
    v = _dict(s.get("violations"))

    def fmt(value: float, spec: str, unit: str = "") -> str:
        return "–" if math.isnan(value) else f"{value:{spec}}{unit}"

    return [
        ("Distance", fmt(num(s.get("distance_km")), ",.2f", " km")),
        ("Duration", duration_text(num(s.get("duration_s")))),
        ("Moving", duration_text(num(s.get("moving_s")))),
        ("Idle", duration_text(num(s.get("idle_s")))),
        ("Stops", fmt(num(s.get("stops")), ",.0f")),
        ("Max speed", fmt(num(s.get("max_speed_kmh")), ".0f", " km/h")),
        ("Avg speed", fmt(num(s.get("avg_speed_kmh")), ".0f", " km/h")),
        ("Fuel used", fmt(num(s.get("fuel_used_pct")), ".1f", " %")),
        ("Speeding", fmt(num(v.get("speeding")), ",.0f")
         + ("" if math.isnan(num(v.get("speeding_s"))) else
            f" ({duration_text(num(v.get('speeding_s')))})")),
        ("Over redline · alerts", f"{fmt(num(v.get('over_redline')), ',.0f')} · "
                                  f"{fmt(num(v.get('alerts')), ',.0f')}"),
    ]


def legend_html() -> str:
    """The trip map's legend (palette constants only, no data)."""
    def chip(rgb: Sequence[int], label: str, shape: str = "2px") -> str:
        return (f'<span style="display:inline-flex;align-items:center;margin-right:10px">'
                f'<span style="width:11px;height:11px;border-radius:{shape};'
                f'background:{hex_color(rgb)};display:inline-block;margin-right:4px;'
                f'border:1px solid #fff8"></span>{label}</span>')
    return ('<div style="font-size:0.8rem;line-height:1.9"><b>Route km/h</b>&nbsp; '
            + "".join(chip(c, lbl) for c, lbl in zip(SPEED_BAND_COLORS, SPEED_BAND_LABELS,
                                                       strict=True))
            + "<br>" + chip(VIOLATION_COLOR, "violation segment")
            + chip(START_COLOR, "start", "50%") + chip(END_COLOR, "end", "50%") + "</div>")
