"""The road network document (topic ``fleetstream.network``, ``GET /network``): its limits
and its one validator, shared by the writer (``producer/network.py``) and the reader
(``webapi/network.py``) so that the producer never publishes what the web API would refuse.

A network is a GeoJSON FeatureCollection ``{"type", "network_id", "name", "road_km",
"features"}`` whose features are exactly what the maps draw:

- roads: ``LineString`` of 2+ positions, properties ``feature="road"``, ``class`` (an OSM
  ``highway`` value or a road type), ``road_type`` (``ROAD_TYPES``), ``limit_kmh``, ``oneway``;
- ``light``, ``place`` and ``depot``: a ``Point``, properties ``{"feature": kind}`` only.

Positions are ``[lon, lat]``, finite, within the globe. Sizes, measured 2026-11-30 (inflated
JSON / gzipped): built-in Warsaw 154 kB / 6 kB (834 features, 1,570 positions), the largest
real OSM extract the project drives (Helsinki centre, ``make osm-data``) 99 kB / 14 kB (365
features, 2,174 positions). The limits below leave a margin of 50x and more over those: room for
a large city's centre, not for a gzip bomb.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

MAX_NETWORK_INFLATED_BYTES = 8 * 1024 * 1024
"""Largest network JSON (inflated): the producer refuses to publish more, the web API to
read more (it inflates at most this many bytes of a record, so a bomb costs no more)."""
MAX_NETWORK_FEATURES = 50_000
"""Most features (roads and points) in one network."""
MAX_NETWORK_POSITIONS = 400_000
"""Most positions (every road vertex and every point) in one network."""
MAX_NETWORK_NAME_LEN = 300
"""A roads file's name (up to 255 characters) with its ``geojson:`` prefix fits."""
MAX_NETWORK_ID_LEN = 64
MAX_LIMIT_KMH = 400
ROAD_TYPES = ("urban", "rural", "highway")
POINT_KINDS = ("light", "place", "depot")
ROAD_PROPERTIES = frozenset({"feature", "class", "road_type", "limit_kmh", "oneway"})
DOC_KEYS = frozenset({"type", "network_id", "name", "road_km", "features"})
_CLASS = re.compile(r"[a-z0-9_]{1,32}")
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_KEYS3 = frozenset({"type", "properties", "geometry"})
_GEOM_KEYS = frozenset({"type", "coordinates"})


class NetworkError(ValueError):
    """Not a road network the maps can draw; the message names the rule, never the input."""


def valid_network_id(text: str) -> bool:
    return _ID.fullmatch(text) is not None


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _position(p: Any) -> bool:
    return (type(p) is list and len(p) == 2 and _number(p[0]) and _number(p[1])
            and -180.0 <= p[0] <= 180.0 and -90.0 <= p[1] <= 90.0)


def check_network(doc: Any) -> int:
    """Raise NetworkError unless ``doc`` is a road network as above; returns its positions."""
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise NetworkError("not a GeoJSON FeatureCollection")
    if not set(doc) <= DOC_KEYS:
        raise NetworkError(f"unexpected top-level member (allowed: {', '.join(sorted(DOC_KEYS))})")
    net_id, name, road_km = doc.get("network_id"), doc.get("name", ""), doc.get("road_km", 0)
    if net_id is not None and not (isinstance(net_id, str) and valid_network_id(net_id)):
        raise NetworkError("network_id is not 1 to 64 letters, digits, '.', '_' or '-'")
    if not isinstance(name, str) or len(name) > MAX_NETWORK_NAME_LEN or not name.isprintable():
        raise NetworkError(f"name is not printable text of at most {MAX_NETWORK_NAME_LEN} "
                           "characters")
    if not _number(road_km) or road_km < 0:
        raise NetworkError("road_km is not a finite number >= 0")
    features = doc.get("features")
    if type(features) is not list:
        raise NetworkError("features is not a list")
    if len(features) > MAX_NETWORK_FEATURES:
        raise NetworkError(f"more than {MAX_NETWORK_FEATURES:,} features")
    positions = 0
    for f in features:
        if type(f) is not dict or f.keys() != _KEYS3 or f["type"] != "Feature":
            raise NetworkError("a feature is not a GeoJSON Feature {type, properties, geometry}")
        props, geom = f["properties"], f["geometry"]
        if type(props) is not dict or type(geom) is not dict or geom.keys() != _GEOM_KEYS:
            raise NetworkError("a feature's properties or geometry is malformed")
        kind, coords = props.get("feature"), geom["coordinates"]
        if kind == "road":
            if (props.keys() != ROAD_PROPERTIES or props["road_type"] not in ROAD_TYPES
                    or not isinstance(props["class"], str) or not _CLASS.fullmatch(props["class"])
                    or type(props["limit_kmh"]) is not int
                    or not 0 <= props["limit_kmh"] <= MAX_LIMIT_KMH
                    or type(props["oneway"]) is not bool):
                raise NetworkError("a road's properties are not exactly feature, class, "
                                   "road_type, limit_kmh, oneway with valid values")
            if geom["type"] != "LineString" or type(coords) is not list or len(coords) < 2:
                raise NetworkError("a road is not a LineString of 2 or more positions")
            positions += len(coords)
            if positions > MAX_NETWORK_POSITIONS:
                raise NetworkError(f"more than {MAX_NETWORK_POSITIONS:,} positions")
            if not all(map(_position, coords)):
                raise NetworkError("a road has a position that is not a finite [lon, lat] "
                                   "on the globe")
        elif kind in POINT_KINDS:
            if len(props) != 1 or geom["type"] != "Point" or not _position(coords):
                raise NetworkError("a light, place or depot is not a Point at a finite "
                                   "[lon, lat] on the globe with only the 'feature' property")
            positions += 1
            if positions > MAX_NETWORK_POSITIONS:
                raise NetworkError(f"more than {MAX_NETWORK_POSITIONS:,} positions")
        else:
            raise NetworkError(f"a feature's 'feature' property is not one of road, "
                               f"{', '.join(POINT_KINDS)}")
    return positions


def load_network_json(raw: bytes) -> dict[str, Any]:
    """Network JSON -> the checked document. The size and the count of JSON containers are
    checked before parsing, so a document of many tiny objects cannot make the parse cost far
    more than a real network of the same size."""
    if len(raw) > MAX_NETWORK_INFLATED_BYTES:
        raise NetworkError(f"more than {MAX_NETWORK_INFLATED_BYTES:,} bytes of JSON")
    # a feature holds 3 objects, 1 array and at most 12 commas, a position 1 array and 2
    # commas: more than that (counted anywhere, strings too: an over-count only refuses) is
    # not a network, and the parse of what passes costs no more than a real one at the limits
    slack = 8 + MAX_NETWORK_NAME_LEN  # the document's own, and any in its name
    if (raw.count(b"{") > 3 * MAX_NETWORK_FEATURES + slack
            or raw.count(b"[") > MAX_NETWORK_POSITIONS + MAX_NETWORK_FEATURES + slack
            or raw.count(b",") > 2 * MAX_NETWORK_POSITIONS + 12 * MAX_NETWORK_FEATURES + slack):
        raise NetworkError("more JSON values than a network of the allowed size has")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise NetworkError("not valid JSON") from None
    check_network(doc)
    return doc
