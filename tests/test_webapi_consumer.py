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
    batch_client = c.hub.subscribe(None, batch_tick=0.05)
    group = batch_client.group
    assert group is not None
    per_partition = CHUNK * 2 + 3  # two whole chunks and a part, in each of three partitions
    fetched = [(TopicPartition(TOPIC, p),
                [record(p, 100 + i, f"P{p}CAR{i % 4}", i) for i in range(per_partition)])
               for p in range(3)]
    seen_between: list[int] = []  # what a sender would find queued when it gets a turn

    group_woken: list[bool] = []

    async def sender() -> None:
        while True:
            seen_between.append(len(sub.queue))
            group_woken.append(group.wake.is_set())
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
    # batch clients: held during the turns, then the whole pass in one frame
    assert not any(group_woken) and not batch_client.queue
    c.hub.release()
    for _ in range(100):
        if batch_client.queue:
            break
        await asyncio.sleep(0.01)
    assert [len(orjson.loads(f)["items"]) for f in batch_client.queue] == [3 * per_partition]
    c.hub.unsubscribe(batch_client)


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


class Topic:
    """The records of each partition; ``published`` of them are on the topic so far."""

    def __init__(self, partitions: int, per_partition: int) -> None:
        self.records = {TopicPartition(TOPIC, p): [record(p, i, f"CAR{p}", i)
                                                   for i in range(per_partition)]
                        for p in range(partitions)}
        self.published = 0


class StandIn:
    """An AIOKafkaConsumer stand-in reading ``topic``; a ``stuck`` one fetches nothing (what
    a client did once after a broker restart)."""

    def __init__(self, topic: Topic, stuck: bool) -> None:
        self.topic, self.stuck = topic, stuck
        self.pos: dict[TopicPartition, int] = {}
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    def assign(self, tps: list[TopicPartition]) -> None:
        self.pos = {tp: 0 for tp in tps}

    def assignment(self) -> set[TopicPartition]:
        return set(self.pos)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.pos[tp] = offset

    async def position(self, tp: TopicPartition) -> int:
        return self.pos[tp]

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.topic.published for tp in tps}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {tp.partition for tp in self.topic.records}

    async def getmany(self, *tps: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict:
        out = {}
        if not self.stuck:
            for tp in tps or tuple(self.pos):
                end = min(self.topic.published, self.pos[tp] + (max_records or 10**9))
                if end > self.pos[tp]:
                    out[tp] = self.topic.records[tp][self.pos[tp]:end]
                    self.pos[tp] = end
        if not out:
            await asyncio.sleep(min(timeout_ms, 50) / 1000)
        return out


def with_stand_ins(monkeypatch, topic: Topic, *clients: StandIn) -> TelemetryConsumer:
    """A consumer whose clients are ``clients`` in turn (the last one again after that)."""
    import webapi.consumer as module

    made: list[StandIn] = []

    def make_consumer(*args, **kwargs) -> StandIn:
        made.append(clients[min(len(made), len(clients) - 1)])
        return made[-1]

    async def await_partitions(*args, **kwargs) -> list[TopicPartition]:
        return sorted(topic.records)

    monkeypatch.setattr(module, "make_consumer", make_consumer)
    monkeypatch.setattr(module, "await_partitions", await_partitions)
    monkeypatch.setattr(module, "backoff", lambda attempt: 0.01)
    c = consumer()
    c.settings = Settings(kafka_topic=TOPIC, backfill_seconds=0)
    c.stall_s = 0.3  # WEBAPI_STALL_S is at least 1 s; a short window keeps the tests short
    return c


async def until(predicate, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)


async def test_a_client_that_receives_nothing_while_the_topic_grows_is_replaced(
        monkeypatch) -> None:
    topic = Topic(partitions=2, per_partition=5)
    stuck, healthy = StandIn(topic, stuck=True), StandIn(topic, stuck=False)
    c = with_stand_ins(monkeypatch, topic, stuck, healthy)
    c.start()
    try:
        await until(lambda: c.assigned.is_set())
        topic.published = 5  # written after the consumer started, never fetched by ``stuck``
        await until(lambda: c.store.consumed_total == 10)
        # replaced, and the new client went on from where the stuck one was: nothing skipped
        assert c.store.consumed_total == 10 and c.connects == 2 and stuck.stopped
        assert not c.stopped
    finally:
        await c.close()


async def test_an_idle_topic_keeps_its_client(monkeypatch) -> None:
    topic = Topic(partitions=2, per_partition=3)
    topic.published = 3  # all before the start: read from the end, nothing new comes
    client = StandIn(topic, stuck=False)
    c = with_stand_ins(monkeypatch, topic, client)
    c.start()
    try:
        await until(lambda: c.assigned.is_set())
        await asyncio.sleep(1.2)  # four stall windows
        assert c.store.consumed_total == 0 and c.connects == 1 and not client.stopped
        assert c.positions == {tp: 3 for tp in topic.records}
    finally:
        await c.close()


async def test_an_unexpected_error_restarts_the_client_rather_than_ending_the_consumer(
        monkeypatch) -> None:
    class Broken(StandIn):
        async def start(self) -> None:
            raise RuntimeError("not a Kafka error")

    topic = Topic(partitions=1, per_partition=4)
    healthy = StandIn(topic, stuck=False)
    c = with_stand_ins(monkeypatch, topic, Broken(topic, stuck=False), healthy)
    c.start()
    try:
        await until(lambda: c.assigned.is_set())
        topic.published = 4
        await until(lambda: c.store.consumed_total == 4)
        assert c.store.consumed_total == 4 and c.connects == 2 and not c.stopped
    finally:
        await c.close()


async def test_a_position_that_never_comes_replaces_the_client(monkeypatch) -> None:
    class Resetting(StandIn):  # aiokafka waits for an out-of-range reset as long as it takes
        async def position(self, tp: TopicPartition) -> int:
            await asyncio.Event().wait()
            return 0

    topic = Topic(partitions=2, per_partition=3)
    resetting, healthy = Resetting(topic, stuck=False), StandIn(topic, stuck=False)
    c = with_stand_ins(monkeypatch, topic, resetting, healthy)
    c.start()
    try:
        await until(lambda: c.assigned.is_set())
        topic.published = 3
        await until(lambda: c.store.consumed_total == 6)
        assert c.store.consumed_total == 6 and c.connects == 2 and resetting.stopped
    finally:
        await c.close()
