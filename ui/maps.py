"""Pure pydeck builders: frames in, layers and a deck out (no Streamlit, no I/O).

No basemap is required: decks use ``map_style=None`` and no Mapbox token, so the layers draw
on the page's own background when there is no internet.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import pydeck as pdk
from pydeck.bindings.json_tools import default_serialize

from common.fleet_events import Geofence
from ui.palette import (
    GEOFENCE_COLOR,
    HEAT_COLORS,
    SPEED_BAND_COLORS,
    SPEED_BAND_LABELS,
    STATE_COLORS,
    VEHICLE_STATES,
    VIOLATION_COLOR,
    hex_color,
    speed_bands,
)

VIOLATION_BOOST = 3.0
"""Heatmap weight = speed_kmh, times this for an event that is a violation."""
TOOLTIP = {
    "text": "{tip}",
    "style": {"backgroundColor": "#111827", "color": "#f9fafb", "fontSize": "12px",
              "whiteSpace": "pre"},
}
FOLLOW_ZOOM = 14.0
# Sizes are in metres with pixel clamps: deck.gl's pixel units drew whole-canvas shapes in
# headless Chromium (SwiftShader), metres with min/max pixels draw the same everywhere.
VEHICLE_RADIUS_M = 40.0
TRAIL_WIDTH_M = 12.0
DETAILED_TIPS_MAX = 2000
DEFAULT_VIEW = pdk.ViewState(latitude=48.137, longitude=11.575, zoom=11.0, pitch=0)
STALE_COLOR = (100, 116, 139, 150)
"""Silent vehicles (``include_stale``): greyed, half transparent."""
DENSITY_COLORS = ((30, 64, 175), (59, 130, 246), (34, 211, 238), (250, 204, 21),
                  (249, 115, 22), (239, 68, 68))
"""Density cells, few -> many vehicles."""
MAP_PX = (900, 600)
"""The map's size in CSS pixels, roughly (width x height), for the viewport's box."""
M_PER_DEG = 111_320.0


def _tip_vehicle(df: pd.DataFrame) -> list[str]:
    return [
        f"{v}  ({s})\nspeed {sp:.0f} km/h, limit {lim} km/h\ngear {g}, "
        f"{rpm} rpm, fuel {f:.0f}%\nfaults: {fa or 'none'}"
        for v, s, sp, lim, g, rpm, f, fa in zip(
            df["vehicle_id"], df["state"], df["speed_kmh"], df["speed_limit_kmh"], df["gear"],
            df["engine_rpm"], df["fuel_level_pct"], df["faults"], strict=True)
    ]


def vehicle_layer(latest: pd.DataFrame, follow: str | None = None) -> pdk.Layer:
    """One point per vehicle, coloured by state (palette.STATE_COLORS), with a tooltip.

    Above DETAILED_TIPS_MAX vehicles the tooltip is one line (id, state, speed): the
    per-vehicle text is the largest part of what a big fleet sends to the browser.
    """
    data = latest[["vehicle_id", "lat", "lon"]].copy()
    stale = latest["stale"].to_numpy(bool) if "stale" in latest else np.zeros(len(latest), bool)
    data["color"] = [list(STALE_COLOR) if old else list(STATE_COLORS[s]) + [235]
                     for s, old in zip(latest["state"], stale, strict=True)]
    data["radius"] = np.where(latest["vehicle_id"] == follow, 2.0, 1.0) if follow else 1.0
    if len(latest) <= DETAILED_TIPS_MAX:
        data["tip"] = _tip_vehicle(latest)
    else:
        data["tip"] = [f"{v} ({s}) {sp:.0f} km/h" for v, s, sp in zip(
            latest["vehicle_id"], latest["state"], latest["speed_kmh"], strict=True)]
    if stale.any():
        data["tip"] = [f"{t}\nSILENT: no report for a while" if old else t
                       for t, old in zip(data["tip"], stale, strict=True)]
    return pdk.Layer(
        "ScatterplotLayer", data=data, id="vehicles", pickable=True, stroked=True,
        filled=True, get_position="[lon, lat]", get_fill_color="color",
        get_line_color=[255, 255, 255, 220], get_radius="radius", radius_scale=VEHICLE_RADIUS_M,
        radius_min_pixels=5, radius_max_pixels=16, line_width_min_pixels=1.5,
    )


def trail_paths(trails: pd.DataFrame) -> pd.DataFrame:
    """Points -> one path per run of equal speed band, joined end to start.

    Columns: vehicle_id, band, path ([[lon, lat], ...]), color, tip.
    """
    out: dict[str, list] = {"vehicle_id": [], "band": [], "path": [], "color": [], "tip": []}
    for vid, g in trails.groupby("vehicle_id", sort=True):
        lon = g["lon"].to_numpy(float)
        lat = g["lat"].to_numpy(float)
        if len(lon) < 2:
            continue
        bands = speed_bands(g["speed_kmh"].to_numpy(float))
        # A segment i -> i+1 takes the band of its start point; runs split where it changes.
        seg_bands = bands[:-1]
        cuts = np.flatnonzero(np.diff(seg_bands)) + 1
        starts = np.concatenate(([0], cuts))
        ends = np.concatenate((cuts, [len(seg_bands)]))
        for s, e in zip(starts, ends, strict=True):
            band = int(seg_bands[s])
            out["vehicle_id"].append(str(vid))
            out["band"].append(band)
            out["path"].append([[round(float(x), 6), round(float(y), 6)]
                                for x, y in zip(lon[s:e + 1], lat[s:e + 1], strict=True)])
            out["color"].append(list(SPEED_BAND_COLORS[band]))
            out["tip"].append(f"{vid} trail\n{SPEED_BAND_LABELS[band]} km/h")
    return pd.DataFrame(out)


def trail_layer(trails: pd.DataFrame) -> pdk.Layer:
    """Trails as a PathLayer coloured by speed band (the legacy palette)."""
    return pdk.Layer(
        "PathLayer", data=trail_paths(trails), id="trails", pickable=True, get_path="path",
        get_color="color", get_width=TRAIL_WIDTH_M, width_min_pixels=3, width_max_pixels=8,
        cap_rounded=True, joint_rounded=True, opacity=0.9,
    )


def heat_weights(events: pd.DataFrame) -> np.ndarray:
    violation = events["speeding"].to_numpy(bool) | events["rpm_over_redline"].to_numpy(bool)
    return events["speed_kmh"].to_numpy(float) * np.where(violation, VIOLATION_BOOST, 1.0)


def heatmap_layer(events: pd.DataFrame) -> pdk.Layer:
    """Speed-weighted heatmap of recent events; violations weigh VIOLATION_BOOST times more."""
    data = events[["lat", "lon"]].copy()
    data["weight"] = heat_weights(events)
    return pdk.Layer(
        "HeatmapLayer", data=data, id="heatmap", get_position="[lon, lat]",
        get_weight="weight", radius_pixels=40, intensity=1.0, threshold=0.05,
        aggregation="SUM", color_range=[list(c) for c in HEAT_COLORS], opacity=0.55,
    )


def violation_layer(violations: pd.DataFrame) -> pdk.Layer:
    """Violation spots: hollow rings so the vehicle points stay visible."""
    data = violations[["vehicle_id", "lat", "lon"]].copy()
    data["tip"] = [
        f"VIOLATION {v}\n{', '.join(k for k, on in (('speeding', a), ('over redline', b)) if on)}"
        f"\n{sp:.0f} km/h (limit {lim}), {rpm} rpm\n{ts:%H:%M:%S} UTC"
        for v, a, b, sp, lim, rpm, ts in zip(
            violations["vehicle_id"], violations["speeding"], violations["rpm_over_redline"],
            violations["speed_kmh"], violations["speed_limit_kmh"], violations["engine_rpm"],
            violations["timestamp"], strict=True)
    ]
    return pdk.Layer(
        "ScatterplotLayer", data=data, id="violations", pickable=True, stroked=True,
        filled=True, get_position="[lon, lat]", get_fill_color=list(VIOLATION_COLOR) + [40],
        get_line_color=list(VIOLATION_COLOR) + [230], get_radius=VEHICLE_RADIUS_M,
        radius_min_pixels=4, radius_max_pixels=12, line_width_min_pixels=1.5,
    )


def density_layer(grid: dict) -> pdk.Layer:
    """GET /telemetry/density cells as flat squares coloured by vehicle count (log scale)."""
    items = [c for c in grid.get("items", []) if isinstance(c, dict)]
    data = pd.DataFrame({
        "lon": [float(c.get("lon", 0)) for c in items],
        "lat": [float(c.get("lat", 0)) for c in items],
        "count": [int(c.get("count", 0)) for c in items],
        "speed": [float(c.get("mean_speed_kmh", 0)) for c in items],
    })
    top = max(1, int(data["count"].max())) if len(data) else 1
    levels = len(DENSITY_COLORS) - 1
    # log scale from one car (the first colour) to the fullest cell (the last)
    counts = np.maximum(data["count"].to_numpy(float), 1.0)
    idx = np.round(np.log(counts) / math.log(top) * levels) if top > 1 else np.zeros(len(data))
    data["color"] = [list(DENSITY_COLORS[int(i)]) + [200] for i in idx]
    data["tip"] = [f"{n:,} vehicles\nmean {sp:.0f} km/h"
                   for n, sp in zip(data["count"], data["speed"], strict=True)]
    dlon, dlat = (grid.get("cell_size_deg") or [0.01, 0.01])[:2]
    lat0 = float(data["lat"].mean()) if len(data) else 0.0
    half = 0.5 * min(float(dlat) * M_PER_DEG,
                     float(dlon) * M_PER_DEG * math.cos(math.radians(lat0)))
    return pdk.Layer(
        "ColumnLayer", data=data[["lon", "lat", "color", "tip", "count"]], id="density",
        pickable=True, extruded=False, disk_resolution=4, angle=45,
        radius=max(1.0, half * math.sqrt(2)), coverage=0.92, get_position="[lon, lat]",
        get_fill_color="color",
    )


def geofence_layer(geofences: Sequence[Geofence]) -> pdk.Layer:
    """Geofences as a PolygonLayer (holes kept): a light violet fill and outline, a tooltip
    with the name and id. Deck.gl shows tooltips as text, so names cannot inject markup."""
    data = pd.DataFrame({
        "polygon": [[[list(p) for p in ring] for ring in g.geometry.coordinates]
                    for g in geofences],
        "tip": [f"geofence {g.name}\nid {g.id}" for g in geofences],
    })
    return pdk.Layer(
        "PolygonLayer", data=data, id="geofences", pickable=True, stroked=True, filled=True,
        get_polygon="polygon", get_fill_color=list(GEOFENCE_COLOR) + [50],
        get_line_color=list(GEOFENCE_COLOR) + [230], get_line_width=6,
        line_width_min_pixels=2, line_width_max_pixels=4,
    )


def view_bbox(view: pdk.ViewState, size_px: tuple[int, int] = MAP_PX) -> tuple[
        float, float, float, float]:
    """The (minlon, minlat, maxlon, maxlat) a map of ``size_px`` shows at ``view``."""
    deg_per_px = 360.0 / (512.0 * 2 ** float(view.zoom))
    half_lon = size_px[0] / 2 * deg_per_px
    half_lat = size_px[1] / 2 * deg_per_px * math.cos(math.radians(float(view.latitude)))
    lon, lat = float(view.longitude), float(view.latitude)
    return (max(-180.0, lon - half_lon), max(-90.0, lat - half_lat),
            min(180.0, lon + half_lon), min(90.0, lat + half_lat))


def fit_view(bounds: tuple[float, float, float, float]) -> pdk.ViewState:
    """A view that fits (minlon, minlat, maxlon, maxlat)."""
    return view_state(pd.DataFrame({"lat": [bounds[1], bounds[3]],
                                    "lon": [bounds[0], bounds[2]]}))


def view_state(latest: pd.DataFrame, follow: str | None = None) -> pdk.ViewState:
    """Centre on the followed vehicle, else fit every vehicle (rounded, so it stays put)."""
    if follow is not None:
        row = latest.loc[latest["vehicle_id"] == follow]
        if not row.empty:
            return pdk.ViewState(latitude=float(row["lat"].iloc[0]),
                                 longitude=float(row["lon"].iloc[0]), zoom=FOLLOW_ZOOM, pitch=0)
    pts = latest[["lat", "lon"]].dropna()
    if pts.empty:
        return DEFAULT_VIEW
    lat0, lat1 = float(pts["lat"].min()), float(pts["lat"].max())
    lon0, lon1 = float(pts["lon"].min()), float(pts["lon"].max())
    # Web Mercator stretches latitude by 1/cos(lat); compare spans in longitude degrees.
    span = max((lat1 - lat0) / math.cos(math.radians((lat0 + lat1) / 2)), lon1 - lon0, 1e-3)
    # deck.gl: at zoom z a degree is 512 * 2**z / 360 px; fit the span in ~500 px of the map.
    zoom = max(1.0, min(15.0, math.floor(2 * math.log2(500 * 360 / (512 * span))) / 2))
    return pdk.ViewState(latitude=round((lat0 + lat1) / 2, 3),
                         longitude=round((lon0 + lon1) / 2, 3), zoom=zoom, pitch=0)


BLANK_STYLE = "data:application/json," + quote(json.dumps({
    "version": 8, "sources": {},
    "layers": [{"id": "background", "type": "background",
                "paint": {"background-color": "#0f172a"}}],
}, separators=(",", ":")))
"""An inline map style with no sources (a plain background): nothing is fetched."""


INERT_MARK = "\N{ZERO WIDTH SPACE}"
"""Put before a data string that deck.gl's JSON converter would run (see :func:`inert`)."""
_PLAIN = (int, float, bool, type(None))
_MARKER = '"@@'


def inert(value: Any) -> Any:
    """``value`` (a layer's data) with every string that starts with ``@@`` made inert.

    st.pydeck_chart hands the deck's whole JSON, data included, to @deck.gl/json's
    ``convertJSON`` in the browser, which reads any string starting with ``@@=`` as an
    expression and ``@@#`` as a constant (a vehicle id ``@@=(`` turned the map into an error
    box). deck.gl documents no escape, so such strings get an invisible INERT_MARK in front:
    the tooltip shows the same characters. :func:`shown` takes the mark off again.
    """
    kind = type(value)
    if kind is str:
        return INERT_MARK + value if value.startswith("@@") else value
    if kind is list or kind is tuple:
        if all(type(v) in _PLAIN for v in value):
            return value
        return [inert(v) for v in value]
    if kind is dict:
        return {k: inert(v) for k, v in value.items()}
    if isinstance(value, str):  # a str subclass (numpy.str_)
        return inert(str(value))
    return value


def shown(value: str) -> str:
    """A data string back from the browser (a picked object's field), without INERT_MARK."""
    rest = value.removeprefix(INERT_MARK)
    return rest if rest.startswith("@@") else value


def _serialize(o: Any, data: Callable[[Any], Any]) -> Any:
    attrs = default_serialize(o)
    if isinstance(o, pdk.Layer) and isinstance(attrs, dict) and "data" in attrs:
        attrs["data"] = data(attrs["data"])  # a new dict: the layer keeps its own data
    return attrs


class CompactDeck(pdk.Deck):
    """A Deck whose JSON (what st.pydeck_chart sends) has no indentation: ~1/3 smaller, and
    whose layers' data strings are :func:`inert` in the browser."""

    def _dumps(self, data: Callable[[Any], Any] | None = None) -> str:
        default = default_serialize if data is None else functools.partial(_serialize,
                                                                           data=data)
        return json.dumps(self, sort_keys=True, default=default, separators=(",", ":"))

    def to_json(self) -> str:
        text = self._dumps()
        # A data string starting with @@ shows as "@@ in the JSON. The deck's own props
        # (@@type keys, @@= accessors) hold the rest: count them without the data, and walk
        # the data (which costs as much as the dump for a big road network) only if it has one.
        if text.count(_MARKER) > self._dumps(lambda _: []).count(_MARKER):
            text = self._dumps(inert)
        return text


def fleet_deck(layers: Sequence[pdk.Layer], view: pdk.ViewState) -> pdk.Deck:
    """The map: the layers over a plain background; no tiles, no token (works offline)."""
    return CompactDeck(layers=list(layers), initial_view_state=view, map_provider="carto",
                       map_style=BLANK_STYLE, tooltip=TOOLTIP)


def legend_html(show_trails: bool = True, show_heat: bool = True) -> str:
    """A compact legend from the palette (constants only, no event data)."""
    def chip(rgb: Sequence[int], label: str, shape: str = "50%") -> str:
        return (f'<span style="display:inline-flex;align-items:center;margin-right:10px">'
                f'<span style="width:11px;height:11px;border-radius:{shape};'
                f'background:{hex_color(rgb)};display:inline-block;margin-right:4px;'
                f'border:1px solid #fff8"></span>{label}</span>')

    parts = ['<div style="font-size:0.8rem;line-height:1.9">',
             "<b>Vehicles</b>&nbsp; " + "".join(chip(STATE_COLORS[s], s) for s in VEHICLE_STATES)]
    if show_trails:
        parts.append("<br><b>Trail km/h</b>&nbsp; " + "".join(
            chip(c, lbl, "2px") for c, lbl in zip(SPEED_BAND_COLORS, SPEED_BAND_LABELS,
                                                    strict=True)))
    parts.append("<br>" + chip(VIOLATION_COLOR, "violation (ring)"))
    if show_heat:
        parts.append('<b>Heat</b>&nbsp;<span style="display:inline-block;width:90px;height:9px;'
                     "vertical-align:middle;background:linear-gradient(90deg,"
                     + ",".join(hex_color(c) for c in HEAT_COLORS)
                     + ')"></span>&nbsp;speed-weighted, violations x3')
    parts.append("</div>")
    return "".join(parts)
