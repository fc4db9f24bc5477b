"""GET /network end to end: a real producer daemon publishes its road network to the
compacted topic at start; the web API reads it and serves it gzipped, with an ETag."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path

import orjson
import pytest

from producer.network import _chains, network_geojson, network_record
from producer.sim import load_network
from tests.support.webapi import (
    control_settings,
    running_app,
    start_producer,
    stop_producer,
    wait_for,
)
from webapi.keys import NETWORK
from webapi.network import parse
from webapi.settings import Settings

pytestmark = pytest.mark.kafka


def test_chains_merge_consecutive_segments_and_respect_direction() -> None:
    # a two-way road 0-1-2-3 with a branch 2-4: three lines meeting at junction 2
    lines = _chains([(0, 1), (1, 2), (2, 3), (2, 4)], directed=False)
    assert sorted(map(tuple, lines)) == [(0, 1, 2), (2, 3), (2, 4)]
    # one-way 0->1->2 and 3->2 (2 has two ins: no merge through it), and a loop 5->6->5
    lines = _chains([(0, 1), (1, 2), (3, 2), (5, 6), (6, 5)], directed=True)
    assert sorted(map(tuple, lines)) == [(0, 1, 2), (3, 2), (5, 6, 5)]


def test_builtin_network_geojson_covers_every_road_once() -> None:
    net = load_network(None)
    doc = network_geojson(net)
    assert set(doc) == {"type", "network_id", "name", "road_km", "features"}
    roads = [f for f in doc["features"] if f["properties"]["feature"] == "road"]
    assert {tuple(sorted(f["properties"])) for f in roads} == {
        ("class", "feature", "limit_kmh", "oneway", "road_type")}
    pieces = sum(len(f["geometry"]["coordinates"]) - 1 for f in roads)
    one_per_piece = sum(1 for e in range(net.n_edges)
                        if net.edge_rev[e] < 0 or e < net.edge_rev[e])
    assert pieces == one_per_piece and len(roads) < pieces  # merged, nothing lost
    lights = [f for f in doc["features"] if f["properties"]["feature"] == "light"]
    assert len(lights) == int(net.node_light.sum())
    coords = [c for f in roads for c in f["geometry"]["coordinates"]]
    assert all(round(x, 6) == x for c in coords for x in c)
    key, value = network_record(net)
    assert key.decode() == doc["network_id"] and len(key) == 16
    assert network_record(net) == (key, value)  # deterministic: same network, same record
    assert parse(key, value) is not None
    assert parse(key, gzip.compress(b'{"type":"Point"}')) is None
    assert parse(b"bad key!", value) is None


@pytest.fixture
def settings(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Settings:
    network_topic = f"network-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("KAFKA_NETWORK_TOPIC", network_topic)  # for the producer
    base = control_settings(kafka_bootstrap, topic, topic_factory, tmp_path)
    return base.model_copy(update={"kafka_network_topic": network_topic})


async def test_network_round_trip_from_a_real_daemon(settings: Settings,
                                                     tmp_path: Path) -> None:
    network_topic = settings.kafka_network_topic
    async with running_app(settings) as client:
        missing = await client.get("/network")
        assert missing.status == 404
        body = await missing.json()
        assert set(body) == {"error"} and network_topic in body["error"]
        proc = start_producer(settings, tmp_path / "producer.log", fleet_size=2)
        try:
            await wait_for(lambda: client.app[NETWORK].current is not None, timeout=60)
        finally:
            stop_producer(proc)
        expected = network_geojson(load_network(None))

        resp = await client.get("/network", headers={"Accept-Encoding": "gzip"},
                                auto_decompress=False)
        assert resp.status == 200
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["Content-Type"] == "application/geo+json"
        etag = resp.headers["ETag"]
        assert etag == f'"{expected["network_id"]}"'
        raw = await resp.read()
        assert orjson.loads(gzip.decompress(raw)) == expected

        plain = await client.get("/network", headers={"Accept-Encoding": "identity"},
                                 auto_decompress=False)
        assert plain.status == 200 and "Content-Encoding" not in plain.headers
        assert orjson.loads(await plain.read()) == expected
        assert len(raw) * 3 < len(await plain.read())  # gzip pays

        again = await client.get("/network", headers={"If-None-Match": etag})
        assert again.status == 304 and again.headers["ETag"] == etag
        assert await again.read() == b""
        other = await client.get("/network", headers={"If-None-Match": '"0000"'})
        assert other.status == 200
