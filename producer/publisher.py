"""The Kafka edge for telemetry: aiokafka's batch API, idempotent, bounded, restartable.

Records of one tick are grouped by partition (murmur2 of the key, as Kafka's default
partitioner does) and appended to ``create_batch()`` builders submitted with
``send_batch()``: no per-record future, no ``send_and_wait``. acks=all and idempotence are
on, so aiokafka retries a batch (same producer id and sequence) until the broker takes it:
a broker restart neither loses nor duplicates an acknowledged record.

``publish`` hands a tick's records to a feeder task and returns: the feeder passes them to
aiokafka in order (``send_batch`` waits while the partition's previous batch is still queued,
and aiokafka keeps one request in flight per broker), so the caller simulates the next tick
meanwhile instead of waiting on the network. Memory is bounded: ``publish`` waits while more
than ``max_in_flight`` records are handed over and not yet acknowledged. A batch that still
fails (e.g. the client itself gave up) is kept and sent again, in order, before any newer
record; the caller's simulation is held meanwhile (its records count as unacknowledged).
``flush`` waits until every record handed over is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

from common.kafka import Target, backoff, client_options, retry

log = logging.getLogger(__name__)

ProducerFactory = Callable[..., Any]
MAX_ATTEMPTS = 5  # for records the broker itself rejects (e.g. too large)
SEQUENCE_ERRORS = frozenset({"OutOfOrderSequenceNumber", "UnknownProducerId",
                             "InvalidProducerEpoch", "ProducerFenced"})
SMALL_GROUP = 32  # fewer records than this for one partition in a tick: per-record send()


@dataclass
class _Batch:
    partition: int
    keys: list[bytes]
    values: list[bytes]
    timestamp_ms: int | None
    attempts: int = 0
    order: int = 0
    rejected: bool = False  # the broker refused the records themselves (not a transient)


@dataclass
class PublisherStats:
    sent: int = 0  # records acknowledged by the broker
    errors: int = 0  # failed batch deliveries (each one retried)
    batches: int = 0
    last_error: str | None = None
    in_flight: int = 0
    dropped: int = 0  # records the broker kept rejecting as invalid (never acknowledged)


@dataclass
class _Plan:
    keys: list[bytes]
    groups: list[tuple[int, np.ndarray]] = field(default_factory=list)


def _fill(builder: Any, keys: list[bytes], values: list[bytes], start: int,
          timestamp_ms: int | None) -> int:
    """Append records ``start``, ``start + 1``... to ``builder`` until it is full; returns the
    index of the first record left out. aiokafka's own builder (no serializers) is filled
    through its compiled record builder directly, as its ``append`` does, without the
    per-record keyword call and metadata check of the Python wrapper."""
    inner = getattr(builder, "_builder", None)
    if (type(builder) is BatchBuilder and inner is not None and not builder._closed
            and builder._key_serializer is None and builder._value_serializer is None):
        append, offset = inner.append, builder._relative_offset
        headers: list[tuple[str, bytes]] = []
        i, n = start, len(values)
        while i < n and append(offset, timestamp_ms, keys[i], values[i], headers) is not None:
            offset += 1
            i += 1
        builder._relative_offset = offset
        if i < n:
            builder.close()  # full, as the wrapper closes it
        return i
    for i in range(start, len(values)):
        if builder.append(key=keys[i], value=values[i], timestamp=timestamp_ms) is None:
            return i
    return len(values)


class Publisher:
    def __init__(self, target: Target, topic: str, *, linger_ms: int = 5,
                 batch_bytes: int = 256 * 1024, max_in_flight: int = 100_000,
                 request_timeout_ms: int = 60_000,
                 producer_factory: ProducerFactory = AIOKafkaProducer) -> None:
        self.target = target  # the producer's settings (or bootstrap servers)
        self.topic = topic
        self.linger_ms = linger_ms
        self.batch_bytes = batch_bytes
        self.max_in_flight = max_in_flight
        self.request_timeout_ms = request_timeout_ms
        self._factory = producer_factory
        self._producer: Any = None
        self._partitions: list[int] = []
        self._plan: _Plan | None = None
        self._failed: list[_Batch] = []
        self._queue: deque[_Batch] = deque()  # handed over by publish, not yet to aiokafka
        self._queued = 0  # records in _queue
        self._last_queued: dict[int, _Batch] = {}  # per partition: its batch last queued
        self._feeder: asyncio.Task[None] | None = None
        self._feeding = False  # the feeder is between taking a batch and handing it over
        self._wake = asyncio.Event()
        self._order = 0
        self._needs_restart = False
        self._settled = asyncio.Event()
        self.stats = PublisherStats()

    def _new_producer(self) -> Any:
        return self._factory(
            **client_options(self.target, "fleetstream-producer"), acks="all",
            enable_idempotence=True, linger_ms=self.linger_ms, max_batch_size=self.batch_bytes,
            request_timeout_ms=self.request_timeout_ms, retry_backoff_ms=200)

    async def start(self) -> None:
        """Connect and learn the topic's partitions (raises if the broker is unreachable)."""
        producer = self._new_producer()
        try:
            await producer.start()
            parts = await producer.partitions_for(self.topic)
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer
        self._partitions = sorted(parts)
        self._plan = None

    async def stop(self) -> None:
        feeder, self._feeder = self._feeder, None
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    def _plan_for(self, keys: list[bytes]) -> _Plan:
        plan = self._plan
        if plan is not None and plan.keys == keys:
            return plan
        n = len(self._partitions)
        part = np.array([(murmur2(k) & 0x7FFFFFFF) % n for k in keys], dtype=np.int64)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(n + 1))
        groups = [(self._partitions[p], order[bounds[p]:bounds[p + 1]])
                  for p in range(n) if bounds[p + 1] > bounds[p]]
        self._plan = _Plan(keys=list(keys), groups=groups)
        return self._plan

    def unacknowledged(self) -> int:
        """Records handed over and neither acknowledged nor dropped yet."""
        return self.stats.in_flight + self._queued + sum(len(b.values) for b in self._failed)

    async def publish(self, keys: list[bytes], values: list[bytes],
                      timestamp_ms: int | None = None) -> None:
        """Hand over one tick's records (key i goes with value i) and return; waits while
        more than ``max_in_flight`` records are unacknowledged (failed ones included). The
        Kafka record time is ``timestamp_ms``, or the send time when None (the event JSON
        carries its own)."""
        self._check_feeder()
        while (pending := self.unacknowledged()) and pending + len(values) > self.max_in_flight:
            await self._wait_progress()
            self._check_feeder()
        for partition, idx in self._plan_for(keys).groups:
            ilist = idx.tolist()
            pkeys = list(map(keys.__getitem__, ilist))
            pvalues = list(map(values.__getitem__, ilist))
            last = self._last_queued.get(partition)
            if last is not None and last.timestamp_ms == timestamp_ms:
                # the partition's records of an earlier tick still wait: these join them, so
                # aiokafka gets full batches (it sends one batch per partition per request)
                last.keys.extend(pkeys)
                last.values.extend(pvalues)
            else:
                batch = _Batch(partition, pkeys, pvalues, timestamp_ms)
                self._queue.append(batch)
                self._last_queued[partition] = batch
            self._queued += len(ilist)
        self._wake.set()

    def _check_feeder(self) -> None:
        """Start the feeder task (raise what it died of, if it did)."""
        if self._feeder is not None and self._feeder.done():
            self._feeder.result()  # a bug: raise it here rather than wait forever
        if self._feeder is None or self._feeder.done():
            self._feeder = asyncio.get_running_loop().create_task(self._feed())
            self._feeder.add_done_callback(lambda _: self._settled.set())  # nobody waits on

    async def _feed(self) -> None:
        """Hand the queued batches to aiokafka in order; re-send failed ones first."""
        while True:
            while self._queue or self._failed:
                await self._resend_failed()  # everything after a failure waits for its re-send
                if self._queue:
                    batch = self._queue.popleft()
                    if self._last_queued.get(batch.partition) is batch:
                        del self._last_queued[batch.partition]
                    self._feeding = True
                    try:
                        self._queued -= len(batch.values)
                        await self._submit(batch)
                    finally:
                        self._feeding = False
            self._settled.set()  # flush and publish look again
            self._wake.clear()
            if not (self._queue or self._failed):
                await self._wake.wait()

    async def _wait_progress(self) -> None:
        """Until a batch settles or the feeder has passed everything on."""
        self._settled.clear()
        await self._settled.wait()

    async def _submit(self, batch: _Batch) -> None:
        """Append ``batch``'s records to as many builders as needed and hand them over."""
        producer = self._producer
        if len(batch.values) < SMALL_GROUP:
            # A few records: send() lets them share the partition's open batch with the next
            # ticks' records (send_batch would wait a linger period per tick).
            for k, v in zip(batch.keys, batch.values, strict=True):
                await self._send_one(_Batch(batch.partition, [k], [v], batch.timestamp_ms,
                                            attempts=batch.attempts))
            return
        first, n = 0, len(batch.values)
        while first < n:
            builder = producer.create_batch()
            end = _fill(builder, batch.keys, batch.values, first, batch.timestamp_ms)
            if end == first:  # one record bigger than a batch: it goes alone (or is refused)
                builder.append(key=batch.keys[first], value=batch.values[first],
                               timestamp=batch.timestamp_ms)
                end += 1
            await self._send(builder, _Batch(batch.partition, batch.keys[first:end],
                                             batch.values[first:end], batch.timestamp_ms,
                                             attempts=batch.attempts))
            first = end

    async def _send(self, builder: Any, batch: _Batch) -> None:
        self._order += 1
        batch.order = self._order
        batch.attempts += 1
        self.stats.in_flight += len(batch.values)
        try:
            fut = await self._producer.send_batch(builder, self.topic, partition=batch.partition)
        except Exception as exc:  # closed or timed out waiting for room: keep for a re-send
            self.stats.in_flight -= len(batch.values)
            self._record_failure(batch, exc)
            return
        fut.add_done_callback(lambda f, b=batch: self._done(b, f))
        self.stats.batches += 1

    async def _send_one(self, batch: _Batch) -> None:
        self._order += 1
        batch.order = self._order
        batch.attempts += 1
        self.stats.in_flight += 1
        try:
            fut = await self._producer.send(self.topic, value=batch.values[0], key=batch.keys[0],
                                            partition=batch.partition,
                                            timestamp_ms=batch.timestamp_ms)
        except Exception as exc:
            self.stats.in_flight -= 1
            self._record_failure(batch, exc)
            return
        fut.add_done_callback(lambda f, b=batch: self._done(b, f))

    def _done(self, batch: _Batch, fut: asyncio.Future[Any]) -> None:
        self.stats.in_flight -= len(batch.values)
        if fut.cancelled():
            self._record_failure(batch, asyncio.CancelledError())
        elif fut.exception() is not None:
            self._record_failure(batch, fut.exception())
        else:
            self.stats.sent += len(batch.values)
        self._settled.set()

    def _record_failure(self, batch: _Batch, exc: BaseException | None) -> None:
        if not getattr(exc, "retriable", False):
            # e.g. OutOfOrderSequenceNumber: aiokafka keeps failing that partition until the
            # client is replaced (aio-libs/aiokafka#1017); rejected records were not written.
            self._needs_restart = True
            batch.rejected = type(exc).__name__ not in SEQUENCE_ERRORS
        self.stats.errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("batch of %d records to partition %d failed (%s); will re-send",
                    len(batch.values), batch.partition, self.stats.last_error)
        self._failed.append(batch)
        self._wake.set()  # the feeder re-sends it

    async def _wait_settled(self) -> None:
        """Until at least one more batch settles (no-op when nothing is in flight)."""
        self._settled.clear()
        if self.stats.in_flight:
            await self._settled.wait()

    async def _resend_failed(self) -> None:
        """Hold new records until every failed batch went through, oldest first."""
        attempt = 0
        while self._failed:
            while self.stats.in_flight:  # let everything older settle first
                await self._wait_settled()
            failed, self._failed = sorted(self._failed, key=lambda b: b.order), []
            if self._producer is None or self._needs_restart or self._broken():
                self._needs_restart = False
                await self._restart()
            for batch in failed:
                if batch.rejected and batch.attempts >= MAX_ATTEMPTS:
                    self.stats.dropped += len(batch.values)
                    log.error("dropping %d records the broker rejected %d times (%s)",
                              len(batch.values), batch.attempts, self.stats.last_error)
                    continue
                batch.rejected = False
                await self._submit(batch)
            await self._drain()
            if self._failed:
                attempt += 1
                await asyncio.sleep(backoff(attempt, first_delay_s=0.2))

    def _broken(self) -> bool:
        """The client's sender stopped for good (e.g. a fatal sequence error)."""
        sender = getattr(self._producer, "_sender", None)
        task = getattr(sender, "sender_task", None)
        return task is not None and task.done()

    async def _restart(self) -> None:
        log.warning("restarting the Kafka producer client")
        old, self._producer = self._producer, None
        if old is not None:
            try:
                await asyncio.wait_for(old.stop(), 10)
            except Exception as exc:  # it is being replaced anyway
                log.debug("stopping the old producer: %s", exc)
        await retry(self.start, "telemetry producer", None)  # until connected, or cancelled

    async def _drain(self) -> None:
        while self.stats.in_flight:
            await self._wait_settled()

    async def flush(self) -> None:
        """Wait until every record handed over so far is acknowledged (re-sending failures)."""
        while self._queue or self._failed or self._feeding or self.stats.in_flight:
            self._check_feeder()
            self._wake.set()
            await self._wait_progress()
