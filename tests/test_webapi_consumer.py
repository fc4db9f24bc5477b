"""The telemetry consumer's pass over what it fetched, with an in-memory stand-in for the
Kafka client (the real broker is in test_webapi_ws, test_webapi_fanout, test_webapi_partitions):
chunks taken from each partition in turn, and the event loop runs between them."""

from __future__ import annotations

import asyncio
import time
import unicodedata
from datetime import UTC, datetime, timedelta, timezone

import orjson
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from common.contract import _UNPRINTABLE, format_timestamp, is_printable_id
from tests.support.webapi import make_event
from webapi.consumer import CHUNK, TelemetryConsumer
from webapi.decode import Limits, decode
from webapi.hub import Hub
from webapi.metrics import Metrics
from webapi.settings import Settings
from webapi.store import TelemetryStore

TOPIC = "t"


def record(partition: int, offset: int, vehicle: str, seq: int) -> ConsumerRecord[bytes, bytes]:
    value = make_event(vehicle, seq=seq).model_dump_json().encode()
    return ConsumerRecord(TOPIC, partition, offset, 0, 0, vehicle.encode(), value, None,
                          len(vehicle), len(value), [])


def consumer() -> TelemetryConsumer:
    settings = Settings(kafka_topic=TOPIC)
    store = TelemetryStore(recent_size=1000, violations_size=100, max_vehicles=1000,
                           trail_points=10)
    metrics = Metrics()
    return TelemetryConsumer(settings, store, Hub(metrics, 5000, 10), metrics)


async def test_a_fetch_is_taken_partition_by_partition_in_turns_with_the_loop_between() -> None:
    c = consumer()
    sub = c.hub.subscribe(None)
    per_partition = CHUNK * 2 + 3  # two whole chunks and a part, in each of three partitions
    fetched = [(TopicPartition(TOPIC, p),
                [record(p, 100 + i, f"P{p}CAR{i % 4}", i) for i in range(per_partition)])
               for p in range(3)]
    seen_between: list[int] = []  # what a sender would find queued when it gets a turn

    async def sender() -> None:
        while True:
            seen_between.append(len(sub.queue))
            await asyncio.sleep(0)

    task = asyncio.create_task(sender())
    await asyncio.sleep(0)
    assert await c._take_fetched(fetched) == 3 * per_partition
    task.cancel()

    frames = [orjson.loads(f)["data"] for f in sub.queue]
    order = [(e["vehicle_id"][:2], e["seq"]) for e in frames]
    expected = [(f"P{p}", i) for start in range(0, per_partition, CHUNK) for p in range(3)
                for i in range(start, min(start + CHUNK, per_partition))]
    assert order == expected  # each partition's first chunk before any partition's second
    # the loop ran after each turn but the last, seeing each turn's frames queued
    assert [n for n in seen_between if 0 < n < 3 * per_partition] == [3 * CHUNK, 6 * CHUNK]
    assert c.positions == {tp: 100 + per_partition for tp, _ in fetched}
    assert c.store.consumed_total == 3 * per_partition


def test_the_decoders_shortcuts_give_what_the_long_ways_give() -> None:
    # ASCII ids: isprintable() refuses exactly the characters of the refused categories
    for i in range(128):
        c = chr(i)
        assert is_printable_id(f"CAR{c}1") == (unicodedata.category(c) not in _UNPRINTABLE), i
    assert not is_printable_id("CAR\u202e1") and is_printable_id("CAR\u00e91")
    # the trail point's timestamp is cut out of the serialised event: the same text, whatever
    # the offset, even when the id itself spells '"timestamp":"'
    for offset in (timedelta(0), timedelta(hours=5, minutes=30), timedelta(hours=-3)):
        when = datetime.now(UTC).astimezone(timezone(offset)).replace(microsecond=0)
        ev = make_event('ID"timestamp":"X', timestamp=when, lat=-33.5, lon=151.25,
                        speed_kmh=12.5)
        value = ev.model_dump_json().encode()
        entry = decode(value, ev.vehicle_id.encode(), Limits(), time.time())
        assert orjson.loads(entry.trail_point) == {
            "timestamp": format_timestamp(when), "lat": -33.5, "lon": 151.25, "speed_kmh": 12.5}
        assert entry.ts == when.timestamp()
        assert orjson.loads(entry.raw) == orjson.loads(value)
