"""Roads from a user-supplied GeoJSON file (e.g. an OpenStreetMap export).

Accepted: a FeatureCollection (or one Feature) of LineString / MultiLineString geometries,
coordinates as ``[lon, lat]``. Properties, OSM style:

- ``highway``: motorway/trunk (and their ``_link``s) drive as highways, other driveable
  classes (primary ... residential, service, unclassified, living_street) as urban roads;
  footways, cycleways, paths, steps and the like are skipped.
- ``maxspeed``: ``"50"``, ``"30 mph"``, ``"PL:urban"``/``"PL:rural"``/``"PL:motorway"``;
  when present it also picks the road type (<= 60 urban, <= 100 rural, above highway).
- ``road_type`` (optional, ``urban``/``rural``/``highway``) overrides the guess.

Roads are driven both ways (``oneway`` is ignored); only the largest connected part is kept.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson

from producer.roads import DEFAULT_LIMITS, ROAD_TYPES, Road, RoadNetwork, build_network

NOT_DRIVEABLE = frozenset({
    "footway", "path", "cycleway", "pedestrian", "steps", "bridleway", "corridor",
    "construction", "proposed", "platform", "elevator", "bus_guideway", "raceway",
    "escape", "abandoned", "razed", "via_ferrata", "busway", "services", "rest_area",
})
MOTORWAY = frozenset({"motorway", "motorway_link", "trunk", "trunk_link"})
ZONE_SPEEDS = {"urban": 50, "rural": 90, "motorway": 140, "trunk": 110, "living_street": 20,
               "walk": 10, "none": 130}


class RoadsFileError(ValueError):
    """The roads file is missing, unreadable or holds no usable road."""


def parse_maxspeed(value: object) -> int | None:
    """``maxspeed`` tag -> km/h, or None when absent or not understood."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value) if 0 < value < 400 else None
    text = str(value).strip().lower().split(";")[0]
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(mph|km/h|kmh|kph)?", text)
    if m:
        kmh = float(m.group(1)) * (1.609344 if m.group(2) == "mph" else 1.0)
        return int(round(kmh)) if 0 < kmh < 400 else None
    zone = text.split(":")[-1]
    return ZONE_SPEEDS.get(zone)


def road_class(props: dict[str, Any]) -> tuple[str, int] | None:
    """(road_type, limit) for a feature's properties, or None when not driveable."""
    highway = str(props.get("highway", "road")).strip().lower()
    if highway in NOT_DRIVEABLE:
        return None
    limit = parse_maxspeed(props.get("maxspeed"))
    given = props.get("road_type")
    if given in ROAD_TYPES:
        road_type = str(given)
    elif highway in MOTORWAY and (limit is None or limit > 60):
        road_type = "highway" if limit is None or limit > 100 or "motorway" in highway else "rural"
    elif limit is not None:
        road_type = "urban" if limit <= 60 else "rural" if limit <= 100 else "highway"
    else:
        road_type = "urban"
    return road_type, (limit if limit is not None else DEFAULT_LIMITS[road_type])


def _lines(geometry: Any, where: str) -> list[list[Any]]:
    if not isinstance(geometry, dict):
        raise RoadsFileError(f"{where}: geometry is missing")
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "LineString":
        return [coords] if coords is not None else [[]]
    if kind == "MultiLineString" and isinstance(coords, list):
        return list(coords)
    return []  # points, polygons: not roads


def _points(coords: Any, where: str) -> tuple[list[float], list[float]]:
    if not isinstance(coords, list) or len(coords) < 2:
        raise RoadsFileError(f"{where}: a LineString needs at least two [lon, lat] positions")
    lats, lons = [], []
    for pos in coords:
        if (not isinstance(pos, list) or len(pos) < 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool)
                           for v in pos[:2])):
            raise RoadsFileError(f"{where}: position {pos!r} is not a [lon, lat] pair of numbers")
        lon, lat = float(pos[0]), float(pos[1])
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise RoadsFileError(
                f"{where}: position {pos!r} is out of range (GeoJSON order is [lon, lat])")
        lats.append(round(lat, 7))
        lons.append(round(lon, 7))
    return lats, lons


def load_roads(path: Path) -> RoadNetwork:
    """Read ``path`` and build a network; RoadsFileError names the file and the problem."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RoadsFileError(f"roads file {path}: cannot read it ({exc.strerror or exc})") from exc
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RoadsFileError(f"roads file {path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise RoadsFileError(f"roads file {path}: expected a GeoJSON object")
    if doc.get("type") == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise RoadsFileError(f"roads file {path}: FeatureCollection has no 'features' list")
    elif doc.get("type") == "Feature":
        features = [doc]
    else:
        raise RoadsFileError(f"roads file {path}: expected a GeoJSON FeatureCollection or "
                             f"Feature, got type {doc.get('type')!r}")
    roads: list[Road] = []
    for i, feature in enumerate(features):
        where = f"roads file {path}: feature {i}"
        if not isinstance(feature, dict):
            raise RoadsFileError(f"{where}: not a GeoJSON Feature object")
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            raise RoadsFileError(f"{where}: properties must be an object")
        cls = road_class(props)
        if cls is None:
            continue
        road_type, limit = cls
        for line in _lines(feature.get("geometry"), where):
            lats, lons = _points(line, where)
            roads.append(Road(lats=lats, lons=lons, road_type=ROAD_TYPES.index(road_type),
                              limit_kmh=limit))
    if not roads:
        raise RoadsFileError(f"roads file {path}: no driveable LineString roads found "
                             f"({len(features)} features)")
    try:
        return build_network(f"geojson:{path.name}", roads)
    except ValueError as exc:
        raise RoadsFileError(f"roads file {path}: {exc}") from exc
