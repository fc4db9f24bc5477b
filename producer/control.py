"""The Kafka edge for remote control: the command reader and the status writer.

Every producer reads every command (no consumer group), starting at the end of the
control topic, and answers on the status topic (key = producer id). An instance joining a
group (PRODUCER_GROUP) reads the status topic's tail to take on the fleet's running state,
rate and size from the others.

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
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from common.contract import ProducerStatus, read_status
from common.kafka import Target, make_consumer, make_producer

log = logging.getLogger(__name__)
MAX_PENDING_ROUTINE = 8
"""Routine statuses unacknowledged at most; more are dropped (see the module's docstring)."""
MAX_RECENT_COMMANDS = 100_000
"""Most records :meth:`ControlChannel.recent_commands` reads back per partition."""


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

    async def recent_statuses(self, count: int = 256) -> list[ProducerStatus]:
        """The last ``count`` statuses on the status topic, oldest first (malformed ones
        skipped): what the other instances of a group were doing a moment ago."""
        consumer = make_consumer(self.target, client_id="fleetstream-status-reader",
                                 group_id=None, enable_auto_commit=False)
        out: list[ProducerStatus] = []
        await consumer.start()
        try:  # a fresh consumer knows no partitions yet: ask through the producer
            parts = (await self._producer.partitions_for(self.status_topic)
                     if self._producer is not None else None) or {0}
            tps = [TopicPartition(self.status_topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, max(0, ends[tp] - count))
            pending = {tp for tp in tps if ends[tp] > 0}
            while pending:
                batch = await consumer.getmany(*pending, timeout_ms=1000)
                for tp, records in batch.items():
                    for rec in records:
                        if rec.value is not None and rec.offset < ends[tp]:
                            with contextlib.suppress(ValidationError):
                                out.append(read_status(rec.value))
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
        finally:
            await consumer.stop()
        return sorted(out, key=lambda st: st.updated_at)

    def _sent(self, fut: asyncio.Future[object]) -> None:
        self._unsent.discard(fut)
        self._routine.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.debug("status not delivered: %s", fut.exception())
