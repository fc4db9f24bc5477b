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
from producer.geojson import RoadsFileError, load_roads, parse_maxspeed, road_class
from producer.roads import HIGHWAY, RURAL, URBAN, RoadNetwork

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
    assert 40 < lights.size < 100
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


def test_cli_reports_a_bad_roads_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.geojson"
    path.write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "producer", "--stdout", "--steps", "1",
                           "--roads", str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2
    assert str(path) in proc.stderr and "FeatureCollection" in proc.stderr
    assert proc.stdout == ""
