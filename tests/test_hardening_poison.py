"""Issue 9, the poison-pill suite: every malformed kind the outside probe sent, published to
the real broker while the real web API consumes the topic.

It asserts that the API keeps serving, that every reject is counted by its reason (in
/stats and /metrics), that nothing malformed reaches /telemetry/latest or the WebSocket, that
vehicles_reporting only counts real cars, and that nothing is replayed (consumed_total grows
by exactly the valid events and the consumer never reconnects).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cramjam
import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from tests.support.webapi import make_event, running_app, wait_for
from webapi.decode import MALFORMED_KINDS
from webapi.keys import CONSUMER, STORE
from webapi.settings import Settings

pytestmark = pytest.mark.kafka

CODECS = ("gzip", "snappy", "lz4", "zstd")


def poison() -> list[tuple[str, bytes | None, bytes | None]]:
    """(expected reason, key, value) for every malformed kind."""
    good = make_event("POISON", seq=1).model_dump_json()

    def edit(old: str, new: str, key: bytes = b"POISON") -> tuple[bytes, bytes]:
        assert old in good, old
        return key, good.replace(old, new, 1).encode("utf-8", "surrogatepass")

    ts = good.split('"timestamp":"', 1)[1][:4]
    cases: list[tuple[str, bytes | None, bytes | None]] = [
        ("oversized", b"POISON", good[:-1].encode() + b',"pad":"' + b"x" * 9000 + b'"}'),
        ("not_json", b"POISON", b"{nope"),
        ("not_json", b"POISON", None),  # a tombstone
        ("not_json", b"POISON", good.encode()[:-5]),  # truncated
        ("not_utf8", b"POISON", good.encode().replace(b"POISON", b"POI\xffSON")),
        ("not_object", b"POISON", b"[1,2,3]"),
        ("missing_field", b"POISON", b'{"vehicle_id":"POISON"}'),
        ("wrong_type", *edit('"gear":3', '"gear":"3"')),
        ("wrong_type", *edit('"speed_kmh":42.0', '"speed_kmh":"42.5"')),  # coercible string
        ("wrong_type", *edit('"speeding":false', '"speeding":"yes"')),  # coercible string
        ("wrong_type", *edit('"location":{', '"location":{"alt":1,')),
        ("not_finite", *edit('"speed_kmh":42.0', '"speed_kmh":NaN')),
        ("not_finite", *edit('"fuel_level_pct":71.5', '"fuel_level_pct":Infinity')),
        ("not_finite", *edit('"lat":48.137', '"lat":-Infinity')),
        ("in_future", *edit(f'"timestamp":"{ts}', '"timestamp":"2263')),
        ("in_future", *edit(f'"timestamp":"{ts}', '"timestamp":"9999')),
        ("too_old", *edit(f'"timestamp":"{ts}', '"timestamp":"1970')),
        ("out_of_range", *edit('"seq":1', '"seq":' + "9" * 40)),
        ("out_of_range", *edit('"seq":1', '"seq":-1')),
        ("out_of_range", *edit('"odometer_km":0.0', '"odometer_km":1e308')),
        ("out_of_range", *edit('"schema_version":1', '"schema_version":2147483648')),
        ("out_of_range", *edit('"fault_codes":[]', '"fault_codes":' + orjson.dumps(
            ["P0300"] * 33).decode())),
        ("out_of_range", *edit('"trip_id":""', '"trip_id":"' + "t" * 2000 + '"')),
        ("out_of_range", *edit('"vehicle_id":"POISON"', '"vehicle_id":""', key=b"")),
        ("unprintable", *edit('"vehicle_id":"POISON"', '"vehicle_id":"POI\\u0000SON"',
                              key=b"POI\x00SON")),
        ("unprintable", *edit('"vehicle_id":"POISON"', '"vehicle_id":"\\u001b[2JPOISON"',
                              key=b"\x1b[2JPOISON")),
        ("unprintable", *edit('"vehicle_id":"POISON"', '"vehicle_id":"POI\u202eSON"',
                              key="POI\u202eSON".encode())),
        ("unprintable", *edit('"fault_codes":[]', '"fault_codes":["P03\\u200f00"]')),
        ("key_mismatch", b"OTHERCAR", good.encode()),
        ("key_mismatch", None, good.encode()),
    ]
    return cases


@pytest.fixture
def settings(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path) -> Settings:
    return Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                    kafka_control_topic=topic_factory("control", 1),
                    kafka_status_topic=topic_factory("status", 1), api_token=None,
                    cors_origins=(), analytics_output_dir=tmp_path / "analytics",
                    control_timeout_s=0.5, status_stale_s=2.0, map_tile_url="",
                    backfill_seconds=0)


async def send_all(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]],
                   *, compression: str | None = None, partition: int | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                compression_type=compression)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v, partition=partition)
                   for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def valid(vid: str, seq: int = 0) -> tuple[bytes, bytes]:
    return vid.encode(), make_event(vid, seq=seq).model_dump_json().encode()


async def test_poison_pills_are_counted_and_reach_no_one(settings, monkeypatch) -> None:
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.kafka_topic
    async with running_app(settings) as client:
        consumer, store = client.app[CONSUMER], client.app[STORE]
        await wait_for(lambda: consumer.assigned.is_set())
        baseline = [valid(f"REAL{i}") for i in range(3)]
        await send_all(bootstrap, topic, baseline)
        await wait_for(lambda: store.consumed_total == 3)
        before = await (await client.get("/stats")).json()
        assert before["vehicles_reporting"] == 3 and before["malformed_total"] == 0

        frames: list[dict] = []
        async with client.ws_connect("/ws") as ws:
            assert (await ws.receive_json())["type"] == "snapshot"

            async def collect() -> None:
                async for msg in ws:
                    frames.append(orjson.loads(msg.data))

            reader = asyncio.create_task(collect())

            # 1. every malformed kind, plain and then compressed with each codec
            cases = poison()
            await send_all(bootstrap, topic, [(k, v) for _, k, v in cases])
            for codec in CODECS:
                await send_all(bootstrap, topic, [(k, v) for _, k, v in cases[:6]],
                               compression=codec)
            # 2. valid events compressed with each codec are read (the codecs are installed)
            for codec in CODECS:
                await send_all(bootstrap, topic, [valid(f"ZIP-{codec}", s) for s in range(3)],
                               compression=codec, partition=0)
            await wait_for(lambda: store.consumed_total == 3 + 3 * len(CODECS))
            # 3. a zstd record batch that cannot be decompressed: 4 records in one batch
            real = cramjam.zstd.decompress

            def broken(data: bytes, *args: object) -> bytes:
                raise cramjam.DecompressionError("corrupt frame (injected)")

            monkeypatch.setattr(cramjam.zstd, "decompress", broken)
            await send_all(bootstrap, topic, [valid("LOST", s) for s in range(4)],
                           compression="zstd", partition=1)
            expected = Counter(kind for kind, _, _ in cases)
            expected.update(kind for kind, _, _ in cases[:6] * len(CODECS))
            expected["undecodable"] = 4
            try:
                await wait_for(lambda: consumer.malformed.get("undecodable", 0) >= 4, 20)
            except TimeoutError:
                raise AssertionError(f"stuck: {consumer.malformed}, {consumer.positions}") from None
            monkeypatch.setattr(cramjam.zstd, "decompress", real)
            # 4. the consumer moved past it all: a last valid event arrives
            await send_all(bootstrap, topic, [valid("LAST")], partition=1)
            await wait_for(lambda: "LAST" in store.latest)
            try:
                await wait_for(lambda: sum(f.get("type") == "event" for f in frames) == 13, 20)
            except TimeoutError:
                raise AssertionError([f["data"]["vehicle_id"] for f in frames]) from None
            reader.cancel()

        stats = await (await client.get("/stats")).json()
        assert stats["malformed"] == dict(sorted(expected.items()))
        assert set(stats["malformed"]) <= set(MALFORMED_KINDS)
        assert stats["malformed_total"] == sum(expected.values())
        # no replay, no restart: exactly the valid events, consumed once, one connection
        assert stats["consumed_total"] == 3 + 3 * len(CODECS) + 1
        assert consumer.connects == 1 and not consumer.stopped
        cars = {"REAL0", "REAL1", "REAL2", "LAST"} | {f"ZIP-{c}" for c in CODECS}
        assert stats["vehicles_reporting"] == len(cars)
        latest = await (await client.get("/telemetry/latest")).json()
        assert {e["vehicle_id"] for e in latest["items"]} == cars
        recent = await (await client.get("/telemetry/recent?limit=2000")).json()
        assert {e["vehicle_id"] for e in recent["items"]} == cars
        seen = [f["data"]["vehicle_id"] for f in frames if f["type"] == "event"]
        assert sorted(seen) == sorted(["LAST"] + [f"ZIP-{c}" for c in CODECS for _ in range(3)])
        metrics = await (await client.get("/metrics")).text()
        for kind, n in expected.items():
            line = f'fleetstream_webapi_malformed_messages_total{{kind="{kind}"}} {float(n)}'
            assert line in metrics, line
        assert (await client.get("/health")).status == 200


async def test_a_year_9999_event_cannot_freeze_a_real_car(settings) -> None:
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.kafka_topic
    async with running_app(settings) as client:
        consumer, store = client.app[CONSUMER], client.app[STORE]
        await wait_for(lambda: consumer.assigned.is_set())
        now = datetime.now(UTC)
        frozen = make_event("CAR1", timestamp=datetime(9999, 1, 1, tzinfo=UTC), lat=1.0, lon=1.0)
        moving = [make_event("CAR1", seq=i, timestamp=now + timedelta(seconds=i),
                             lat=48.0 + i / 1000) for i in range(1, 4)]
        await send_all(bootstrap, topic, [(b"CAR1", e.model_dump_json().encode())
                                          for e in [frozen, *moving]], partition=0)
        await wait_for(lambda: store.consumed_total + consumer.malformed_total == 4)
        latest = (await (await client.get("/telemetry/latest")).json())["items"]
        assert [(e["vehicle_id"], e["seq"]) for e in latest] == [("CAR1", 3)]
        trail = (await (await client.get("/telemetry/trails")).json())["items"][0]["points"]
        assert [p["lat"] for p in trail] == [48.001, 48.002, 48.003]
        assert consumer.malformed == {"in_future": 1}


async def test_a_batch_with_a_codec_the_client_lacks_is_counted_not_a_restart(
        settings, monkeypatch) -> None:
    """The probe's exact case: zstd records reach a consumer without the codec. aiokafka
    raises UnsupportedCodecError (a KafkaError), which once restarted the consumer in a loop
    and replayed history."""
    import aiokafka.codec

    bootstrap, topic = settings.kafka_bootstrap_servers, settings.kafka_topic
    async with running_app(settings) as client:
        consumer, store = client.app[CONSUMER], client.app[STORE]
        await wait_for(lambda: consumer.assigned.is_set())
        await send_all(bootstrap, topic, [valid("REAL", 0)], partition=2)
        await wait_for(lambda: store.consumed_total == 1)
        tp = TopicPartition(topic, 2)
        assert consumer.client is not None
        consumer.client.pause(tp)  # so nothing is fetched before the codec "goes missing"
        await send_all(bootstrap, topic, [valid("ZSTD", s) for s in range(3)],
                       compression="zstd", partition=2)  # the producer has the codec...
        monkeypatch.setattr(aiokafka.codec, "has_zstd", lambda: False)  # ...the consumer not
        consumer.client.resume(tp)
        await wait_for(lambda: consumer.malformed.get("undecodable", 0) == 3)
        monkeypatch.undo()
        await send_all(bootstrap, topic, [valid("REAL", 1)], partition=2)
        await wait_for(lambda: store.consumed_total == 2)
        stats = await (await client.get("/stats")).json()
        assert stats["malformed"] == {"undecodable": 3}
        assert stats["consumed_total"] == 2 and stats["vehicles_reporting"] == 1
        assert consumer.connects == 1  # never treated as a connection error
