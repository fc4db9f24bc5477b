"""Car-following, lights and OSM rules in motion: an exact queue at a red light, and
properties (no overlap, no wrong way, never across on red) over random OSM-like grids."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pytest

from producer import follow
from producer import vehicle as vh
from producer.fleet import SETBACK_M, FleetState, init_fleet, select, step
from producer.geojson import load_roads
from producer.roads import GREEN, LIGHT_CYCLE_S, RED, Road, RoadNetwork, build_network

LAT0, LON0 = 52.0, 21.0
M_LAT = 1 / 111_195.0  # degrees of latitude per metre
M_LON = M_LAT / np.cos(np.radians(LAT0))


def _pt(east: float, north: float) -> tuple[float, float]:
    return LAT0 + north * M_LAT, LON0 + east * M_LON


def _road(points: list[tuple[float, float]], limit: int = 50, oneway: int = 0) -> Road:
    ll = [_pt(e, n) for e, n in points]
    return Road(lats=[p[0] for p in ll], lons=[p[1] for p in ll], road_type=0, limit_kmh=limit,
                oneway=oneway)


def _crossing() -> RoadNetwork:
    """An east-west street 1 km long (in 100 m pieces) crossing a north-south one at 600 m,
    where a traffic light stands."""
    ew = _road([(x, 0.0) for x in range(0, 1001, 100)])
    ns = _road([(600.0, y) for y in range(-300, 301, 100)])
    return build_network("crossing", [ew, ns], place_points=[_pt(0, 0), _pt(1000, 0)],
                         light_points=[_pt(600, 0)])


def _place_cars(net: RoadNetwork, positions: list[float], t: float) -> FleetState:
    """Cars driving east on the east-west street at ``positions`` metres from its start."""
    rng = np.random.default_rng(0)
    s = init_fleet(len(positions), rng, net)
    east = net.places[1]
    edges, pos = [], []
    for x in positions:
        e = int(np.flatnonzero((np.abs(net.node_lat[net.edge_from] - LAT0) < 1e-7)
                               & (np.abs(net.edge_heading - 90.0) < 1.0)
                               & (np.abs((net.node_lon[net.edge_from] - LON0) / M_LON
                                         - (x // 100) * 100) < 0.5))[0])
        edges.append(e)
        pos.append(x - (x // 100) * 100)
    edge = np.array(edges, dtype=np.int32)
    dest = np.ones(len(positions), dtype=np.int32)
    assert (net.places[dest] == east).all()
    n = len(positions)
    return replace(s, t=t, edge=edge, pos=np.array(pos), v=np.full(n, 12.0),
                   next_e=net.next_edge[dest, net.edge_to[edge]], dest=dest,
                   vclass=np.zeros(n, dtype=np.int8), kind=np.ones(n, dtype=np.int8),
                   factor=np.ones(n), accel=np.ones(n), sprint_ttl=np.zeros(n),
                   gear=np.full(n, 3, dtype=np.int8))


def test_three_cars_queue_behind_a_red_light_then_drain_in_order() -> None:
    net = _crossing()
    light_edge = int(np.flatnonzero(net.edge_light & (np.abs(net.edge_heading - 90) < 1))[0])
    # start as the east-west approach turns red
    t0 = next(float(t) for t in range(int(LIGHT_CYCLE_S))
              if net.light_state(np.array([light_edge]), float(t))[0] == RED
              and net.light_state(np.array([light_edge]), float(t) - 1)[0] != RED)
    s = _place_cars(net, [420.0, 380.0, 340.0], t0)
    rng = np.random.default_rng(1)
    line = 600.0
    front: list[np.ndarray] = []
    lights: list[int] = []
    for _ in range(120):
        lights.append(int(net.light_state(np.array([light_edge]), s.t)[0]))
        x = (net.node_lon[net.edge_from[s.edge]] - LON0) / M_LON + s.pos
        front.append(np.round(x, 1))
        s = step(s, 1.0, rng, net)
    xs = np.array(front)  # [tick, car]: metres east of the street's start
    red_ticks = [k for k, c in enumerate(lights) if c == RED]
    green_at = next(k for k in range(red_ticks[0], 120) if lights[k] == GREEN)
    # while red: all three stopped in a queue, the first at the line, s0 + a car length apart
    queued = xs[green_at - 1]
    length = vh.CLASS_LENGTH_M[0]
    assert queued[0] == pytest.approx(line - SETBACK_M, abs=0.05)  # just before the junction
    assert queued[0] - queued[1] == pytest.approx(length + follow.S0, abs=0.3)
    assert queued[1] - queued[2] == pytest.approx(length + follow.S0, abs=0.3)
    assert (xs[:green_at] <= line + 1e-6).all()  # nobody across on red or amber
    # the queue drains in order: each car passes the line after the one in front
    passed = [int(np.argmax(xs[:, c] > line)) for c in range(3)]
    assert green_at <= passed[0] < passed[1] < passed[2] < green_at + 12
    east = xs[: int(np.argmax(xs[:, 0] > 900))]  # until the first nears the street's end
    assert (np.diff(east, axis=1) < 0).all()  # order kept at every tick
    assert (np.diff(east, axis=0) >= -1e-9).all()  # never backwards
    # exact for this scenario (deterministic): red for 45 s, the queue 596.5 / 590 / 583.5 m,
    # IDM start-up of 1.2 m/s^2: the cars pass the junction in order after green (the third
    # a second later than its IDM alone would: it keeps the junction clear until the second
    # has left it room beyond, SUMO's keepClear)
    assert (red_ticks[0], green_at) == (0, 45)
    assert queued.tolist() == [596.5, 590.0, 583.5]
    assert passed == [48, 52, 56]


def _grid_geojson(path: Path, seed: int, size: int = 6, spacing: float = 90.0) -> Path:
    """A random OSM-like street grid: ways split every ~8 m, random one-ways (both
    directions of drawing), maxspeeds, signals at some crossings, a footway and a private
    road that must not be driven."""
    rng = np.random.default_rng(seed)
    feats: list[dict] = []

    def way(points: list[tuple[float, float]], **props: object) -> None:
        coords = [[float(_pt(e, n)[1]), float(_pt(e, n)[0])] for e, n in points]
        feats.append({"type": "Feature", "properties": props,
                      "geometry": {"type": "LineString", "coordinates": coords}})

    jitter = rng.uniform(-15, 15, size=(size, size, 2))
    node = [[(i * spacing + jitter[i, j, 0], j * spacing + jitter[i, j, 1])
             for j in range(size)] for i in range(size)]
    for axis in (0, 1):
        for a in range(size):
            pts = [node[a][b] if axis == 0 else node[b][a] for b in range(size)]
            dense: list[tuple[float, float]] = []
            for p, q in zip(pts, pts[1:], strict=False):
                k = int(np.hypot(q[0] - p[0], q[1] - p[1]) // 8) + 1
                dense += [(p[0] + (q[0] - p[0]) * t / k, p[1] + (q[1] - p[1]) * t / k)
                          for t in range(k)]
            dense.append(pts[-1])
            props: dict[str, object] = {
                "highway": str(rng.choice(["residential", "tertiary", "secondary"]))}
            r = rng.random()
            if r < 0.25:
                props["oneway"] = str(rng.choice(["yes", "1", "true"]))
            elif r < 0.4:
                props["oneway"] = "-1"
            if rng.random() < 0.5:
                props["maxspeed"] = str(int(rng.choice([30, 40, 50])))
            way(dense, **props)
    way([node[0][0], (node[0][0][0] - 50, node[0][0][1] - 50)], highway="footway")
    way([node[-1][-1], (node[-1][-1][0] + 60, node[-1][-1][1])], highway="service",
        access="private")
    for i in range(1, size - 1):
        for j in range(1, size - 1):
            if rng.random() < 0.5:
                e, n = node[i][j]
                lat, lon = _pt(e, n)
                point = {"type": "Point", "coordinates": [float(lon), float(lat)]}
                feats.append({"type": "Feature", "geometry": point,
                              "properties": {"highway": "traffic_signals"}})
    path.write_bytes(orjson.dumps({"type": "FeatureCollection", "features": feats}))
    return path


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_properties_over_a_random_osm_like_grid(tmp_path: Path, seed: int) -> None:
    path = _grid_geojson(tmp_path / f"grid{seed}.geojson", seed)
    net = load_roads(path)
    assert net.lights_from_data and net.node_light.any()
    # every directed edge is allowed by its way's oneway tag
    allowed = set()
    for f in orjson.loads(path.read_bytes())["features"]:
        if f["geometry"]["type"] != "LineString":
            continue
        pts = [(round(lat, 7), round(lon, 7)) for lon, lat in f["geometry"]["coordinates"]]
        way = f["properties"].get("oneway")
        for a, b in zip(pts, pts[1:], strict=False):
            if way != "-1":
                allowed.add((a, b))
            if way not in ("yes", "1", "true"):
                allowed.add((b, a))
    lat, lon = np.round(net.node_lat, 7).tolist(), np.round(net.node_lon, 7).tolist()
    for a, b in zip(net.edge_from.tolist(), net.edge_to.tolist(), strict=True):
        assert ((lat[a], lon[a]), (lat[b], lon[b])) in allowed
    assert net.skipped == {"access=private": 1, "highway=footway": 1}
    one_way = net.edge_rev < 0
    assert one_way.any()
    rng = np.random.default_rng(seed)
    s = init_fleet(100, rng, net)
    odo0 = s.odo.copy()
    length = vh.CLASS_LENGTH_M[s.vclass]
    crossed_lights = 0
    for _ in range(400):
        old = s
        s = step(s, 1.0, rng, net)
        # no overlap: on one edge, cars keep at least s0 bumper to bumper
        o = np.lexsort((s.pos, s.edge))
        same = s.edge[o][1:] == s.edge[o][:-1]
        gap = s.pos[o][1:] - length[o][1:] - s.pos[o][:-1]
        assert (gap[same] >= follow.S0 - 1e-6).all()
        # no wrong way: every car drives a directed edge forward, never backwards
        stay = s.edge == old.edge
        assert (s.pos[stay] >= old.pos[stay] - 1e-9).all()
        moved = s.edge != old.edge
        assert (net.edge_from[s.edge[moved]] != net.edge_to[s.edge[moved]]).all()
        # never across on red: nobody leaves an edge whose light was red at the tick's start
        left_light = moved & net.edge_light[old.edge]
        crossed_lights += int(left_light.sum())
        assert not (left_light & (net.light_state(old.edge, old.t) == RED)).any()
        assert (s.pos <= net.edge_len[s.edge] + 1e-9).all() and (s.v >= 0).all()
    assert crossed_lights > 20
    assert s.red_crossings == 0 and s.light_crossings >= crossed_lights  # its own count
    assert (s.odo - odo0).mean() > 0.3  # km each in 400 s: they get around, no gridlock


def _t_net(sign: str | None = None) -> RoadNetwork:
    """A primary street east-west (0..400 m) and a residential one joining it from the south
    at 200 m; ``sign`` (stop / give_way) stands on the residential one 12 m before."""
    main = Road(*zip(*[_pt(x, 0.0) for x in range(0, 401, 50)], strict=True), road_type=0,
                limit_kmh=50, kind="primary")
    side = Road(*zip(*[_pt(200.0, y) for y in (-300.0, -150.0, -12.0, 0.0)], strict=True),
                road_type=0, limit_kmh=30, kind="residential")
    kw = {f"{sign}_points": [_pt(200.0, -12.0)]} if sign else {}
    return build_network("t", [main, side], place_points=[_pt(0, 0), _pt(400, 0)], **kw)


def _two_cars(net: RoadNetwork, side_m: float, side_v: float, main_m: float,
              main_v: float) -> FleetState:
    """Car 0 on the residential street ``side_m`` before the junction, car 1 on the primary
    one ``main_m`` before it, both heading for the east end."""
    s = init_fleet(2, np.random.default_rng(0), net)
    junction = int(np.argmin(np.hypot(net.node_lat - LAT0, net.node_lon - (LON0 + 200 * M_LON))))
    into = np.flatnonzero(net.edge_to == junction)
    north = int(into[np.abs(net.edge_heading[into] - 0.0) < 1][0])
    east = int(into[np.abs(net.edge_heading[into] - 90.0) < 1][0])
    edge = np.array([north, east], dtype=np.int32)
    pos = net.edge_len[edge] - np.array([side_m, main_m])
    dest = np.ones(2, dtype=np.int32)
    return replace(s, edge=edge, pos=pos, v=np.array([side_v, main_v]),
                   next_e=net.next_edge[dest, net.edge_to[edge]], dest=dest,
                   vclass=np.zeros(2, dtype=np.int8), kind=np.ones(2, dtype=np.int8),
                   factor=np.ones(2), accel=np.ones(2), sprint_ttl=np.zeros(2),
                   gear=np.full(2, 2, dtype=np.int8))


@pytest.mark.parametrize("sign", [None, "give_way", "stop"])
def test_a_minor_road_yields_to_the_major_one(sign: str | None) -> None:
    net = _t_net(sign)
    # the side car is due first (eta 2 s), the main-road car 1.5 s later: the side car,
    # on the minor approach, waits for it; alone on the road it would have gone
    s = _two_cars(net, side_m=10.0, side_v=5.0, main_m=50.0, main_v=14.0)
    start = s.edge.copy()
    entered = [-1, -1]
    side_v = []
    for k in range(40):
        s = step(s, 1.0, np.random.default_rng(k), net)
        side_v.append(float(s.v[0]))
        for c in (0, 1):
            if entered[c] < 0 and s.edge[c] != start[c]:
                entered[c] = k
    assert 0 <= entered[1] < entered[0]  # the major road's car first
    assert min(side_v[:entered[0]]) == 0.0  # the side car stopped to let it by
    alone = select(_two_cars(net, side_m=10.0, side_v=5.0, main_m=50.0, main_v=14.0),
                   np.array([0]))  # the side car only
    speeds = []
    for k in range(10):
        alone = step(alone, 1.0, np.random.default_rng(k), net)
        speeds.append(float(alone.v[0]))
    assert (min(speeds) == 0.0) == (sign == "stop")  # only a stop sign needs a full stop
