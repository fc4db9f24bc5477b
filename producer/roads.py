"""The road network as arrays: nodes, directed segments, traffic lights, routes and lookahead.

A network is built from polylines (a road = a list of points with a type, a speed limit and a
direction). Points shared by roads become intersections. Each piece between two consecutive
points becomes one directed segment ("edge") per allowed direction: two for a two-way road,
one for a one-way road. Only the largest *strongly* connected part is kept, so every place
can be reached from everywhere without driving against a one-way.

Routing: a few "places" (waypoints) are chosen; for each place a shortest-travel-time tree
gives, for every node, the edge to take next (``next_edge[place, node]``).

Lookahead: because a car's route ahead is a function of its edge and its place, what it must
plan for is precomputed per (place, edge):

- ``budget[place, edge]``: the squared speed (m^2/s^2) from which, braking at ``B_PLAN``, the
  car meets every static constraint ahead from the *start* of the edge: each turn's curve
  speed, each lower limit ahead, the sharpest way on at the place. At position ``pos`` the allowed
  speed is ``sqrt(budget - 2 * B_PLAN * pos)``. It is the minimum over all points j ahead of
  ``v_j^2 + 2 b d_j``, so it covers the whole route, not one segment.
- ``light_edge``/``light_dist`` ``[k, place, node]``: the first two traffic lights on the
  route from a node (the edge that ends at each, and the distance to its stop line).

Curve speed: a turn of angle theta between two segments is driven on the circular arc tangent
to both, with tangent length l = half the shorter segment (at junctions, at most 12 m: the
corner of a street crossing), so r = l / tan(theta / 2) and v = sqrt(A_LAT * r). On OSM data
split every ~8 m this is the local curvature of a bending road. A_LAT = 2.5 m/s^2 (about
0.25 g) is inside the side-friction factors AASHTO uses for low-speed urban curves (A Policy
on Geometric Design of Highways and Streets, 2018); no turn is slower than V_TURN_MIN.

Traffic lights stand where the data says (``light_nodes``) or, when it says nothing, at urban
crossings (four or more ways). Their phase is a pure function of the simulated time: on each
light, north-south approaches have green then amber while east-west ones have red, and the
other way round; lights of one junction (within about 50 m) share one offset. The cycle is
``LIGHT_CYCLE_S`` unless the road file tags its own (``light_cycle_s``).

Junctions without lights follow SUMO's junction model (https://sumo.dlr.de/docs/Simulation/
Intersections.html; node types https://sumo.dlr.de/docs/Networks/PlainXML.html#node_types):

- priority: where the ways meeting at a junction differ in class, links from the lower class
  are minor and yield to cars on the higher one (SUMO's ``priority`` node type, with the
  per-class priorities of its OSM type map ``data/typemap/osmNetconvert.typ.xml``:
  ``PRIORITY`` below); ``highway=give_way`` and ``highway=stop`` signs make their approach
  minor to every other one; equal classes: the first car to arrive goes (fleet.py).
  A minor approach is driven so that the car can still stop at the junction from within the
  visibility distance (``VISIBILITY_M``, SUMO's default connection ``visibility``, 4.5 m):
  at most ``sqrt(2 B_PLAN VISIBILITY_M)`` at the node (``edge_cap2``);
- stop signs (``highway=stop``, SUMO's ``priority_stop``/``allway_stop``): a full stop at the
  line, then gap acceptance as at a give-way sign;
- zebra crossings (``highway=crossing`` with ``crossing=uncontrolled/zebra/marked``, or
  ``crossing_ref=zebra``; not at a light): cars give way to a pedestrian on the crossing.
  Pedestrians arrive as a Poisson process of rate ``PED_RATE_PER_H`` per crossing and take
  ``PED_CROSS_S`` to cross; time is cut in slots of that length and a slot is busy with
  probability ``1 - exp(-rate * PED_CROSS_S)`` (at least one arrival), drawn from a hash of
  the node and the slot: a pure function of the simulated time, like the lights.

A sign's node is where the data puts it: on the junction (it then applies to the approaches of
the lowest class there) or on the minor way a few metres before it (it then applies to the
last segment into the nearest junction within ``SIGN_REACH_M`` along that way).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from producer.geo import bearing_deg, haversine_m

ROAD_TYPES: tuple[str, str, str] = ("urban", "rural", "highway")
URBAN, RURAL, HIGHWAY = 0, 1, 2
DEFAULT_LIMITS: dict[str, int] = {"urban": 50, "rural": 90, "highway": 130}

LIGHT_CYCLE_S = 90.0
"""Default full cycle of a traffic light: per direction 41 s green, 4 s amber, then 45 s red
(city signals run 60-120 s cycles; 4 s amber suits 50 km/h approaches). A road file whose
signal nodes carry ``traffic_signals:cycle`` tags sets its own (their median): Helsinki's
say 1:15, i.e. 75 s."""
LIGHT_AMBER_S = 4.0
GREEN, AMBER, RED = 0, 1, 2
MAX_PLACES = 16

B_PLAN = 2.0
"""m/s^2: deceleration planned for curves, lower limits and red lights seen from afar
(IDM's comfortable deceleration b for city traffic, Treiber & Kesting 2013, table 11.2)."""
A_LAT = 2.5
"""m/s^2: lateral acceleration a driver accepts in a turn (see the module docstring)."""
V_TURN_MIN = 3.0
"""m/s: the slowest turn (a U-turn), about 11 km/h."""
JUNCTION_TANGENT_M = 12.0

PRIORITY: dict[str, int] = {
    "motorway": 14, "trunk": 13, "primary": 12, "secondary": 11, "tertiary": 10,
    "motorway_link": 9, "trunk_link": 8, "primary_link": 7, "secondary_link": 6,
    "tertiary_link": 5, "unclassified": 4, "road": 4, "residential": 3, "living_street": 2,
    "service": 1,
}
"""Road priority by OSM ``highway`` class: SUMO's ``osmNetconvert.typ.xml`` (``road``, which
it does not list, as ``unclassified``); ways without a class (the built-in city) are all 0."""
NO_SIGN, GIVE_WAY, STOP = 0, 1, 2
VISIBILITY_M = 4.5
"""m: SUMO's default ``visibility`` of a minor connection: from this close a driver sees the
cars coming on the major road."""
SIGN_REACH_M = 30.0
PED_RATE_PER_H = 20.0
"""Pedestrians per hour at an uncontrolled marked crossing: the lowest peak-hour volume at
which FHWA's crosswalk guidelines (Zegeer et al., "Safety Effects of Marked Versus Unmarked
Crosswalks at Uncontrolled Locations", FHWA-HRT-04-100, 2005) consider marking one: a low,
not a busy, figure."""
PED_SPEED_MS = 1.07
"""m/s: the walking speed traffic engineers design crossings for (MUTCD 2009 4E.06:
3.5 ft/s)."""
CROSSING_M = 7.0  # a two-lane street
SETBACK_M = 3.5
"""A car stopping at a junction (red light, giving way) stops this far before the junction's
node, clear of the cars crossing it; farther where another way leaves the node at a narrow
angle (``edge_setback``)."""
LANE_M = 3.0
"""m: an urban lane's width. A car waiting before a junction keeps its front a lane's width
from the centreline of every other way at the node: where two ways meet at an angle theta
< 90 deg, it waits LANE_M / sin(theta) before the node (at most MAX_SETBACK_M)."""
MAX_SETBACK_M = 10.0
PED_CROSS_S = CROSSING_M / PED_SPEED_MS


@dataclass(frozen=True)
class Road:
    """One input polyline. ``oneway``: 0 both ways, 1 in point order, -1 against it."""

    lats: Sequence[float]
    lons: Sequence[float]
    road_type: int
    limit_kmh: int
    oneway: int = 0
    kind: str = ""  # e.g. the OSM highway class, for the distance-by-class report


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
    edge_rev: np.ndarray  # the same piece of road driven the other way (-1: one-way)
    edge_ns: np.ndarray  # bool: a north-south approach (for light phases)
    edge_light: np.ndarray  # bool: the edge ends at a traffic light (a stop line)
    edge_kind: np.ndarray  # int16: index into ``kinds``
    out_ptr: np.ndarray  # CSR: out_edges[out_ptr[n]:out_ptr[n+1]] leave node n
    out_edges: np.ndarray
    places: np.ndarray  # node ids of destinations
    next_edge: np.ndarray  # [place, node] -> edge to take (-1 at the place itself)
    budget: np.ndarray  # [place, edge] -> m^2/s^2, see the module docstring
    light_edge: np.ndarray  # [2, place, node] -> edge ending at the 1st/2nd light ahead, -1
    light_dist: np.ndarray  # [2, place, node] -> metres from the node to that stop line
    place_dist: np.ndarray  # [place, node] -> metres from the node to the place on its route
    # indices into ``places`` of the fuel stations (``amenity=fuel``); none: unknown
    fuel_places: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    light_cycle: float = LIGHT_CYCLE_S  # seconds, every light's full cycle
    kinds: tuple[str, ...] = ("",)
    skipped: dict[str, int] = field(default_factory=dict)  # input ways left out, by reason
    lights_from_data: bool = False
    edge_prio: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    edge_sign: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    edge_cross: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    edge_stop: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """bool: the edge ends at a stop point of the route tables (a light, a stop sign or a
    zebra crossing); ``light_edge``/``light_dist`` hold the first two of them ahead"""
    edge_rank: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    """priority of the approach at its junction: its class's, -1 with a sign"""
    edge_setback: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """metres before the edge's end where a car stops (SETBACK_M, more at narrow angles)"""
    node_junction: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """bool: three or more ways meet at the node"""
    junc_node: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int32))
    """[place, node] -> the first junction (three or more ways) on the route, -1: none"""
    junc_edge: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int32))
    """[place, node] -> the route's edge into that junction (its approach)"""
    junc_dist: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    """[place, node] -> metres from the node to that junction"""

    @property
    def n_nodes(self) -> int:
        return int(self.node_lat.size)

    @property
    def n_edges(self) -> int:
        return int(self.edge_from.size)

    def total_km(self) -> float:
        """Length of road (a two-way piece counts once)."""
        one = np.where(self.edge_rev >= 0, 0.5, 1.0)
        return float((self.edge_len * one).sum() / 1000.0)

    def light_state(self, edges: np.ndarray, t: float) -> np.ndarray:
        """GREEN, AMBER or RED for the light at the end of ``edges`` (GREEN: no light)."""
        node = self.edge_to[edges]
        cycle = self.light_cycle
        green = cycle / 2 - LIGHT_AMBER_S
        phase = (t + self.light_offset[node]) % cycle
        phase = np.where(self.edge_ns[edges], phase, (phase + cycle / 2) % cycle)
        state = np.where(phase < green, GREEN, np.where(phase < green + LIGHT_AMBER_S, AMBER, RED))
        return np.where(self.edge_light[edges], state, GREEN).astype(np.int8)

    def crossing_busy(self, edges: np.ndarray, t: float) -> np.ndarray:
        """True where a pedestrian is on the zebra crossing at the end of ``edges``."""
        node = self.edge_to[edges].astype(np.uint64)
        slot = np.full(node.shape, int(t // PED_CROSS_S), dtype=np.uint64)
        x = node * np.uint64(0x9E3779B97F4A7C15) + slot * np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(31)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(29)
        u = (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
        busy = u < 1.0 - math.exp(-PED_RATE_PER_H / 3600.0 * PED_CROSS_S)
        return np.asarray(self.edge_cross[edges] & busy)

    def red_for(self, edges: np.ndarray, t: float) -> np.ndarray:
        """True where the light at the end of ``edges`` is red (or amber) at time ``t``."""
        return np.asarray(self.light_state(edges, t) != GREEN)


def turn_speed(net_len_in: np.ndarray, net_len_out: np.ndarray, heading_in: np.ndarray,
               heading_out: np.ndarray, junction: np.ndarray) -> np.ndarray:
    """m/s allowed through a turn (see the module docstring)."""
    theta = np.radians(np.abs((heading_out - heading_in + 180.0) % 360.0 - 180.0))
    tangent = np.minimum(net_len_in, net_len_out) / 2.0
    tangent = np.where(junction & (theta > math.radians(30)),
                       np.minimum(tangent, JUNCTION_TANGENT_M), tangent)
    with np.errstate(divide="ignore"):
        radius = tangent / np.tan(np.minimum(theta, math.pi - 1e-6) / 2.0)
    return np.asarray(np.maximum(np.sqrt(A_LAT * radius), V_TURN_MIN))


def build_network(name: str, roads: Sequence[Road], *,
                  place_points: Sequence[tuple[float, float]] | None = None,
                  light_points: Sequence[tuple[float, float]] | None = None,
                  fuel_points: Sequence[tuple[float, float]] | None = None,
                  light_cycle_s: float = LIGHT_CYCLE_S,
                  skipped: dict[str, int] | None = None,
                  stop_points: Sequence[tuple[float, float]] | None = None,
                  give_way_points: Sequence[tuple[float, float]] | None = None,
                  crossing_points: Sequence[tuple[float, float]] | None = None) -> RoadNetwork:
    """Merge polylines into a directed network, keep its largest strongly connected part,
    place the lights (``light_points`` when given, else inferred), compute routes.
    ``fuel_points`` (fuel stations) become places too, at their nearest node; their indices
    into ``places`` are ``fuel_places``."""
    index: dict[tuple[int, int], int] = {}
    lats: list[float] = []
    lons: list[float] = []
    kinds: dict[str, int] = {}
    pieces: dict[tuple[int, int], tuple[int, int, int]] = {}  # (a, b) -> (type, limit, kind)

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
        attrs = (road.road_type, road.limit_kmh, kinds.setdefault(road.kind, len(kinds)))
        for a, b in zip(ids, ids[1:], strict=False):
            if a == b:
                continue
            if road.oneway >= 0:
                pieces.setdefault((a, b), attrs)
            if road.oneway <= 0:
                pieces.setdefault((b, a), attrs)
    if not pieces:
        raise ValueError("no road with at least two distinct points")

    pairs = np.array(list(pieces), dtype=np.int64)
    attrs_a = np.array(list(pieces.values()), dtype=np.int64)
    keep_nodes = _largest_strong_component(len(lats), pairs)
    keep = keep_nodes[pairs[:, 0]] & keep_nodes[pairs[:, 1]]
    pairs, attrs_a = pairs[keep], attrs_a[keep]
    remap = np.full(len(lats), -1, dtype=np.int64)
    remap[keep_nodes] = np.arange(int(keep_nodes.sum()))
    node_lat = np.asarray(lats, dtype=np.float64)[keep_nodes]
    node_lon = np.asarray(lons, dtype=np.float64)[keep_nodes]
    edge_from = remap[pairs[:, 0]].astype(np.int32)
    edge_to = remap[pairs[:, 1]].astype(np.int32)
    n, m = node_lat.size, edge_from.size
    if m == 0:
        raise ValueError("no two places are connected by roads")
    pair_index = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(edge_from, edge_to,
                                                                     strict=True))}
    edge_rev = np.array([pair_index.get((int(b), int(a)), -1)
                         for a, b in zip(edge_from, edge_to, strict=True)], dtype=np.int32)
    edge_type = attrs_a[:, 0].astype(np.int8)
    edge_limit = attrs_a[:, 1].astype(np.float64)
    edge_kind = attrs_a[:, 2].astype(np.int16)
    flat, flon, tlat, tlon = (node_lat[edge_from], node_lon[edge_from],
                              node_lat[edge_to], node_lon[edge_to])
    edge_len = np.maximum(haversine_m(flat, flon, tlat, tlon), 0.5)
    edge_heading = bearing_deg(flat, flon, tlat, tlon)
    h = np.radians(edge_heading)
    edge_ns = np.abs(np.cos(h)) >= np.abs(np.sin(h))

    order = np.argsort(edge_from, kind="stable").astype(np.int32)
    out_ptr = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(edge_from, minlength=n), out=out_ptr[1:])
    in_order = np.argsort(edge_to, kind="stable").astype(np.int32)
    in_ptr = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(edge_to, minlength=n), out=in_ptr[1:])
    # neighbours (either direction) make a node a junction
    ends = np.concatenate([np.stack([edge_from, edge_to], 1), np.stack([edge_to, edge_from], 1)])
    ends = np.unique(ends, axis=0)
    ways = np.bincount(ends[:, 0], minlength=n)
    from_data = bool(light_points)
    if light_points:
        node_light = np.zeros(n, dtype=bool)
        node_light[_snap(node_lat, node_lon, light_points, 10.0)] = True
        edge_light = node_light[edge_to].copy()
    else:
        urban_in = np.bincount(edge_to, weights=(edge_type == URBAN), minlength=n)
        node_light = (ways >= 4) & (urban_in >= 2)
        edge_light = node_light[edge_to] & (edge_type == URBAN)
    # lights of one junction (same ~50 m cell) share one offset
    cell = (np.floor(node_lat * 2000).astype(np.int64) * 1_000_003
            + np.floor(node_lon * 1200).astype(np.int64))
    light_offset = ((cell % 7919) * 7.919) % light_cycle_s

    if place_points:
        places = _nearest_nodes(node_lat, node_lon, place_points)
    else:
        places = _spread_places(node_lat, node_lon, ways)
    fuel_places = np.zeros(0, dtype=np.int32)
    if fuel_points:
        stations = np.unique(_nearest_nodes(node_lat, node_lon, fuel_points))
        known = {int(p): i for i, p in enumerate(places.tolist())}
        extra = [int(p) for p in stations.tolist() if int(p) not in known]
        places = np.concatenate([places, np.asarray(extra, dtype=places.dtype)])
        known.update({p: len(places) - len(extra) + i for i, p in enumerate(extra)})
        fuel_places = np.asarray([known[int(p)] for p in stations.tolist()], dtype=np.int32)
    travel_s = edge_len / (edge_limit / 3.6)
    junction = ways >= 3
    prio_of_kind = np.asarray([PRIORITY.get(k, 0) for k in kinds], dtype=np.int16)
    edge_prio = prio_of_kind[edge_kind]
    edge_sign = np.zeros(m, dtype=np.int8)
    for sign, pts in ((GIVE_WAY, give_way_points), (STOP, stop_points)):
        if pts:
            for e in _sign_edges(_snap(node_lat, node_lon, pts, 3.0), edge_prio, edge_to,
                                 edge_from, edge_len, in_ptr, in_order, out_ptr, order,
                                 junction):
                edge_sign[e] = max(edge_sign[e], sign)
    max_in = np.zeros(n, dtype=np.int16)
    np.maximum.at(max_in, edge_to, edge_prio)
    edge_rank = np.where(edge_sign > 0, -1, edge_prio).astype(np.int16)
    minor = (junction[edge_to] & ~edge_light
             & ((edge_sign > 0) | (edge_prio < max_in[edge_to])))
    edge_cap2 = np.where(minor, 2 * B_PLAN * VISIBILITY_M, np.inf)
    node_cross = np.zeros(n, dtype=bool)
    if crossing_points:
        node_cross[_snap(node_lat, node_lon, crossing_points, 3.0)] = True
    edge_cross = node_cross[edge_to] & ~node_light[edge_to]
    edge_stop = edge_light | edge_cross | (edge_sign == STOP)
    edge_setback = _setbacks(edge_heading, edge_rev, edge_to, in_ptr, in_order, out_ptr, order,
                             junction)
    cont2 = _continuations(places, out_ptr, order, in_ptr, in_order, edge_rev, edge_len,
                           edge_limit / 3.6, edge_heading, junction, edge_to)
    tables = [_routes_to(int(p), n, in_ptr, in_order, edge_from, edge_to, edge_len,
                         edge_limit / 3.6, edge_heading, edge_stop, junction, travel_s, cont2,
                         edge_cap2)
              for p in places]
    next_edge = np.stack([t[0] for t in tables]).astype(np.int32)
    node_budget = np.stack([t[1] for t in tables])
    light_edge = np.stack([np.stack([t[2], t[4]]) for t in tables], axis=1).astype(np.int32)
    light_dist = np.stack([np.stack([t[3], t[5]]) for t in tables], axis=1)
    place_dist = np.stack([t[6] for t in tables])
    junc_node = np.stack([t[7] for t in tables]).astype(np.int32)
    junc_edge = np.stack([t[8] for t in tables]).astype(np.int32)
    junc_dist = np.stack([t[9] for t in tables])
    # budget per (place, edge): this edge's length, then the turn into the next edge
    nx = next_edge[:, edge_to]  # [place, edge]
    at_place = nx < 0
    nx_safe = np.where(at_place, 0, nx)
    tc = turn_speed(edge_len[None, :], edge_len[nx_safe], edge_heading[None, :],
                    edge_heading[nx_safe], junction[edge_to][None, :])
    end2 = np.minimum(tc * tc, node_budget[:, edge_to])
    end2 = np.where(at_place, cont2[None, :], end2)
    end2 = np.minimum(end2, edge_cap2[None, :])
    budget = 2 * B_PLAN * edge_len[None, :] + end2
    return RoadNetwork(
        name=name, node_lat=node_lat, node_lon=node_lon, node_light=node_light,
        light_offset=light_offset, edge_from=edge_from, edge_to=edge_to, edge_len=edge_len,
        edge_heading=edge_heading, edge_limit=edge_limit, edge_type=edge_type,
        edge_rev=edge_rev, edge_ns=edge_ns, edge_light=edge_light, edge_kind=edge_kind,
        out_ptr=out_ptr, out_edges=order, places=places.astype(np.int32),
        next_edge=next_edge, budget=budget, light_edge=light_edge, light_dist=light_dist,
        place_dist=place_dist,
        fuel_places=fuel_places, light_cycle=float(light_cycle_s), kinds=tuple(kinds),
        skipped=dict(skipped or {}), lights_from_data=from_data, edge_prio=edge_prio,
        edge_sign=edge_sign, edge_cross=edge_cross, edge_stop=edge_stop, edge_rank=edge_rank,
        edge_setback=edge_setback, node_junction=junction, junc_node=junc_node, junc_edge=junc_edge,
        junc_dist=junc_dist)


def _largest_strong_component(n: int, pairs: np.ndarray) -> np.ndarray:
    """Nodes of the largest strongly connected component (iterative Kosaraju)."""
    src, dst = pairs[:, 0], pairs[:, 1]
    fwd_order = np.argsort(src, kind="stable")
    fwd_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=fwd_ptr[1:])
    bwd_order = np.argsort(dst, kind="stable")
    bwd_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=n), out=bwd_ptr[1:])
    fp, fa = fwd_ptr.tolist(), dst[fwd_order].tolist()
    bp, ba = bwd_ptr.tolist(), src[bwd_order].tolist()
    seen = [False] * n
    finish: list[int] = []
    for root in range(n):
        if seen[root]:
            continue
        seen[root] = True
        stack = [(root, fp[root])]
        while stack:
            u, i = stack[-1]
            if i < fp[u + 1]:
                stack[-1] = (u, i + 1)
                v = fa[i]
                if not seen[v]:
                    seen[v] = True
                    stack.append((v, fp[v]))
            else:
                stack.pop()
                finish.append(u)
    comp = [-1] * n
    sizes: list[int] = []
    for root in reversed(finish):
        if comp[root] >= 0:
            continue
        c = len(sizes)
        comp[root] = c
        todo, size = [root], 0
        while todo:
            u = todo.pop()
            size += 1
            for v in ba[bp[u]:bp[u + 1]]:
                if comp[v] < 0:
                    comp[v] = c
                    todo.append(v)
        sizes.append(size)
    used = np.zeros(n, dtype=bool)
    used[src] = True
    used[dst] = True
    comp_a = np.asarray(comp)
    counts = np.bincount(comp_a[used], minlength=len(sizes))
    return np.asarray((comp_a == int(np.argmax(counts))) & used)


def _snap(lat: np.ndarray, lon: np.ndarray, points: Sequence[tuple[float, float]],
          max_m: float) -> np.ndarray:
    """Nodes within ``max_m`` of each point (the nearest one), as a list of node ids."""
    k = 111_320.0
    c = math.cos(math.radians(float(np.mean(lat))))
    x, y = lon * k * c, lat * k
    order = np.argsort(x)
    xs = x[order]
    found = []
    for pl, po in points:
        px, py = po * k * c, pl * k
        lo, hi = np.searchsorted(xs, [px - max_m, px + max_m])
        if hi <= lo:
            continue
        cand = order[lo:hi]
        d = np.hypot(x[cand] - px, y[cand] - py)
        j = int(np.argmin(d))
        if d[j] <= max_m:
            found.append(int(cand[j]))
    return np.asarray(found, dtype=np.int64)


def _setbacks(heading: np.ndarray, rev: np.ndarray, edge_to: np.ndarray, in_ptr: np.ndarray,
              in_edges: np.ndarray, out_ptr: np.ndarray, out_edges: np.ndarray,
              junction: np.ndarray) -> np.ndarray:
    """Per edge: where before its end node a car waits (LANE_M's rule, see its docstring)."""
    out = np.full(heading.size, SETBACK_M)
    for j in np.flatnonzero(junction).tolist():
        ins = in_edges[in_ptr[j]:in_ptr[j + 1]]
        outs = out_edges[out_ptr[j]:out_ptr[j + 1]]
        # rays from the node: back along each incoming edge, along each outgoing one
        ray_e = np.concatenate([ins, outs])
        ray = np.concatenate([(heading[ins] + 180.0) % 360.0, heading[outs]])
        for k, e in enumerate(ins.tolist()):
            other = (ray_e != e) & (ray_e != rev[e])
            if not other.any():
                continue
            diff = np.abs((ray[other] - ray[k] + 180.0) % 360.0 - 180.0)
            theta = math.radians(float(diff.min()))
            if 0.0 < theta < math.pi / 2:
                out[e] = min(max(SETBACK_M, LANE_M / math.sin(theta)), MAX_SETBACK_M)
            elif theta == 0.0:
                out[e] = MAX_SETBACK_M
    return out


def _sign_edges(nodes: np.ndarray, prio: np.ndarray, edge_to: np.ndarray,
                edge_from: np.ndarray, length: np.ndarray, in_ptr: np.ndarray,
                in_edges: np.ndarray, out_ptr: np.ndarray, out_edges: np.ndarray,
                junction: np.ndarray) -> list[int]:
    """The approach edges a sign standing at each of ``nodes`` applies to (module docstring):
    on a junction, its incoming edges of the lowest class; on a way, the last edge into the
    nearest junction within SIGN_REACH_M ahead."""
    found: list[int] = []
    for s in nodes.tolist():
        ins = in_edges[in_ptr[s]:in_ptr[s + 1]]
        if ins.size == 0:
            continue
        if junction[s]:
            low = prio[ins].min()
            found.extend(int(e) for e in ins[prio[ins] == low])
            continue
        best: tuple[float, int] | None = None
        for e0 in ins.tolist():
            prev, node, dist, last = int(edge_from[e0]), s, 0.0, e0
            while not junction[node] and dist <= SIGN_REACH_M:
                outs = [int(e) for e in out_edges[out_ptr[node]:out_ptr[node + 1]]
                        if int(edge_to[e]) != prev]
                if len(outs) != 1:
                    break
                last = outs[0]
                prev, node = node, int(edge_to[last])
                dist += float(length[last])
            if junction[node] and dist <= SIGN_REACH_M and (best is None or dist < best[0]):
                best = (dist, last)
        if best is not None:
            found.append(best[1])
    return found


def _nearest_nodes(lat: np.ndarray, lon: np.ndarray,
                   points: Sequence[tuple[float, float]]) -> np.ndarray:
    ids = [int(np.argmin(haversine_m(lat, lon, pl, po))) for pl, po in points]
    return np.array(list(dict.fromkeys(ids)), dtype=np.int64)


def _spread_places(lat: np.ndarray, lon: np.ndarray, ways: np.ndarray) -> np.ndarray:
    """Up to MAX_PLACES intersections spread over the map (farthest-point sampling)."""
    candidates = np.flatnonzero(ways >= 3)
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


def _continuations(places: np.ndarray, out_ptr: np.ndarray, out_edges: np.ndarray,
                   in_ptr: np.ndarray, in_edges: np.ndarray, edge_rev: np.ndarray,
                   length: np.ndarray, limit: np.ndarray, heading: np.ndarray,
                   junction: np.ndarray, edge_to: np.ndarray) -> np.ndarray:
    """Per edge ending at a place: the squared speed of the sharpest way on that is not a
    U-turn (when there is another), since the next place is only chosen on arrival and may
    lie down any of them (``inf`` elsewhere)."""
    cont2 = np.full(length.size, np.inf)
    for p in places.tolist():
        outs = out_edges[out_ptr[p]:out_ptr[p + 1]]
        for e in in_edges[in_ptr[p]:in_ptr[p + 1]].tolist():
            ways = outs[outs != edge_rev[e]] if outs.size > 1 else outs
            if ways.size == 0:
                cont2[e] = V_TURN_MIN * V_TURN_MIN
                continue
            tc = turn_speed(np.full(ways.size, length[e]), length[ways],
                            np.full(ways.size, heading[e]), heading[ways],
                            np.full(ways.size, junction[edge_to[e]]))
            cont2[e] = float(np.min(np.minimum(tc, limit[ways]) ** 2))
    return cont2


def _routes_to(place: int, n: int, in_ptr: np.ndarray, in_edges: np.ndarray,
               edge_from: np.ndarray, edge_to: np.ndarray, length: np.ndarray,
               limit: np.ndarray, heading: np.ndarray, light: np.ndarray,
               junction: np.ndarray, cost: np.ndarray,
               cont2: np.ndarray, cap2: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per node: the edge that starts its fastest route to ``place`` (Dijkstra over the
    incoming edges), the speed budget at the node and the first two lights ahead."""
    inf = float("inf")
    dist = [inf] * n
    nxt = [-1] * n
    dist[place] = 0.0
    heap = [(0.0, place)]
    ptr, ins, frm, c = in_ptr.tolist(), in_edges.tolist(), edge_from.tolist(), cost.tolist()
    settled: list[int] = []
    done = [False] * n
    while heap:
        d, u = heapq.heappop(heap)
        if done[u]:
            continue
        done[u] = True
        settled.append(u)
        for e in ins[ptr[u]:ptr[u + 1]]:
            v = frm[e]
            nd = d + c[e]
            if nd < dist[v]:
                dist[v] = nd
                nxt[v] = e
                heapq.heappush(heap, (nd, v))
    # in settling order every node's next node comes first: one pass fills the tables
    ln, lim, to, lt = length.tolist(), limit.tolist(), edge_to.tolist(), light.tolist()
    cp = cap2.tolist()
    nxt_a = np.asarray(nxt, dtype=np.int64)
    has = nxt_a >= 0
    nx_to = np.where(has, edge_to[np.maximum(nxt_a, 0)], 0)
    nx2 = np.where(has, nxt_a[nx_to], -1)
    tc = np.full(n, inf)
    ok = has & (nx2 >= 0)
    tc[ok] = turn_speed(length[nxt_a[ok]], length[nx2[ok]], heading[nxt_a[ok]],
                        heading[nx2[ok]], junction[nx_to[ok]])
    tc2_a = tc * tc
    last = has & (nx2 < 0)  # the next node is the place: the best way on from there
    tc2_a[last] = cont2[nxt_a[last]]
    tc2 = tc2_a.tolist()
    b2 = 2 * B_PLAN
    node_budget = [inf] * n
    le1, ld1, le2, ld2 = [-1] * n, [inf] * n, [-1] * n, [inf] * n
    metres = [inf] * n
    metres[place] = 0.0
    jct = junction.tolist()
    jn, je, jd = [-1] * n, [-1] * n, [inf] * n
    for u in settled[1:]:
        e = nxt[u]
        v = to[e]
        if jct[v]:
            jn[u], je[u], jd[u] = v, e, ln[e]
        else:
            jn[u], je[u], jd[u] = jn[v], je[v], ln[e] + jd[v]
        k_e = b2 * ln[e] + min(tc2[u], node_budget[v], cp[e])
        node_budget[u] = min(lim[e] * lim[e], k_e)
        metres[u] = ln[e] + metres[v]
        if lt[e]:
            le1[u], ld1[u] = e, ln[e]
            le2[u], ld2[u] = le1[v], ln[e] + ld1[v]
        else:
            le1[u], ld1[u] = le1[v], ln[e] + ld1[v]
            le2[u], ld2[u] = le2[v], ln[e] + ld2[v]
    return (nxt_a.astype(np.int32), np.asarray(node_budget), np.asarray(le1),
            np.asarray(ld1), np.asarray(le2), np.asarray(ld2), np.asarray(metres),
            np.asarray(jn), np.asarray(je), np.asarray(jd))
