"""The road network (GET /network, GeoJSON) as the map's base layers (pure: no Streamlit, no I/O).

The producer publishes the network it drives; drawn under the live layers it makes the map
read as a city with no tiles and no internet: highways thick amber, rural roads medium,
urban streets thin grey, traffic lights as small dots, depots and places as larger ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import pydeck as pdk

from ui.api import BBox

RGBA = tuple[int, int, int, int]
ROAD_STYLE: dict[str, tuple[RGBA, float]] = {  # road_type -> (colour, width in metres)
    "highway": ((245, 158, 11, 235), 22.0),   # amber, thick
    "rural": ((163, 163, 128, 220), 12.0),    # sand, medium
    "urban": ((100, 116, 139, 210), 6.0),     # slate grey, thin
}
"""Road classes drawn thick to thin; unknown classes are drawn as urban."""
POINT_STYLE: dict[str, tuple[RGBA, float]] = {  # feature -> (colour, radius in metres)
    "light": ((253, 224, 71, 230), 7.0),
    "depot": ((167, 139, 250, 230), 40.0),
    "place": ((203, 213, 225, 160), 25.0),
}
ROAD_LAYER_ID = "roads"
POINT_LAYER_ID = "network-points"


@dataclass(frozen=True)
class Basemap:
    """A network ready to draw: one row per road (path, colour, width), one per point."""

    network_id: str
    name: str
    roads: pd.DataFrame
    points: pd.DataFrame
    bounds: BBox | None  # (minlon, minlat, maxlon, maxlat) of every coordinate

    @property
    def empty(self) -> bool:
        return self.roads.empty and self.points.empty


def _lonlat(coord: Any) -> list[float] | None:
    if (isinstance(coord, list | tuple) and len(coord) >= 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in coord[:2])
            and -180 <= coord[0] <= 180 and -90 <= coord[1] <= 90):
        return [float(coord[0]), float(coord[1])]
    return None


def parse_network(doc: dict[str, Any]) -> Basemap:
    """A /network document -> a Basemap. Never raises: odd features are skipped."""
    roads: dict[str, list[Any]] = {"path": [], "road_type": []}
    points: dict[str, list[Any]] = {"position": [], "feature": []}
    features = doc.get("features") if isinstance(doc, dict) else None
    for f in features if isinstance(features, list) else []:
        if not isinstance(f, dict):
            continue
        props: dict[str, Any] = p if isinstance(p := f.get("properties"), dict) else {}
        geom: dict[str, Any] = g if isinstance(g := f.get("geometry"), dict) else {}
        kind, coords = props.get("feature"), geom.get("coordinates")
        if geom.get("type") == "LineString" and isinstance(coords, list):
            path = [p for p in map(_lonlat, coords) if p is not None]
            if len(path) >= 2:
                rtype = props.get("road_type")
                roads["path"].append(path)
                roads["road_type"].append(rtype if rtype in ROAD_STYLE else "urban")
        elif geom.get("type") == "Point" and kind in POINT_STYLE:
            pos = _lonlat(coords)
            if pos is not None:
                points["position"].append(pos)
                points["feature"].append(kind)
    road_df = pd.DataFrame(roads)
    # thin first, thick last: highways are drawn over the streets that cross them
    order = {"urban": 0, "rural": 1, "highway": 2}
    if not road_df.empty:
        road_df = road_df.sort_values("road_type", key=lambda s: s.map(order),
                                      kind="stable").reset_index(drop=True)
    road_df["color"] = [list(ROAD_STYLE[t][0]) for t in road_df["road_type"]]
    road_df["width"] = [ROAD_STYLE[t][1] for t in road_df["road_type"]]
    point_df = pd.DataFrame(points)
    point_df["color"] = [list(POINT_STYLE[k][0]) for k in point_df["feature"]]
    point_df["radius"] = [POINT_STYLE[k][1] for k in point_df["feature"]]
    lons = [p[0] for path in roads["path"] for p in path] + [p[0] for p in points["position"]]
    lats = [p[1] for path in roads["path"] for p in path] + [p[1] for p in points["position"]]
    bounds = (min(lons), min(lats), max(lons), max(lats)) if lons else None
    name = doc.get("name") if isinstance(doc, dict) else None
    net_id = doc.get("network_id") if isinstance(doc, dict) else None
    return Basemap(str(net_id or ""), str(name or ""), road_df, point_df, bounds)


def road_layers(base: Basemap) -> list[pdk.Layer]:
    """The network's layers (roads, then points), not pickable: clicks go to the vehicles."""
    out: list[pdk.Layer] = []
    if not base.roads.empty:
        out.append(pdk.Layer(
            "PathLayer", data=base.roads[["path", "color", "width"]], id=ROAD_LAYER_ID,
            pickable=False, get_path="path", get_color="color", get_width="width",
            width_units="meters", width_min_pixels=1, width_max_pixels=10, cap_rounded=True,
            joint_rounded=True,
        ))
    if not base.points.empty:
        out.append(pdk.Layer(
            "ScatterplotLayer", data=base.points[["position", "color", "radius"]],
            id=POINT_LAYER_ID, pickable=False, get_position="position", get_fill_color="color",
            get_radius="radius", radius_min_pixels=1.5, radius_max_pixels=5, stroked=False,
        ))
    return out
