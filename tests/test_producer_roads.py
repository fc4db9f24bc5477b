"""Road networks: the built-in Warsaw, GeoJSON roads (good and bad files), routes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from producer.builtin import warsaw
from producer.fleet import init_fleet, step
from producer.geo import WARSAW, haversine_m
from producer.geojson import (
    DEFAULT_MAXSPEED,
    RoadsFileError,
    load_roads,
    oneway,
    parse_maxspeed,
    road_class,
    signal_cycle_s,
    skip_reason,
)
from producer.roads import GREEN, HIGHWAY, LIGHT_CYCLE_S, RED, RURAL, URBAN, RoadNetwork

ROOT = Path(__file__).resolve().parent.parent


def _follow(net: RoadNetwork, place: int, node: int) -> int:
    """Hops from ``node`` to place ``place`` along next_edge (fails on a loop)."""
    target = int(net.places[place])
    for hops in range(net.n_nodes + 1):
        if node == target:
            return hops
        e = int(net.next_edge[place, node])
        assert e >= 0 and net.edge_from[e] == node
        node = int(net.edge_to[e])
    raise AssertionError("route loops")


def test_builtin_network_shape() -> None:
    net = warsaw()
    assert net is warsaw()  # built once
    types = np.bincount(net.edge_type, minlength=3)
    assert (types > 0).all()
    for t, limit in ((URBAN, 50), (RURAL, 90), (HIGHWAY, 130)):
        assert set(net.edge_limit[net.edge_type == t].tolist()) == {float(limit)}
    centre = haversine_m(net.node_lat, net.node_lon, *WARSAW)
    assert centre.min() < 1 and centre.max() < 40_000
    lights = np.flatnonzero(net.node_light)
    assert 200 < lights.size < 300  # the 15 x 15 inner crossings of the 250 m grid and more
    assert (centre[lights] < 4000).all()  # lights are in town
    assert (net.edge_rev[net.edge_rev] == np.arange(net.n_edges)).all()
    assert (net.edge_from[net.edge_rev] == net.edge_to).all()
    assert net.places.size >= 10


def test_every_node_reaches_every_place() -> None:
    net = warsaw()
    for p in range(net.places.size):
        for node in range(0, net.n_nodes, 7):
            _follow(net, p, node)


def _feature(coords: list, **props: object) -> dict:
    return {"type": "Feature", "properties": props,
            "geometry": {"type": "LineString", "coordinates": coords}}


def _city(tmp_path: Path) -> Path:
    """A small town near Kraków: a 4x4 street grid, a trunk road, a motorway, a footway."""
    lon0, lat0, d = 19.93, 50.06, 0.004
    feats = []
    for i in range(4):
        feats.append(_feature([[lon0 + j * d, lat0 + i * d] for j in range(4)],
                              highway="residential", maxspeed="30" if i == 0 else None))
        feats.append(_feature([[lon0 + i * d, lat0 + j * d] for j in range(4)],
                              highway="secondary", maxspeed="50"))
    feats.append(_feature([[lon0 + 3 * d, lat0], [lon0 + 0.05, lat0 - 0.01]],
                          highway="trunk", maxspeed="90"))
    # a motorway is one-way: its two carriageways are two features (a MultiLineString each)
    for a, b in (((0.05, -0.01), (0.12, -0.02)), ((0.12, -0.02), (0.05, -0.01))):
        feats.append({"type": "Feature", "properties": {"highway": "motorway"}, "geometry": {
            "type": "MultiLineString",
            "coordinates": [[[lon0 + a[0], lat0 + a[1]], [lon0 + b[0], lat0 + b[1]]]]}})
    feats.append(_feature([[lon0, lat0], [lon0 - 0.01, lat0]], highway="footway"))
    feats.append(_feature([[lon0 + 1, lat0 + 1], [lon0 + 1.01, lat0 + 1]],
                          highway="primary"))  # far away, not connected: dropped
    path = tmp_path / "town.geojson"
    path.write_bytes(orjson.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def test_geojson_roads_load_with_types_and_limits(tmp_path: Path) -> None:
    net = load_roads(_city(tmp_path))
    assert net.name == "geojson:town.geojson"
    limits = {(int(t), int(lim)) for t, lim in zip(net.edge_type, net.edge_limit, strict=True)}
    assert limits == {(URBAN, 30), (URBAN, 50), (RURAL, 90), (HIGHWAY, 130)}
    assert net.n_nodes == 16 + 2  # grid + trunk end/motorway end; footway & island dropped
    assert net.node_light.sum() == 4  # the inner crossings of the grid


def test_cars_drive_on_geojson_roads(tmp_path: Path) -> None:
    net = load_roads(_city(tmp_path))
    rng = np.random.default_rng(1)
    s = init_fleet(40, rng, net)
    edges_seen = set()
    for _ in range(900):
        s = step(s, 1.0, rng, net)
        edges_seen.update(s.edge.tolist())
        assert (s.pos <= net.edge_len[s.edge] + 1e-9).all()
    assert len(edges_seen) > net.n_edges // 2  # they get around, turning at crossings
    assert {int(t) for t in net.edge_type[list(edges_seen)]} == {URBAN, RURAL, HIGHWAY}


@pytest.mark.parametrize(("value", "kmh"), [
    ("50", 50), (70, 70), ("30 mph", 48), ("PL:urban", 50), ("PL:rural", 90),
    ("DE:motorway", 140), ("none", 130), ("signals", None), (None, None), ("50;70", 50),
])
def test_maxspeed_parsing(value: object, kmh: int | None) -> None:
    assert parse_maxspeed(value) == kmh


def test_road_classes() -> None:
    assert road_class({"highway": "motorway"}) == ("highway", 130)
    assert road_class({"highway": "trunk", "maxspeed": "100"}) == ("rural", 100)
    assert road_class({"highway": "primary", "maxspeed": "90"}) == ("rural", 90)
    assert road_class({"highway": "residential"}) == ("urban", 30)  # DEFAULT_MAXSPEED
    assert road_class({"highway": "cycleway"}) is None
    assert road_class({"highway": "service", "road_type": "rural"}) == ("rural", 20)


BAD = {
    "missing": (None, "cannot read it"),
    "not-json": (b"{nope", "not valid JSON"),
    "a-list": (b"[1, 2]", "expected a GeoJSON object"),
    "wrong-type": (b'{"type": "Point", "coordinates": [1, 2]}', "FeatureCollection or Feature"),
    "empty": (b'{"type": "FeatureCollection", "features": []}', "no driveable LineString"),
    "no-features": (b'{"type": "FeatureCollection"}', "no 'features' list"),
    "only-footways": (orjson.dumps({"type": "FeatureCollection", "features": [
        _feature([[20, 52], [20.01, 52]], highway="footway")]}), "no driveable"),
    "one-point": (orjson.dumps({"type": "FeatureCollection", "features": [
        _feature([[20, 52]], highway="primary")]}), "feature 0: a LineString needs"),
    "lat-lon-swapped": (orjson.dumps({"type": "FeatureCollection", "features": [
        _feature([[52.2, 21.0], [52.3, 95.0]], highway="primary")]}), "out of range"),
    "text-coords": (orjson.dumps({"type": "FeatureCollection", "features": [
        _feature([["a", "b"], [1, 2]], highway="primary")]}), "not a [lon, lat] pair"),
    "same-point": (orjson.dumps({"type": "FeatureCollection", "features": [
        _feature([[20, 52], [20, 52]], highway="primary")]}), "two distinct points"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_geojson_files_get_a_clear_error(tmp_path: Path, case: str) -> None:
    content, problem = BAD[case]
    path = tmp_path / f"{case}.geojson"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(RoadsFileError) as err:
        load_roads(path)
    assert str(path) in str(err.value) and problem in str(err.value)


def test_a_roads_file_that_is_not_a_regular_file_or_too_big_is_refused(tmp_path: Path) -> None:
    """/dev/zero would be read until memory ran out and a FIFO would block the start: both are
    refused before they are opened, and a file over the size limit is refused too."""
    import os

    from producer.geojson import _read_bounded

    fifo = tmp_path / "fifo.geojson"
    os.mkfifo(fifo)
    for path in (Path("/dev/zero"), tmp_path, fifo):
        with pytest.raises(RoadsFileError, match="not a regular file"):
            load_roads(path)
    big = tmp_path / "big.geojson"
    big.write_bytes(b" " * 17)
    with pytest.raises(RoadsFileError, match="17 bytes, more than the 16"):
        _read_bounded(big, limit=16)
    assert _read_bounded(big, limit=17) == b" " * 17


def test_cli_reports_a_bad_roads_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.geojson"
    path.write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "producer", "--stdout", "--steps", "1",
                           "--roads", str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2
    assert str(path) in proc.stderr and "FeatureCollection" in proc.stderr
    assert proc.stdout == ""


# --- OSM rules, tag by tag -------------------------------------------------------------------

@pytest.mark.parametrize(("props", "direction"), [
    ({"highway": "primary"}, 0), ({"highway": "primary", "oneway": "yes"}, 1),
    ({"highway": "primary", "oneway": "1"}, 1), ({"highway": "primary", "oneway": "true"}, 1),
    ({"highway": "primary", "oneway": "-1"}, -1), ({"highway": "primary", "oneway": "no"}, 0),
    ({"highway": "primary", "junction": "roundabout"}, 1),
    ({"highway": "primary", "junction": "circular"}, 1),
    ({"highway": "primary", "junction": "roundabout", "oneway": "no"}, 0),
    ({"highway": "motorway"}, 1), ({"highway": "motorway_link"}, 1),
    ({"highway": "trunk"}, 0),
])
def test_oneway_tags(props: dict, direction: int) -> None:
    assert oneway(props) == direction


@pytest.mark.parametrize(("props", "reason"), [
    ({"highway": "residential"}, None), ({}, None), ({"highway": "living_street"}, None),
    ({"highway": "service"}, None), ({"highway": "unclassified"}, None),
    ({"highway": "trunk_link"}, None), ({"highway": "road"}, None),
    ({"highway": "footway"}, "highway=footway"), ({"highway": "cycleway"}, "highway=cycleway"),
    ({"highway": "path"}, "highway=path"), ({"highway": "pedestrian"}, "highway=pedestrian"),
    ({"highway": "steps"}, "highway=steps"), ({"highway": "platform"}, "highway=platform"),
    ({"highway": "construction"}, "highway=construction"),
    ({"highway": "proposed"}, "highway=proposed"), ({"highway": "bus_stop"}, "highway=bus_stop"),
    ({"highway": "corridor"}, "highway=corridor"), ({"highway": "Foo"}, "highway=foo"),
    ({"highway": "service", "access": "private"}, "access=private"),
    ({"highway": "service", "access": "no"}, "access=no"),
    ({"highway": "service", "access": "private", "motor_vehicle": "yes"}, None),
    ({"highway": "service", "access": "destination"}, None),
    ({"highway": "primary", "motor_vehicle": "no"}, "motor_vehicle=no"),
    ({"highway": "primary", "motorcar": "no"}, "motorcar=no"),
    ({"highway": "primary", "oneway": "reversible"}, "oneway=reversible"),
])
def test_which_ways_cars_may_use(props: dict, reason: str | None) -> None:
    assert skip_reason(props) == reason
    assert (road_class(props) is None) == (reason is not None)


@pytest.mark.parametrize(("highway", "kmh", "road_type"), [
    ("motorway", 130, "highway"), ("motorway_link", 80, "highway"), ("trunk", 100, "rural"),
    ("primary", 50, "urban"), ("secondary", 50, "urban"), ("tertiary", 50, "urban"),
    ("unclassified", 50, "urban"), ("residential", 30, "urban"),
    ("living_street", 20, "urban"), ("service", 20, "urban"),
])
def test_default_limits_by_class(highway: str, kmh: int, road_type: str) -> None:
    assert DEFAULT_MAXSPEED[highway] == kmh
    assert road_class({"highway": highway}) == (road_type, kmh)
    assert road_class({"highway": highway, "maxspeed": "40"})[1] == 40  # type: ignore[index]


def _collection(path: Path, feats: list) -> Path:
    path.write_bytes(orjson.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def _square(lon0: float = 21.0, lat0: float = 52.0, d: float = 0.001) -> list:
    """A two-way block: four streets around a square."""
    c = [[lon0, lat0], [lon0 + d, lat0], [lon0 + d, lat0 + d], [lon0, lat0 + d], [lon0, lat0]]
    return [_feature(c[i:i + 2], highway="residential") for i in range(4)]


def test_one_way_roads_and_strong_connectivity(tmp_path: Path) -> None:
    lon0, lat0, d = 21.0, 52.0, 0.001
    feats = _square()
    # a one-way spur out of the block that never comes back: a dead end for cars
    feats.append(_feature([[lon0 + d, lat0], [lon0 + 2 * d, lat0]], highway="residential",
                          oneway="yes"))
    # a one-way street across the block (drawn north to south, tagged -1: driven south->north)
    feats.append(_feature([[lon0 + d / 2, lat0 + d], [lon0 + d / 2, lat0]],
                          highway="residential", oneway="-1"))
    feats[0] = _feature([[lon0, lat0], [lon0 + d / 2, lat0], [lon0 + d, lat0]],
                        highway="residential")
    feats[2] = _feature([[lon0 + d, lat0 + d], [lon0 + d / 2, lat0 + d], [lon0, lat0 + d]],
                        highway="residential")
    net = load_roads(_collection(tmp_path / "oneway.geojson", feats))
    assert net.n_nodes == 6  # the spur's end is gone: it cannot be left again
    one = np.flatnonzero(net.edge_rev < 0)
    assert one.size == 1  # the cross street, south to north only
    assert net.node_lat[net.edge_to[one[0]]] > net.node_lat[net.edge_from[one[0]]]
    assert net.n_edges == 2 * 6 + 1


def test_roundabout_is_one_way(tmp_path: Path) -> None:
    lon0, lat0, r = 21.0, 52.0, 0.0003
    ring = [[lon0 + r * np.cos(a), lat0 + r * np.sin(a)] for a in np.linspace(0, 2 * np.pi, 9)]
    ring = [[float(x), float(y)] for x, y in ring]
    ring[-1] = ring[0]
    feats = [_feature(ring, highway="primary", junction="roundabout")]
    for k in (0, 2, 4, 6):
        x, y = ring[k]
        feats.append(_feature([[x, y], [x + 5 * (x - lon0), y + 5 * (y - lat0)]],
                              highway="secondary"))
    net = load_roads(_collection(tmp_path / "roundabout.geojson", feats))
    ring_edges = net.edge_rev < 0
    assert ring_edges.sum() == 8  # counter-clockwise (drawing order) only
    assert net.n_edges == 8 + 4 * 2


def test_traffic_signals_come_from_the_data_else_are_inferred(tmp_path: Path) -> None:
    city = orjson.loads(_city(tmp_path).read_bytes())
    net = load_roads(_city(tmp_path))
    assert not net.lights_from_data and net.node_light.sum() == 4
    lon0, lat0, d = 19.93, 50.06, 0.004
    city["features"].append({"type": "Feature", "properties": {"highway": "traffic_signals"},
                             "geometry": {"type": "Point", "coordinates": [lon0 + d, lat0]}})
    city["features"].append({"type": "Feature", "properties": {"highway": "crossing"},
                             "geometry": {"type": "Point", "coordinates": [lon0, lat0]}})
    path = _collection(tmp_path / "signals.geojson", city["features"])
    net = load_roads(path)
    assert net.lights_from_data and net.node_light.sum() == 1
    light = int(np.flatnonzero(net.node_light)[0])
    assert (net.node_lat[light], net.node_lon[light]) == pytest.approx((lat0, lon0 + d))
    assert net.edge_light.sum() == int((net.edge_to == light).sum())


@pytest.mark.parametrize("value, secs", [
    ("90", 90.0), ("1:15", 75.0), ("Thu 10: 1:15", 75.0), ("Fr 17:30: 01:15", 75.0),
    (120, 120.0), ("Fr 17:30: 0:18", None), ("soon", None), (None, None), ("9:00", None)])
def test_signal_cycle_tags(value: object, secs: float | None) -> None:
    assert signal_cycle_s(value) == secs


def test_the_files_signal_cycle_sets_every_lights_cycle(tmp_path: Path) -> None:
    """Helsinki's signal nodes carry traffic_signals:cycle=1:15: its lights run 75 s, not
    LIGHT_CYCLE_S."""
    city = orjson.loads(_city(tmp_path).read_bytes())
    assert load_roads(_city(tmp_path)).light_cycle == LIGHT_CYCLE_S == 90.0
    lon0, lat0, d = 19.93, 50.06, 0.004
    for k, tags in enumerate([{"traffic_signals:cycle": "Fr 17:30: 01:15"},
                              {"traffic_signals:cycle": "1:15"}, {}]):
        city["features"].append({"type": "Feature",
                                 "properties": {"highway": "traffic_signals", **tags},
                                 "geometry": {"type": "Point",
                                              "coordinates": [lon0 + k * d, lat0]}})
    net = load_roads(_collection(tmp_path / "cycle.geojson", city["features"]))
    assert net.light_cycle == 75.0
    e = np.flatnonzero(net.edge_light)[:1]
    states = [int(net.light_state(e, float(t))[0]) for t in range(300)]
    assert states[:150] == states[75:225]  # periodic at 75 s
    assert states.count(GREEN) / 300 == pytest.approx(33.5 / 75, abs=0.01) and RED in states


def test_skipped_ways_are_reported_by_kind(tmp_path: Path) -> None:
    feats = _square()
    feats += [_feature([[21, 52], [21.01, 52.01]], highway=k) for k in
              ("footway", "footway", "steps", "platform", "proposed", "weird_value")]
    feats.append(_feature([[21, 52], [21.01, 52.01]], highway="service", access="private"))
    feats.append(_feature([[21, 52], [21.01, 52.01]], highway="primary", oneway="reversible"))
    net = load_roads(_collection(tmp_path / "mixed.geojson", feats))
    assert net.skipped == {"access=private": 1, "highway=footway": 2, "highway=platform": 1,
                           "highway=proposed": 1, "highway=steps": 1,
                           "highway=weird_value": 1, "oneway=reversible": 1}
    assert net.n_nodes == 4


LATLON = {
    "lat-over-90": (orjson.dumps({"type": "FeatureCollection", "features": [
        _feature([[-33.9, 151.2], [-33.8, 151.3]], highway="primary")]}), "look like [lat, lon]"),
    "bbox-swapped": (orjson.dumps({"type": "FeatureCollection", "bbox": [21.0, 52.0, 21.1, 52.1],
                                   "features": [_feature([[52.05, 21.05], [52.06, 21.05]],
                                                         highway="primary")]}),
                     "look like [lat, lon]"),
    "only-reversible": (orjson.dumps({"type": "FeatureCollection", "features": [
        _feature([[21, 52], [21.01, 52]], highway="primary", oneway="reversible")]}),
        "oneway=reversible: 1"),
    "one-way-nowhere": (orjson.dumps({"type": "FeatureCollection", "features": [
        _feature([[21, 52], [21.01, 52]], highway="primary", oneway="yes")]}),
        "no two places are connected"),
}


@pytest.mark.parametrize("case", sorted(LATLON))
def test_more_bad_files_get_a_clear_error(tmp_path: Path, case: str) -> None:
    content, problem = LATLON[case]
    path = tmp_path / f"{case}.geojson"
    path.write_bytes(content)
    with pytest.raises(RoadsFileError) as err:
        load_roads(path)
    assert str(path) in str(err.value) and problem in str(err.value)


def _t_junction(tmp_path: Path, extra: list | None = None) -> RoadNetwork:
    """A primary street east-west (points every ~34 m) and a residential one joining it from
    the south at (lon0 + 2d, lat0), with a node 0.00004 deg (~4.4 m) before the junction."""
    lon0, lat0, d = 21.0, 52.0, 0.0005
    feats = [_feature([[lon0 + k * d, lat0] for k in range(5)], highway="primary"),
             _feature([[lon0 + 2 * d, lat0 - 4 * d], [lon0 + 2 * d, lat0 - 0.00004],
                       [lon0 + 2 * d, lat0]], highway="residential"),
             _feature([[lon0, lat0], [lon0, lat0 - 4 * d], [lon0 + 2 * d, lat0 - 4 * d]],
                      highway="residential"),
             _feature([[lon0 + 4 * d, lat0], [lon0 + 4 * d, lat0 - 4 * d],
                       [lon0 + 2 * d, lat0 - 4 * d]], highway="residential")]
    return load_roads(_collection(tmp_path / "t.geojson", feats + (extra or [])))


def _point(lon: float, lat: float, **props: object) -> dict:
    return {"type": "Feature", "properties": props,
            "geometry": {"type": "Point", "coordinates": [lon, lat]}}


def _into(net: RoadNetwork, lon: float, lat: float, heading: float) -> int:
    """The edge ending at the node at (lon, lat) driven in ``heading`` (degrees)."""
    node = int(np.argmin(np.hypot(net.node_lon - lon, net.node_lat - lat)))
    turn = np.abs((net.edge_heading - heading + 180.0) % 360.0 - 180.0)
    return int(np.flatnonzero((net.edge_to == node) & (turn < 5))[0])


def test_minor_roads_yield_by_class_and_signs(tmp_path: Path) -> None:
    from producer.roads import GIVE_WAY, PRIORITY, STOP

    lon0, lat0, d = 21.0, 52.0, 0.0005
    net = _t_junction(tmp_path)
    north = _into(net, lon0 + 2 * d, lat0, 0.0)  # the residential street into the junction
    east = _into(net, lon0 + 2 * d, lat0, 90.0)  # the primary one
    assert net.node_junction[net.edge_to[north]]
    assert net.edge_rank[north] == PRIORITY["residential"] < net.edge_rank[east]
    assert net.edge_sign.sum() == 0
    # the minor approach is planned to reach the junction at a speed it can stop from
    # within the visibility distance; the major one is not slowed
    place = 0
    assert net.budget[place, north] <= 2 * 2.0 * (net.edge_len[north] + 4.5) + 1e-6
    # a give-way sign on the minor way 4.4 m before the junction applies to its last edge
    for tag, sign in (("give_way", GIVE_WAY), ("stop", STOP)):
        signed = _t_junction(tmp_path, [_point(lon0 + 2 * d, lat0 - 0.00004, highway=tag)])
        e = _into(signed, lon0 + 2 * d, lat0, 0.0)
        assert signed.edge_sign[e] == sign and signed.edge_rank[e] == -1
        assert int((signed.edge_sign > 0).sum()) == 1
        assert bool(signed.edge_stop[e]) == (sign == STOP)  # a stop sign is a stop point


def test_zebra_crossings_and_pedestrians(tmp_path: Path) -> None:
    from producer.roads import PED_CROSS_S, PED_RATE_PER_H

    lon0, lat0, d = 21.0, 52.0, 0.0005
    marked = _point(lon0 + d, lat0, highway="crossing", crossing="uncontrolled")
    unmarked = _point(lon0 + 3 * d, lat0, highway="crossing", crossing="unmarked")
    net = _t_junction(tmp_path, [marked, unmarked])
    both = np.flatnonzero(net.edge_cross)
    node = int(np.argmin(np.hypot(net.node_lon - (lon0 + d), net.node_lat - lat0)))
    assert both.size == 2 and (net.edge_to[both] == node).all()  # one per direction
    assert net.edge_stop[both].all()
    # pedestrians: busy in the share of slots with at least one Poisson arrival
    t = np.arange(0.0, 200 * 3600.0, PED_CROSS_S)
    busy = np.array([net.crossing_busy(both[:1], float(x))[0] for x in t])
    p = 1 - np.exp(-PED_RATE_PER_H / 3600.0 * PED_CROSS_S)
    assert busy.mean() == pytest.approx(p, rel=0.15)
    assert not net.crossing_busy(np.flatnonzero(~net.edge_cross), 100.0).any()


def test_waiting_positions_keep_clear_of_a_narrow_angle_way(tmp_path: Path) -> None:
    from producer.roads import LANE_M, SETBACK_M

    lon0, lat0, d = 21.0, 52.0, 0.0005
    # a street joining another at 30 degrees
    k = np.cos(np.radians(lat0))
    tip = [lon0 + 2 * d, lat0]
    slant = [tip[0] - 4 * d * np.cos(np.radians(30)) / k, lat0 - 4 * d * np.sin(np.radians(30))]
    feats = [_feature([[lon0 + j * d, lat0] for j in range(5)], highway="primary"),
             _feature([[float(slant[0]), float(slant[1])], tip], highway="secondary"),
             _feature([[lon0, lat0], [float(slant[0]), float(slant[1])]], highway="secondary"),
             _feature([[lon0 + 4 * d, lat0], [lon0 + 4 * d, lat0 - 3 * d],
                       [float(slant[0]), float(slant[1])]], highway="residential")]
    net = load_roads(_collection(tmp_path / "merge.geojson", feats))
    e = _into(net, tip[0], tip[1], 60.0)
    assert net.edge_setback[e] == pytest.approx(LANE_M / np.sin(np.radians(30)), rel=0.05)
    square = _into(net, lon0 + 4 * d, lat0, 0.0)  # a right-angle corner: the default
    assert net.edge_setback[square] == SETBACK_M
