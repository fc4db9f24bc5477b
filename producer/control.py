"""The Kafka edge for remote control: the command reader and the status writer.

Every producer reads every command (no consumer group), starting at the end of the
control topic, and answers on the status topic (key = producer id). An instance joining a
group (PRODUCER_GROUP) reads the status topic back from its end to take on the fleet's
running state, rate and size from the freshest status of the others.

A status is sent without waiting for the broker. Routine statuses (the periodic one, replies
to commands refused as malformed or unauthorized) are dropped while
:data:`MAX_PENDING_ROUTINE` are unacknowledged, so a flood of junk commands cannot queue
replies without end; a reply to a well-formed, authorized command is always sent (the client
waits for room, which holds the command reader back instead of losing the answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from common.contract import ProducerStatus, read_status
from common.kafka import Target, make_consumer, make_producer

log = logging.getLogger(__name__)
MAX_PENDING_ROUTINE = 8
"""Routine statuses unacknowledged at most; more are dropped (see the module's docstring)."""
MAX_RECENT_COMMANDS = 100_000
"""Most records :meth:`ControlChannel.recent_commands` reads back per partition."""
MAX_STATUS_SCAN = 100_000
"""Most records :meth:`ControlChannel.freshest_status` reads back per partition."""


class ControlChannel:
    """Commands in from the control topic, statuses out to the status topic."""

    def __init__(self, target: Target, control_topic: str, status_topic: str) -> None:
        self.target = target  # the producer's settings (or bootstrap servers)
        self.control_topic = control_topic
        self.status_topic = status_topic
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._unsent: set[asyncio.Future[object]] = set()
        self._routine: set[asyncio.Future[object]] = set()
        self._live: dict[TopicPartition, int] = {}  # where reading commands began

    async def start(self) -> None:
        """Connect; once this returns, every command published afterwards is seen."""
        producer = make_producer(self.target, "fleetstream-status", acks=1, linger_ms=0,
                                 request_timeout_ms=10_000)
        consumer = make_consumer(self.target, client_id="fleetstream-control", group_id=None,
                                 enable_auto_commit=False, auto_offset_reset="latest")
        try:
            await producer.start()
            await consumer.start()
            parts = await producer.partitions_for(self.control_topic)
            tps = [TopicPartition(self.control_topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:  # resolve the offsets now, not at the first fetch
                self._live[tp] = await consumer.position(tp)
        except BaseException:
            await consumer.stop()
            await producer.stop()
            raise
        self._consumer, self._producer = consumer, producer

    async def stop(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        if consumer is not None:
            await consumer.stop()
        if producer is not None:
            if self._unsent:
                await asyncio.wait(self._unsent, timeout=2.0)
            await producer.stop()

    async def commands(self) -> AsyncIterator[bytes]:
        """Raw command values, forever (the broker being away just means none arrive)."""
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=100)
            for records in batches.values():
                for rec in records:
                    if rec.value is not None:
                        yield rec.value

    async def publish(self, status: ProducerStatus, *, essential: bool = False) -> None:
        """Send a status without waiting for the broker. A routine one is dropped while
        MAX_PENDING_ROUTINE are pending; an ``essential`` one (the reply to a command that
        was taken) never is."""
        if self._producer is None:
            return
        if not essential and len(self._routine) >= MAX_PENDING_ROUTINE:
            log.debug("status topic slow or unreachable; dropping a routine status")
            return
        fut = await self._producer.send(
            self.status_topic, key=status.producer_id.encode(),
            value=status.model_dump_json().encode())
        self._unsent.add(fut)
        if not essential:
            self._routine.add(fut)
        fut.add_done_callback(self._sent)

    async def recent_commands(self, since_s: float) -> AsyncIterator[bytes]:
        """The command values written in the last ``since_s`` seconds before this channel
        started reading (by record time, at most MAX_RECENT_COMMANDS per partition): a
        restarted producer learns which signed commands it may already have obeyed."""
        if not self._live:
            return
        consumer = make_consumer(self.target, client_id="fleetstream-control-reader",
                                 group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = list(self._live)
            consumer.assign(tps)
            since_ms = int((time.time() - since_s) * 1000)
            found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
            pending = set()
            for tp in tps:
                end = self._live[tp]
                at = found[tp].offset if found.get(tp) is not None else end
                start = max(at, end - MAX_RECENT_COMMANDS)
                if start < end:
                    consumer.seek(tp, start)
                    pending.add(tp)
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=1000)
                for tp, records in batch.items():
                    for rec in records:
                        if rec.value is not None and rec.offset < self._live[tp]:
                            yield rec.value
                for tp in list(pending):
                    if await consumer.position(tp) >= self._live[tp]:
                        pending.discard(tp)
        finally:
            await consumer.stop()

    async def freshest_status(self, since: datetime, accept: Callable[[ProducerStatus], bool],
                              chunk: int = 256) -> ProducerStatus | None:
        """The freshest status on the status topic published since ``since`` (by record time)
        that ``accept`` takes: what the other instances of a group were doing a moment ago.

        The topic is read back from its end ``chunk`` records at a time, each chunk only if
        the later ones held no such status, down to ``since`` and at most MAX_STATUS_SCAN
        records per partition. So memory stays bounded, and junk written after the real
        status (a flood of unsigned or malformed records) cannot hide it: it only costs
        reading."""
        consumer = make_consumer(self.target, client_id="fleetstream-status-reader",
                                 group_id=None, enable_auto_commit=False)
        best: ProducerStatus | None = None
        await consumer.start()
        try:  # a fresh consumer knows no partitions yet: ask through the producer
            parts = (await self._producer.partitions_for(self.status_topic)
                     if self._producer is not None else None) or {0}
            tps = [TopicPartition(self.status_topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            found = await consumer.offsets_for_times(
                dict.fromkeys(tps, int(since.timestamp() * 1000)))
            for tp in tps:
                at = found[tp].offset if found.get(tp) is not None else ends[tp]
                low, high = max(at, ends[tp] - MAX_STATUS_SCAN), ends[tp]
                if low > at:
                    log.warning("status topic %s: %d records since %s, reading the last %d",
                                tp, ends[tp] - at, since.isoformat(), MAX_STATUS_SCAN)
                while high > low:
                    begin = max(low, high - chunk)
                    taken = [st for st in await self._read_statuses(consumer, tp, begin, high)
                             if accept(st)]
                    if taken:
                        freshest = max(taken, key=lambda st: st.updated_at)
                        if best is None or freshest.updated_at > best.updated_at:
                            best = freshest
                        break
                    high = begin
        finally:
            await consumer.stop()
        return best

    @staticmethod
    async def _read_statuses(consumer: AIOKafkaConsumer, tp: TopicPartition, begin: int,
                             end: int) -> list[ProducerStatus]:
        """The valid statuses at offsets ``begin`` to ``end`` of ``tp`` (others skipped)."""
        out: list[ProducerStatus] = []
        consumer.seek(tp, begin)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for rec in batch.get(tp, ()):
                if rec.value is not None and rec.offset < end:
                    with contextlib.suppress(ValidationError):
                        out.append(read_status(rec.value))
        return out

    def _sent(self, fut: asyncio.Future[object]) -> None:
        self._unsent.discard(fut)
        self._routine.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.debug("status not delivered: %s", fut.exception())
