"""Roads from a user-supplied GeoJSON file (e.g. an OpenStreetMap export), with OSM rules.

Accepted: a FeatureCollection (or one Feature) of LineString / MultiLineString roads and
Point features, coordinates as ``[lon, lat]`` (RFC 7946). Properties, OSM style:

- ``highway``: only ways open to cars are driven: ``motorway``, ``trunk``, ``primary``,
  ``secondary``, ``tertiary`` (and their ``_link``s), ``unclassified``, ``residential``,
  ``living_street``, ``service``, ``road``. Every other value (footway, cycleway, path,
  pedestrian, steps, platform, construction, proposed, unknown values) is skipped and
  counted by kind in ``RoadNetwork.skipped``. A feature without ``highway`` is a ``road``.
- ``access=no/private/agricultural/forestry`` and ``motor_vehicle``/``motorcar=no/private``
  close a way to cars (unless ``motor_vehicle``/``motorcar`` says yes/designated/...).
- ``oneway``: ``yes``/``1``/``true`` one way in drawing order, ``-1``/``reverse`` against it,
  ``no``/``false``/``0`` both ways; ``reversible``/``alternating`` ways (direction by time of
  day) are skipped. ``junction=roundabout``/``circular`` and ``highway=motorway(_link)``
  imply ``oneway=yes``.
- ``maxspeed``: ``"50"``, ``"30 mph"``, ``"PL:urban"``/``"PL:rural"``/``"PL:motorway"``;
  when missing, ``DEFAULT_MAXSPEED`` by class (below).
- ``road_type`` (optional, ``urban``/``rural``/``highway``) overrides the type, which is
  otherwise ``highway`` for motorways and else from the limit (<= 60 urban, <= 100 rural).
- Point features with ``highway=traffic_signals`` are the traffic lights; only when the file
  has none are lights inferred at urban crossings. Their ``traffic_signals:cycle`` tags, when
  some carry one, set every light's cycle (the median; else ``LIGHT_CYCLE_S``).
- ``amenity=fuel`` features (Points, or areas by their mean) are fuel stations.
- Point features with ``highway=stop`` / ``highway=give_way`` are stop and give-way signs,
  those with ``highway=crossing`` and ``crossing=uncontrolled/zebra/marked`` (or
  ``crossing_ref=zebra``) are zebra crossings where cars give way to pedestrians; each is
  attached to the road node it stands on (producer/roads.py says how they are driven).

Connectivity respects direction: only the largest strongly connected part is kept.
A file whose coordinates look like ``[lat, lon]`` is rejected with an error saying so.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from producer.roads import LIGHT_CYCLE_S, ROAD_TYPES, Road, RoadNetwork, build_network

log = logging.getLogger(__name__)

DEFAULT_MAXSPEED: dict[str, int] = {
    "motorway": 130, "motorway_link": 80, "trunk": 100, "trunk_link": 60,
    "primary": 50, "primary_link": 50, "secondary": 50, "secondary_link": 50,
    "tertiary": 50, "tertiary_link": 50, "unclassified": 50, "road": 50,
    "residential": 30, "living_street": 20, "service": 20,
}
"""km/h where a way has no ``maxspeed``. Motorway, trunk and the 50 km/h urban default are
the common European legal defaults listed on the OSM wiki page "Default speed limits"
(wiki.openstreetmap.org/wiki/Default_speed_limits); residential streets at 30 km/h follow
the 30 km/h zones that cover most residential streets of European city centres; living
streets at 20 km/h (e.g. Poland's "strefa zamieszkania"; walking pace in DE/NL is lower)
and service roads (parking aisles, driveways) at 20 km/h."""
CAR_CLASSES = frozenset(DEFAULT_MAXSPEED)
MOTORWAY = frozenset({"motorway", "motorway_link"})
ONEWAY_IMPLIED = frozenset({"motorway", "motorway_link"})
ONEWAY_VALUES = {"yes": 1, "1": 1, "true": 1, "-1": -1, "reverse": -1,
                 "no": 0, "0": 0, "false": 0}
CLOSED = frozenset({"no", "private", "agricultural", "forestry"})
OPEN = frozenset({"yes", "designated", "permissive", "destination", "customers", "delivery"})
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


def _tag(props: dict[str, Any], key: str) -> str:
    value = props.get(key)
    return "" if value is None else str(value).strip().lower()


def skip_reason(props: dict[str, Any]) -> str | None:
    """Why a way is not driven by cars (e.g. ``highway=footway``), or None when it is."""
    highway = _tag(props, "highway") or "road"
    if highway not in CAR_CLASSES:
        return f"highway={highway}"
    for key in ("motor_vehicle", "motorcar"):
        if _tag(props, key) in CLOSED:
            return f"{key}={_tag(props, key)}"
    access = _tag(props, "access")
    if access in CLOSED and not {_tag(props, "motor_vehicle"), _tag(props, "motorcar")} & OPEN:
        return f"access={access}"
    oneway = _tag(props, "oneway")
    if oneway in ("reversible", "alternating"):
        return f"oneway={oneway}"
    return None


def oneway(props: dict[str, Any]) -> int:
    """1: one way in drawing order, -1: against it, 0: both ways."""
    given = ONEWAY_VALUES.get(_tag(props, "oneway"))
    if given is not None:
        return given
    if _tag(props, "junction") in ("roundabout", "circular"):
        return 1
    return 1 if _tag(props, "highway") in ONEWAY_IMPLIED else 0


def road_class(props: dict[str, Any]) -> tuple[str, int] | None:
    """(road_type, limit) for a feature's properties, or None when not driveable."""
    if skip_reason(props) is not None:
        return None
    highway = _tag(props, "highway") or "road"
    limit = parse_maxspeed(props.get("maxspeed"))
    if limit is None:
        limit = DEFAULT_MAXSPEED[highway]
    given = props.get("road_type")
    if given in ROAD_TYPES:
        road_type = str(given)
    elif highway in MOTORWAY:
        road_type = "highway"
    else:
        road_type = "urban" if limit <= 60 else "rural" if limit <= 100 else "highway"
    return road_type, limit


def _lines(geometry: Any, where: str) -> list[list[Any]]:
    if not isinstance(geometry, dict):
        raise RoadsFileError(f"{where}: geometry is missing")
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "LineString":
        return [coords] if coords is not None else [[]]
    if kind == "MultiLineString" and isinstance(coords, list):
        return list(coords)
    return []  # points, polygons: not roads


LATLON_HINT = ("coordinates look like [lat, lon]; GeoJSON (RFC 7946) order is [lon, lat]: "
               "swap the two numbers of every position")


def _points(coords: Any, where: str) -> tuple[list[float], list[float]]:
    if not isinstance(coords, list) or len(coords) < 2:
        raise RoadsFileError(f"{where}: a LineString needs at least two [lon, lat] positions")
    lats, lons = [], []
    for pos in coords:
        lon, lat = _position(pos, where)
        lats.append(round(lat, 7))
        lons.append(round(lon, 7))
    return lats, lons


def _position(pos: Any, where: str) -> tuple[float, float]:
    if (not isinstance(pos, list) or len(pos) < 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in pos[:2])):
        raise RoadsFileError(f"{where}: position {pos!r} is not a [lon, lat] pair of numbers")
    lon, lat = float(pos[0]), float(pos[1])
    if -90 <= lon <= 90 and 90 < abs(lat) <= 180:
        raise RoadsFileError(f"{where}: position {pos!r}: latitude {lat} is out of range: "
                             f"{LATLON_HINT}")
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise RoadsFileError(
            f"{where}: position {pos!r} is out of range (GeoJSON order is [lon, lat])")
    return lon, lat


def _check_bbox(doc: dict[str, Any], roads: list[Road], where: str) -> None:
    """A ``bbox`` member ([west, south, east, north]) that fits the data only when every
    position is read as [lat, lon] means the positions are swapped."""
    box = doc.get("bbox")
    if not (isinstance(box, list) and len(box) == 4
            and all(isinstance(v, int | float) for v in box)):
        return
    w, s, e, n = (float(v) for v in box)
    lats = [la for r in roads for la in r.lats]
    lons = [lo for r in roads for lo in r.lons]

    def inside(xs: list[float], ys: list[float]) -> bool:
        return all(w - 1e-6 <= x <= e + 1e-6 for x in xs) and all(
            s - 1e-6 <= y <= n + 1e-6 for y in ys)

    if not inside(lons, lats) and inside(lats, lons):
        raise RoadsFileError(f"{where}: positions lie outside the file's bbox {box} unless "
                             f"read as [lat, lon]: {LATLON_HINT}")


def signal_cycle_s(value: Any) -> float | None:
    """Seconds of a ``traffic_signals:cycle`` tag: ``"90"``, ``"1:15"``, or with the time it
    was observed in front (``"Fr 17:30: 01:15"``: the last ``m:ss``); None when unreadable or
    outside 20-300 s."""
    if not isinstance(value, str | int | float):
        return None
    text = str(value).strip()
    m = re.search(r"(?:(\d{1,2}):)?(\d{1,3}(?:\.\d+)?)\s*(?:s|sec)?$", text)
    if m is None:
        return None
    secs = float(m.group(2)) + (60.0 * int(m.group(1)) if m.group(1) else 0.0)
    return secs if 20.0 <= secs <= 300.0 else None


ZEBRA = frozenset({"uncontrolled", "zebra", "marked"})
MAX_ROADS_FILE_BYTES = 512 * 1024 * 1024
"""Largest roads file read (a big city's driveable roads are tens of MB of GeoJSON; parsing
takes several times the file's size in memory)."""


def is_zebra(props: dict[str, Any]) -> bool:
    """A crossing where drivers must give way to pedestrians (marked, no signals)."""
    return _tag(props, "crossing") in ZEBRA or _tag(props, "crossing_ref") == "zebra"


def _point_list(geometry: Any, where: str) -> list[tuple[float, float]]:
    """(lat, lon) of a Point / MultiPoint, or of a polygon's first ring's mean (fuel)."""
    if not isinstance(geometry, dict):
        return []
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Point":
        lon, lat = _position(coords, where)
        return [(lat, lon)]
    if kind == "MultiPoint" and isinstance(coords, list):
        return [(la, lo) for lo, la in (_position(c, where) for c in coords)]
    if kind == "Polygon" and isinstance(coords, list) and coords and isinstance(coords[0], list):
        ring = [_position(c, where) for c in coords[0]]
        if ring:
            return [(sum(p[1] for p in ring) / len(ring), sum(p[0] for p in ring) / len(ring))]
    return []


def _read_bounded(path: Path, limit: int = MAX_ROADS_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes. A device, FIFO or folder is
    refused before it is opened (``/dev/zero`` would be read until memory ran out, a FIFO
    would block the start)."""
    if not stat.S_ISREG(path.stat().st_mode):
        raise RoadsFileError(f"roads file {path}: not a regular file")
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        raw = f.read(limit + 1)
    if max(size, len(raw)) > limit:
        raise RoadsFileError(f"roads file {path}: {max(size, len(raw)):,} bytes, more than the "
                             f"{limit:,} a roads file may have")
    return raw


def load_roads(path: Path) -> RoadNetwork:
    """Read ``path`` and build a network; RoadsFileError names the file and the problem."""
    try:
        raw = _read_bounded(path)
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
    lights: list[tuple[float, float]] = []
    fuel: list[tuple[float, float]] = []  # amenity=fuel: where cars low on fuel go
    cycles: list[float] = []  # traffic_signals:cycle tags, seconds
    stops: list[tuple[float, float]] = []  # highway=stop
    give_ways: list[tuple[float, float]] = []  # highway=give_way
    crossings: list[tuple[float, float]] = []  # zebra crossings
    skipped: Counter[str] = Counter()
    for i, feature in enumerate(features):
        where = f"roads file {path}: feature {i}"
        if not isinstance(feature, dict):
            raise RoadsFileError(f"{where}: not a GeoJSON Feature object")
        props = feature.get("properties") or {}
        if not isinstance(props, dict):
            raise RoadsFileError(f"{where}: properties must be an object")
        geometry = feature.get("geometry")
        if _tag(props, "amenity") == "fuel":
            fuel.extend(_point_list(geometry, where))
            continue
        if isinstance(geometry, dict) and geometry.get("type") in ("Point", "MultiPoint"):
            highway = _tag(props, "highway")
            if highway == "traffic_signals":
                lights.extend(_point_list(geometry, where))
                cycle = signal_cycle_s(props.get("traffic_signals:cycle"))
                if cycle is not None:
                    cycles.append(cycle)
            elif highway == "stop":
                stops.extend(_point_list(geometry, where))
            elif highway == "give_way":
                give_ways.extend(_point_list(geometry, where))
            elif highway == "crossing" and is_zebra(props):
                crossings.extend(_point_list(geometry, where))
            continue
        lines = _lines(geometry, where)
        if not lines:
            continue  # polygons: not roads
        reason = skip_reason(props)
        if reason is not None:
            skipped[reason] += 1
            continue
        cls = road_class(props)
        assert cls is not None
        road_type, limit = cls
        direction = oneway(props)
        kind = _tag(props, "highway") or "road"
        for line in lines:
            lats, lons = _points(line, where)
            roads.append(Road(lats=lats, lons=lons, road_type=ROAD_TYPES.index(road_type),
                              limit_kmh=limit, oneway=direction, kind=kind))
    if not roads:
        what = ", ".join(f"{k}: {v}" for k, v in skipped.most_common(5))
        raise RoadsFileError(f"roads file {path}: no driveable LineString roads found "
                             f"({len(features)} features{'; skipped ' + what if what else ''})")
    _check_bbox(doc, roads, f"roads file {path}")
    try:
        net = build_network(f"geojson:{path.name}", roads, light_points=lights or None,
                            fuel_points=fuel or None, skipped=dict(sorted(skipped.items())),
                            stop_points=stops or None, give_way_points=give_ways or None,
                            crossing_points=crossings or None,
                            light_cycle_s=(statistics.median(cycles) if cycles
                                           else LIGHT_CYCLE_S))
    except ValueError as exc:
        raise RoadsFileError(f"roads file {path}: {exc}") from exc
    log.info("roads file %s: %d roads kept (%d nodes, %d directed segments, %.1f km), "
             "%d traffic lights %s, %d fuel stations, %d stop / %d give-way approaches, "
             "%d zebra crossing approaches; skipped %s", path, len(roads),
             net.n_nodes, net.n_edges, net.total_km(), int(net.node_light.sum()),
             "from the data" if net.lights_from_data else "inferred", net.fuel_places.size,
             int((net.edge_sign == 2).sum()), int((net.edge_sign == 1).sum()),
             int(net.edge_cross.sum()), dict(skipped.most_common()) or "nothing")
    return net
