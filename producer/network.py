"""The road network the producer drives, as GeoJSON, published to a compacted topic.

    doc = network_geojson(net)          # a FeatureCollection, deterministic for a network
    key, value = network_record(net)    # network id, gzip of the JSON
    await publish_network(settings, net)

Features: every way as one ``LineString`` (consecutive segments with the same class, road
type, limit and direction merged; properties ``feature="road"``, ``class``, ``road_type``,
``limit_kmh``, ``oneway``), every traffic light as a ``Point`` (``feature="light"``), every
destination the fleet drives to as a ``Point`` (``feature="place"``; ``"depot"`` for the
places that are depots, when the fleet model has them). Coordinates are rounded to 6
decimals (about 0.1 m). The network id is the first 16 hex digits of the SHA-256 of the
canonical JSON without the id, so the same network always has the same id (the record key,
and the web API's ETag). The value is gzip (mtime 0, so it is deterministic too): the
built-in network is 154 kB of JSON (6 kB gzipped), the Helsinki centre extract 99 kB (14 kB).
A network beyond ``common.roadnet``'s limits (8 MiB of JSON) is not published: the web API
would refuse it.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from collections import defaultdict
from typing import Any

import orjson

from common.kafka import KafkaSettings, TopicSpec, ensure_topics, make_producer
from common.roadnet import MAX_NETWORK_INFLATED_BYTES, NetworkError, check_network
from producer import fleet as fleet_model
from producer.roads import ROAD_TYPES, RoadNetwork

log = logging.getLogger(__name__)

MAX_NETWORK_BYTES = 16 * 1024 * 1024
"""Largest (gzipped) network record: the topic's ``max.message.bytes`` and the producer's
``max_request_size``."""
PRECISION = 6


def _ll(lat: float, lon: float) -> list[float]:
    return [round(float(lon), PRECISION), round(float(lat), PRECISION)]


def _chains(pieces: list[tuple[int, int]], directed: bool) -> list[list[int]]:
    """Merge pieces (node pairs) into node chains: a chain runs on through a node that has
    exactly two pieces of the group (one in, one out when ``directed``)."""
    incident: dict[int, list[int]] = defaultdict(list)
    for i, (a, b) in enumerate(pieces):
        incident[a].append(i)
        incident[b].append(i)

    def through(node: int) -> bool:
        ps = incident[node]
        if len(ps) != 2:
            return False
        return not directed or ((pieces[ps[0]][1] == node) != (pieces[ps[1]][1] == node))

    used = [False] * len(pieces)

    def walk(piece: int, node: int) -> list[int]:
        line = [node]
        while True:
            used[piece] = True
            a, b = pieces[piece]
            node = b if a == node else a
            line.append(node)
            if not through(node):
                return line
            ps = incident[node]
            piece = ps[0] if ps[1] == piece else ps[1]
            if used[piece]:
                return line

    out: list[list[int]] = []
    for i, (a, b) in enumerate(pieces):
        if used[i]:
            continue
        if directed:
            if not through(a):
                out.append(walk(i, a))
        else:
            for end in (a, b):
                if not used[i] and not through(end):
                    out.append(walk(i, end) if end == a else walk(i, b))
    for i, (a, _b) in enumerate(pieces):  # what is left are loops
        if not used[i]:
            out.append(walk(i, a))
    return out


def network_geojson(net: RoadNetwork) -> dict[str, Any]:
    """The network as a GeoJSON FeatureCollection with its ``network_id``."""
    groups: dict[tuple[int, int, int, bool], list[tuple[int, int]]] = defaultdict(list)
    for e in range(net.n_edges):
        rev = int(net.edge_rev[e])
        if 0 <= rev < e:
            continue  # the other direction of a two-way piece, already taken
        attrs = (int(net.edge_kind[e]), int(net.edge_type[e]), int(round(net.edge_limit[e])),
                 rev < 0)
        groups[attrs].append((int(net.edge_from[e]), int(net.edge_to[e])))
    features: list[dict[str, Any]] = []
    lat, lon = net.node_lat, net.node_lon
    for (kind, rtype, limit, oneway), pieces in sorted(groups.items()):
        road_type = ROAD_TYPES[rtype]
        props = {"feature": "road", "class": net.kinds[kind] or road_type,
                 "road_type": road_type, "limit_kmh": limit, "oneway": oneway}
        for chain in _chains(pieces, oneway):
            coords = [_ll(lat[n], lon[n]) for n in chain]
            features.append({"type": "Feature", "properties": props,
                             "geometry": {"type": "LineString", "coordinates": coords}})
    for n in map(int, net.node_light.nonzero()[0]):
        features.append({"type": "Feature", "properties": {"feature": "light"},
                         "geometry": {"type": "Point", "coordinates": _ll(lat[n], lon[n])}})
    depots = min(int(getattr(fleet_model, "N_DEPOTS", 0)), int(net.places.size))
    for i, n in enumerate(map(int, net.places)):
        role = "depot" if i < depots else "place"
        features.append({"type": "Feature", "properties": {"feature": role},
                         "geometry": {"type": "Point", "coordinates": _ll(lat[n], lon[n])}})
    doc: dict[str, Any] = {"type": "FeatureCollection", "name": net.name,
                           "road_km": round(net.total_km(), 3), "features": features}
    digest = hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return {"type": "FeatureCollection", "network_id": digest[:16], "name": net.name,
            "road_km": doc["road_km"], "features": features}


def network_record(net: RoadNetwork) -> tuple[bytes, bytes]:
    """(key, value) of the network's record: its id, and its JSON gzipped. NetworkError if
    the web API would refuse it (``common.roadnet``: size, features, positions)."""
    doc = network_geojson(net)
    raw = orjson.dumps(doc)
    if len(raw) > MAX_NETWORK_INFLATED_BYTES:
        raise NetworkError(f"road network {net.name!r} is {len(raw):,} bytes of GeoJSON, more "
                           f"than the {MAX_NETWORK_INFLATED_BYTES:,} the web API reads "
                           "(common.roadnet.MAX_NETWORK_INFLATED_BYTES); not published, the "
                           "maps will have no road layer")
    try:
        check_network(doc)
    except NetworkError as exc:
        raise NetworkError(f"road network {net.name!r} is not one the web API reads: {exc}; "
                           "not published") from None
    value = gzip.compress(raw, compresslevel=6, mtime=0)
    return doc["network_id"].encode(), value


async def publish_network(settings: KafkaSettings, topic: str, net: RoadNetwork) -> str:
    """Ensure the compacted topic and put the network on it (acks=all); returns its id."""
    key, value = network_record(net)
    if len(value) > MAX_NETWORK_BYTES:
        raise ValueError(f"road network {net.name!r} is {len(value)} bytes gzipped, more than "
                         f"{MAX_NETWORK_BYTES}; not published")
    await ensure_topics(settings, [TopicSpec.compacted(
        topic, 1, **{"max.message.bytes": str(MAX_NETWORK_BYTES + 65_536)})])
    producer = make_producer(settings, "fleetstream-network", acks="all",
                             max_request_size=MAX_NETWORK_BYTES + 65_536)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()
    log.info("road network %s (%s, %d bytes gzipped) published to %s", key.decode(), net.name,
             len(value), topic)
    return key.decode()
