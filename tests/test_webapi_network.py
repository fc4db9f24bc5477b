"""GET /network end to end: a real producer daemon publishes its road network to the
compacted topic at start; the web API reads it and serves it gzipped, with an ETag."""

from __future__ import annotations

import gzip
import logging
import uuid
import zlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from common.roadnet import (
    MAX_NETWORK_FEATURES,
    MAX_NETWORK_INFLATED_BYTES,
    NetworkError,
    check_network,
)
from producer import network as producer_network
from producer.network import _chains, network_geojson, network_record, publish_network
from producer.sim import load_network
from tests.support.webapi import (
    control_settings,
    publish,
    running_app,
    start_producer,
    stop_producer,
    wait_for,
)
from webapi.keys import NETWORK
from webapi.network import check_record, parse
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


def gzip_bomb(inflated: int, unit: bytes = b"{},") -> bytes:
    """``{"type":"FeatureCollection","features":[{},{},...]}`` of about ``inflated`` bytes,
    gzipped without ever holding the inflated text (the audit's bomb: 64 MiB in 65 kB)."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [deflater.compress(b'{"type":"FeatureCollection","features":[')]
    chunk = unit * (1 << 16)
    for _ in range(-(-inflated // len(chunk))):  # at least ``inflated`` bytes
        out.append(deflater.compress(chunk))
    out.append(deflater.compress(b"{}]}"))
    out.append(deflater.flush())
    return b"".join(out)


def road(coords: Any, **props: Any) -> dict[str, Any]:
    base = {"feature": "road", "class": "residential", "road_type": "urban", "limit_kmh": 30,
            "oneway": False}
    return {"type": "Feature", "properties": {**base, **props},
            "geometry": {"type": "LineString", "coordinates": coords}}


def collection(*features: Any, **extra: Any) -> bytes:
    return orjson.dumps({"type": "FeatureCollection", "features": list(features), **extra})


GOOD_ROAD = road([[21.0, 52.2], [21.001, 52.2]])
JUNK: dict[str, bytes] = {
    "the audit's junk": collection(1, "x", None, {"type": "Nope"}),
    "not a feature": collection({"type": "Point", "coordinates": [21.0, 52.2]}),
    "extra feature member": collection({**GOOD_ROAD, "id": "<script>"}),
    "extra property": collection(road([[21.0, 52.2], [21.1, 52.2]], note="x" * 10_000)),
    "unknown kind": collection({**GOOD_ROAD, "properties": {"feature": "bomb"}}),
    "bad road type": collection(road([[21.0, 52.2], [21.1, 52.2]], road_type="Nope")),
    "class not a tag": collection(road([[21.0, 52.2], [21.1, 52.2]], **{"class": "<b>x</b>"})),
    "limit a bool": collection(road([[21.0, 52.2], [21.1, 52.2]], limit_kmh=True)),
    "one position": collection(road([[21.0, 52.2]])),
    "latitude off the globe": collection(road([[21.0, 52.2], [21.0, 91.0]])),
    "position of 3": collection(road([[21.0, 52.2], [21.0, 52.3, 7]])),
    "position of bools": collection(road([[21.0, 52.2], [True, False]])),
    "position as text": collection(road([[21.0, 52.2], ["21", "52"]])),
    "huge exponent": collection(road([[21.0, 52.2], [0, 0]])).replace(b"[0,0]", b"[1e999,0]"),
    "point with a property": collection({"type": "Feature",
                                         "properties": {"feature": "light", "x": 1},
                                         "geometry": {"type": "Point",
                                                      "coordinates": [21.0, 52.2]}}),
    "light as a line": collection({**GOOD_ROAD, "properties": {"feature": "light"}}),
    "name not text": collection(GOOD_ROAD, name=["x"]),
    "unknown top-level member": collection(GOOD_ROAD, extra={"a": 1}),
    "road_km NaN-ish": collection(GOOD_ROAD, road_km="nan"),
    "too many features": b'{"type":"FeatureCollection","features":['
                         + b",".join([orjson.dumps(GOOD_ROAD)] * (MAX_NETWORK_FEATURES + 1))
                         + b"]}",
}


def test_a_valid_minimal_network_is_read() -> None:
    net = check_record(b"n1", collection(GOOD_ROAD, name="x", road_km=0.1))
    assert orjson.loads(gzip.decompress(net.gz))["features"] == [GOOD_ROAD]


@pytest.mark.parametrize("case", sorted(JUNK))
def test_junk_features_are_refused(case: str) -> None:
    with pytest.raises(NetworkError) as err:
        check_record(b"junk", JUNK[case])
    assert "<" not in str(err.value) and "x" * 20 not in str(err.value)  # no input echoed
    with pytest.raises(NetworkError):
        check_record(b"junk", gzip.compress(JUNK[case]))


def test_gzip_bombs_and_odd_gzip_are_refused() -> None:
    for size in (MAX_NETWORK_INFLATED_BYTES + 1024, 64 << 20):  # just over the cap; the audit's
        bomb = gzip_bomb(size)
        assert len(bomb) < 100_000
        with pytest.raises(NetworkError, match="inflates to more than"):
            check_record(b"bomb", bomb)
    # under the cap, a bomb of empty objects is not a network (refused before parsing)
    with pytest.raises(NetworkError, match="more JSON values"):
        check_record(b"bomb", gzip_bomb(MAX_NETWORK_INFLATED_BYTES // 2))
    good = gzip.compress(collection(GOOD_ROAD), mtime=0)
    assert check_record(b"n", good).gz == good
    # a second gzip member would be served (and inflated by clients) unchecked
    with pytest.raises(NetworkError, match="after the gzip stream"):
        check_record(b"n", good + gzip.compress(b'{"type":"Nope"}'))
    with pytest.raises(NetworkError, match="after the gzip stream"):
        check_record(b"n", good + b"trailing")
    with pytest.raises(NetworkError, match="truncated"):
        check_record(b"n", good[:-12])
    with pytest.raises(NetworkError, match="not a valid gzip"):
        check_record(b"n", good[:10] + b"\xff" * 20)
    # a plain JSON record over the cap is refused without parsing
    with pytest.raises(NetworkError, match="more than"):
        check_record(b"n", b" " * (MAX_NETWORK_INFLATED_BYTES + 1) + collection(GOOD_ROAD))
    with pytest.raises(NetworkError, match="differs from the record's key"):
        check_record(b"other", collection(GOOD_ROAD, network_id="n"))


def test_the_built_in_network_is_well_within_the_limits() -> None:
    """The built-in city (154 kB of JSON) is the largest network the project ships or fetches:
    the real OSM extracts of ``make osm-data`` are smaller (Helsinki centre 99 kB, Kotka 66 kB,
    measured 2026-11-30; they are not fetched for the test suite). A user's own roads file
    beyond the limits is driven but not published (the producer logs it)."""
    key, value = network_record(load_network(None))
    assert len(gzip.decompress(value)) * 50 < MAX_NETWORK_INFLATED_BYTES
    assert check_record(key, value).network_id == key.decode()


def test_the_producer_refuses_to_publish_a_network_the_web_api_would_refuse(
        monkeypatch: pytest.MonkeyPatch) -> None:
    net = load_network(None)
    monkeypatch.setattr(producer_network, "MAX_NETWORK_INFLATED_BYTES", 100_000)
    with pytest.raises(NetworkError, match="bytes of GeoJSON, more than the 100,000"):
        network_record(net)
    monkeypatch.undo()
    monkeypatch.setattr(producer_network, "check_network", lambda doc: check_network(
        {**doc, "features": [*doc["features"], {"type": "Nope"}]}))
    with pytest.raises(NetworkError, match="not one the web API reads"):
        network_record(net)


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


async def test_bombs_and_junk_on_the_topic_keep_the_previous_network(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="webapi.network")
    topic = settings.kafka_network_topic
    real = load_network(None)
    async with running_app(settings) as client:
        reader = client.app[NETWORK]
        net_id = await publish_network(settings, topic, real)  # creates the compacted topic
        await wait_for(lambda: reader.current is not None, timeout=60)
        assert reader.current is not None and reader.current.network_id == net_id
        hostile = [gzip_bomb(64 << 20), gzip_bomb(MAX_NETWORK_INFLATED_BYTES + 1024),
                   JUNK["the audit's junk"], gzip.compress(JUNK["extra property"]),
                   network_record(real)[1] + gzip.compress(b'{"type":"Nope"}')]
        for value in hostile:
            await publish(settings.kafka_bootstrap_servers, topic, [value], key=b"bomb")
        await wait_for(lambda: reader.invalid == len(hostile), timeout=60)
        assert reader.current.network_id == net_id  # the previous network is kept
        resp = await client.get("/network", headers={"Accept-Encoding": "identity"})
        assert resp.status == 200 and resp.headers["ETag"] == f'"{net_id}"'
        assert orjson.loads(await resp.read()) == network_geojson(real)
    lines = [r.getMessage() for r in caplog.records if r.name == "webapi.network"]
    assert len(lines) == 1  # logged once (rate-limited), briefly, without the input
    assert "inflates to more than" in lines[0] and len(lines[0]) < 300
    assert "bomb" not in lines[0] and "{}" not in lines[0]
