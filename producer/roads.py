"""The road network as arrays: nodes, directed segments, traffic lights and routes.

A network is built from polylines (a road = a list of points with a type and a speed limit).
Points shared by roads become intersections. Every road is driveable both ways: each piece
between two consecutive points becomes two directed segments ("edges"). Only the largest
connected part is kept, so every place can be reached from everywhere.

Routing: a few "places" (destinations) are chosen; for each place a shortest-travel-time
tree gives, for every node, the edge to take next (``next_edge[place, node]``). Cars drive
to a place, then pick another one, so they follow real routes and turn at intersections.

Traffic lights stand at urban crossings (four or more ways). Their phase is a pure function
of the simulated time: north-south approaches have green while east-west ones have red.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from producer.geo import bearing_deg, haversine_m

ROAD_TYPES: tuple[str, str, str] = ("urban", "rural", "highway")
URBAN, RURAL, HIGHWAY = 0, 1, 2
DEFAULT_LIMITS: dict[str, int] = {"urban": 50, "rural": 90, "highway": 130}

LIGHT_CYCLE_S = 60.0
"""Full cycle of a traffic light: 27 s green + 3 s amber per direction."""
LIGHT_GREEN_S = 27.0
MAX_PLACES = 16


@dataclass(frozen=True)
class Road:
    """One input polyline."""

    lats: Sequence[float]
    lons: Sequence[float]
    road_type: int
    limit_kmh: int


@dataclass(frozen=True, eq=False)
class RoadNetwork:
    """Nodes and directed edges as numpy arrays (read-only after construction)."""

    name: str
    node_lat: np.ndarray
    node_lon: np.ndarray
    node_light: np.ndarray  # bool: a traffic light stands here
    light_offset: np.ndarray  # seconds, phase offset of each node's light
    edge_from: np.ndarray
    edge_to: np.ndarray
    edge_len: np.ndarray  # metres
    edge_heading: np.ndarray  # degrees, direction of travel
    edge_limit: np.ndarray  # km/h
    edge_type: np.ndarray  # index into ROAD_TYPES
    edge_rev: np.ndarray  # the same piece of road driven the other way
    edge_ns: np.ndarray  # bool: a north-south approach (for light phases)
    edge_light: np.ndarray  # bool: an urban edge ending at a traffic light
    out_ptr: np.ndarray  # CSR: out_edges[out_ptr[n]:out_ptr[n+1]] leave node n
    out_edges: np.ndarray
    places: np.ndarray  # node ids of destinations
    next_edge: np.ndarray  # [place, node] -> edge to take (-1 at the place itself)

    @property
    def n_nodes(self) -> int:
        return int(self.node_lat.size)

    @property
    def n_edges(self) -> int:
        return int(self.edge_from.size)

    def total_km(self) -> float:
        return float(self.edge_len.sum() / 2000.0)

    def red_for(self, edges: np.ndarray, t: float) -> np.ndarray:
        """True where the light at the end of ``edges`` is red (or amber) at time ``t``."""
        node = self.edge_to[edges]
        phase = (t + self.light_offset[node]) % LIGHT_CYCLE_S
        half = LIGHT_CYCLE_S / 2
        ns_green = phase < LIGHT_GREEN_S
        ew_green = (phase >= half) & (phase < half + LIGHT_GREEN_S)
        green = np.where(self.edge_ns[edges], ns_green, ew_green)
        return np.asarray(self.edge_light[edges] & ~green)


def build_network(name: str, roads: Sequence[Road], *,
                  place_points: Sequence[tuple[float, float]] | None = None) -> RoadNetwork:
    """Merge polylines into a network, keep its largest connected part, compute routes."""
    index: dict[tuple[int, int], int] = {}
    lats: list[float] = []
    lons: list[float] = []
    pieces: dict[tuple[int, int], tuple[int, int]] = {}  # (a, b) a<b -> (type, limit)

    def node(lat: float, lon: float) -> int:
        key = (round(lat * 1e7), round(lon * 1e7))
        found = index.get(key)
        if found is None:
            found = index[key] = len(lats)
            lats.append(lat)
            lons.append(lon)
        return found

    for road in roads:
        ids = [node(la, lo) for la, lo in zip(road.lats, road.lons, strict=True)]
        for a, b in zip(ids, ids[1:], strict=False):
            if a != b:
                pieces.setdefault((min(a, b), max(a, b)), (road.road_type, road.limit_kmh))
    if not pieces:
        raise ValueError("no road with at least two distinct points")

    pairs = np.array(list(pieces), dtype=np.int64)
    attrs = np.array(list(pieces.values()), dtype=np.int64)
    keep_nodes = _largest_component(len(lats), pairs)
    keep = keep_nodes[pairs[:, 0]]
    pairs, attrs = pairs[keep], attrs[keep]
    remap = np.full(len(lats), -1, dtype=np.int64)
    remap[keep_nodes] = np.arange(int(keep_nodes.sum()))
    node_lat = np.asarray(lats, dtype=np.float64)[keep_nodes]
    node_lon = np.asarray(lons, dtype=np.float64)[keep_nodes]
    a, b = remap[pairs[:, 0]], remap[pairs[:, 1]]
    m = a.size
    edge_from = np.concatenate([a, b]).astype(np.int32)
    edge_to = np.concatenate([b, a]).astype(np.int32)
    edge_rev = np.concatenate([np.arange(m) + m, np.arange(m)]).astype(np.int32)
    edge_type = np.concatenate([attrs[:, 0], attrs[:, 0]]).astype(np.int8)
    edge_limit = np.concatenate([attrs[:, 1], attrs[:, 1]]).astype(np.float64)
    flat, flon, tlat, tlon = (node_lat[edge_from], node_lon[edge_from],
                              node_lat[edge_to], node_lon[edge_to])
    edge_len = np.maximum(haversine_m(flat, flon, tlat, tlon), 0.5)
    edge_heading = bearing_deg(flat, flon, tlat, tlon)
    h = np.radians(edge_heading)
    edge_ns = np.abs(np.cos(h)) >= np.abs(np.sin(h))

    n = node_lat.size
    order = np.argsort(edge_from, kind="stable").astype(np.int32)
    out_ptr = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(edge_from, minlength=n), out=out_ptr[1:])
    degree = np.diff(out_ptr)
    urban_in = np.bincount(edge_to, weights=(edge_type == URBAN), minlength=n)
    node_light = (degree >= 4) & (urban_in >= 2)
    light_offset = (np.arange(n, dtype=np.float64) * 7.919) % LIGHT_CYCLE_S
    edge_light = node_light[edge_to] & (edge_type == URBAN)

    if place_points:
        places = _nearest_nodes(node_lat, node_lon, place_points)
    else:
        places = _spread_places(node_lat, node_lon, degree)
    travel_s = edge_len / (edge_limit / 3.6)
    next_edge = np.stack([_routes_to(p, n, out_ptr, order, edge_to, edge_rev, travel_s)
                          for p in places]).astype(np.int32)
    return RoadNetwork(
        name=name, node_lat=node_lat, node_lon=node_lon, node_light=node_light,
        light_offset=light_offset, edge_from=edge_from, edge_to=edge_to, edge_len=edge_len,
        edge_heading=edge_heading, edge_limit=edge_limit, edge_type=edge_type,
        edge_rev=edge_rev, edge_ns=edge_ns, edge_light=edge_light, out_ptr=out_ptr,
        out_edges=order, places=places.astype(np.int32), next_edge=next_edge)


def _largest_component(n: int, pairs: np.ndarray) -> np.ndarray:
    parent = list(range(n))

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in pairs.tolist():
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n)])
    used = np.zeros(n, dtype=bool)
    used[pairs[:, 0]] = True
    used[pairs[:, 1]] = True
    counts = np.bincount(roots[used], minlength=n)
    return np.asarray((roots == int(np.argmax(counts))) & used)


def _nearest_nodes(lat: np.ndarray, lon: np.ndarray,
                   points: Sequence[tuple[float, float]]) -> np.ndarray:
    ids = [int(np.argmin(haversine_m(lat, lon, pl, po))) for pl, po in points]
    return np.array(list(dict.fromkeys(ids)), dtype=np.int64)


def _spread_places(lat: np.ndarray, lon: np.ndarray, degree: np.ndarray) -> np.ndarray:
    """Up to MAX_PLACES intersections spread over the map (farthest-point sampling)."""
    candidates = np.flatnonzero(degree >= 3)
    if candidates.size < 2:
        candidates = np.arange(lat.size)
    clat, clon = lat[candidates], lon[candidates]
    first = int(np.argmin(haversine_m(clat, clon, clat.mean(), clon.mean())))
    chosen = [first]
    dist = haversine_m(clat, clon, clat[first], clon[first])
    while len(chosen) < min(MAX_PLACES, candidates.size):
        nxt = int(np.argmax(dist))
        if dist[nxt] <= 0:
            break
        chosen.append(nxt)
        dist = np.minimum(dist, haversine_m(clat, clon, clat[nxt], clon[nxt]))
    return np.asarray(candidates[chosen], dtype=np.int64)


def _routes_to(place: int, n: int, out_ptr: np.ndarray, out_edges: np.ndarray,
               edge_to: np.ndarray, edge_rev: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """For every node, the edge that starts its fastest route to ``place`` (Dijkstra)."""
    dist = [float("inf")] * n
    nxt = [-1] * n
    dist[place] = 0.0
    heap = [(0.0, int(place))]
    ptr, outs, to, rev, c = (out_ptr.tolist(), out_edges.tolist(), edge_to.tolist(),
                             edge_rev.tolist(), cost.tolist())
    while heap:
        d, u = heapq.heappop(heap)
        if d > dist[u]:
            continue
        for e in outs[ptr[u]:ptr[u + 1]]:
            v = to[e]  # roads are two-way: v reaches u by the reverse of e
            nd = d + c[e]
            if nd < dist[v]:
                dist[v] = nd
                nxt[v] = rev[e]
                heapq.heappush(heap, (nd, v))
    return np.asarray(nxt, dtype=np.int32)
