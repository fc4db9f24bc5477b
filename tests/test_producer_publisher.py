"""The telemetry publisher with an in-memory stand-in for aiokafka: ``publish`` hands a tick
over and returns before the broker acknowledges it, the feeder passes batches on in order,
the number of unacknowledged records stays bounded, ``flush`` waits for every one of them, and
a failed batch is sent again before any newer record. (The real broker, a broker restart
included: test_producer_kafka.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from producer.publisher import Publisher, _fill


class Retriable(Exception):
    retriable = True


class FakeBuilder:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes, bytes]] = []

    def append(self, *, key: bytes, value: bytes, timestamp: int | None) -> object | None:
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return object()


class FakeProducer:
    """Records every batch handed over with its future; the test settles the futures."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.sent: list[tuple[int, list[bytes], asyncio.Future[None]]] = []
        self.gate: asyncio.Event | None = None  # when set up: send_batch waits for it

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder(16)

    async def send_batch(self, builder: FakeBuilder, topic: str, *,
                         partition: int) -> asyncio.Future[None]:
        if self.gate is not None:  # as aiokafka waits for the partition's queued batch
            await self.gate.wait()
        fut = asyncio.get_running_loop().create_future()
        self.sent.append((partition, [v for _, v in builder.records], fut))
        return fut

    async def send(self, topic: str, *, value: bytes, key: bytes, partition: int,
                   timestamp_ms: int | None) -> asyncio.Future[None]:
        fut = asyncio.get_running_loop().create_future()
        self.sent.append((partition, [value], fut))
        return fut

    def ack(self, exc: Exception | None = None, first: int | None = None) -> int:
        """Settle the open futures (the first ``first`` of them): ok, or failed with exc."""
        n = 0
        for _, _, fut in self.sent:
            if not fut.done() and (first is None or n < first):
                if exc is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)
                n += 1
        return n


def _tick(k: int, n: int = 120) -> tuple[list[bytes], list[bytes]]:
    keys = [f"CAR{i:03d}".encode() for i in range(n)]
    return keys, [f"{k}:{i}".encode() for i in range(n)]


async def _publisher(max_in_flight: int = 100_000) -> tuple[Publisher, FakeProducer]:
    made: list[FakeProducer] = []

    def factory(**options: Any) -> FakeProducer:
        made.append(FakeProducer(**options))
        return made[-1]

    pub = Publisher("localhost:9", "t", max_in_flight=max_in_flight, producer_factory=factory)
    await pub.start()
    assert made[0].options["acks"] == "all" and made[0].options["enable_idempotence"]
    return pub, made[0]


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_publish_returns_before_the_acks_and_flush_waits_for_them() -> None:
    pub, fake = await _publisher()
    try:
        for k in range(3):
            await pub.publish(*_tick(k))
        await _settle()
        handed = [v for _, values, _ in fake.sent for v in values]
        assert sorted(handed) == sorted(v for k in range(3) for v in _tick(k)[1])
        assert pub.stats.sent == 0 and pub.unacknowledged() == 360
        flush = asyncio.create_task(pub.flush())
        await _settle()
        assert not flush.done()
        fake.ack()
        await asyncio.wait_for(flush, 10)
        assert pub.stats.sent == 360 and pub.unacknowledged() == 0
        for part in (0, 1, 2):  # each partition gets its records tick after tick
            ticks = [int(v.split(b":")[0]) for p, values, _ in fake.sent if p == part
                     for v in values]
            assert ticks == sorted(ticks) and len(ticks) > 0
    finally:
        await pub.stop()


async def test_publish_waits_while_too_many_records_are_unacknowledged() -> None:
    pub, fake = await _publisher(max_in_flight=150)
    try:
        await pub.publish(*_tick(0))
        second = asyncio.create_task(pub.publish(*_tick(1)))
        await _settle()
        assert not second.done() and pub.unacknowledged() == 120
        fake.ack()
        await asyncio.wait_for(second, 10)
        assert pub.stats.sent == 120 and pub.unacknowledged() == 120
        fake.ack()
        await asyncio.wait_for(pub.flush(), 10)
        assert pub.stats.sent == 240
    finally:
        await pub.stop()


async def test_a_failed_batch_goes_again_before_newer_records() -> None:
    pub, fake = await _publisher()
    try:
        await pub.publish(*_tick(0))
        await _settle()
        assert fake.ack(Retriable("broker away"), first=1) == 1
        failed, sent_before = set(fake.sent[0][1]), len(fake.sent)
        await pub.publish(*_tick(1))
        await _settle()
        assert len(fake.sent) == sent_before  # tick 1 waits behind the failed batch
        fake.ack()  # the rest of tick 0 settles; then the failed records go first
        await _settle()
        fake.ack()  # and are acknowledged before tick 1 goes
        await _settle()
        later = fake.sent[sent_before:]
        again = [i for i, (_, values, _) in enumerate(later) if failed & set(values)]
        new = [i for i, (_, values, _) in enumerate(later) if values[0].startswith(b"1:")]
        assert again and new and max(again) < min(new)
        while fake.ack():
            await _settle()
        await asyncio.wait_for(pub.flush(), 10)
        assert pub.stats.errors == 1 and pub.stats.sent == 240 and pub.unacknowledged() == 0
        acked = [v for _, values, fut in fake.sent if not fut.exception() for v in values]
        assert sorted(acked) == sorted(_tick(0)[1] + _tick(1)[1])  # each once
    finally:
        await pub.stop()


async def test_ticks_waiting_for_the_client_join_into_bigger_batches() -> None:
    pub, fake = await _publisher()
    fake.create_batch = lambda: FakeBuilder(100)  # type: ignore[method-assign]
    fake.gate = asyncio.Event()
    try:
        for k in range(4):
            await pub.publish(*_tick(k))
            await _settle()
        assert fake.sent == [] and pub.unacknowledged() == 480
        fake.gate.set()
        flush = asyncio.create_task(pub.flush())
        while not flush.done():
            fake.ack()
            await _settle()
        await flush
        assert pub.stats.sent == 480
        # ticks 1 to 3 waited behind tick 0: per partition they went as one run of records
        mixed = [values for _, values, _ in fake.sent
                 if len({v.split(b":")[0] for v in values}) > 1]
        assert mixed and len(fake.sent) < 4 * 3
        for part in (0, 1, 2):
            order = [v for p, values, _ in fake.sent if p == part for v in values]
            assert order == sorted(order, key=lambda v: int(v.split(b":")[0]))
    finally:
        await pub.stop()


async def test_stop_ends_the_feeder() -> None:
    pub, fake = await _publisher()
    await pub.publish(*_tick(0))
    await _settle()
    feeder = pub._feeder
    assert feeder is not None and not feeder.done()
    await pub.stop()
    assert feeder.done() and pub._producer is None


def test_fill_builds_the_batch_aiokafka_append_builds() -> None:
    """``_fill`` appends through aiokafka's compiled builder; the batch bytes, the record count
    and where it stops when full are the wrapper's."""
    keys, values = _tick(0, 400)
    values = [v * 40 for v in values]
    fast, slow = BatchBuilder(16 * 1024, 0), BatchBuilder(16 * 1024, 0)
    end = _fill(fast, keys, values, 3, 1_700_000_000_000)
    i = 3
    while slow.append(key=keys[i], value=values[i], timestamp=1_700_000_000_000) is not None:
        i += 1
    assert 3 < end == i < 400
    assert fast.record_count() == slow.record_count() == end - 3 and fast.closed()
    assert fast._build() == slow._build()
    other = BatchBuilder(1 << 20, 0)
    assert _fill(other, keys, values, 0, None) == 400 and other.record_count() == 400
