"""The Kafka edge for remote control: the command reader and the status writer.

Every producer reads every command (no consumer group), starting at the end of the
control topic, and answers on the status topic (key = producer id). An instance joining a
group (PRODUCER_GROUP) reads the status topic's tail to take on the fleet's running state,
rate and size from the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from common.contract import ProducerStatus
from common.kafka import Target, make_consumer, make_producer

log = logging.getLogger(__name__)


class ControlChannel:
    """Commands in from the control topic, statuses out to the status topic."""

    def __init__(self, target: Target, control_topic: str, status_topic: str) -> None:
        self.target = target  # the producer's settings (or bootstrap servers)
        self.control_topic = control_topic
        self.status_topic = status_topic
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._unsent: set[asyncio.Future[object]] = set()

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
                await consumer.position(tp)
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

    async def publish(self, status: ProducerStatus) -> None:
        """Send a status without waiting for the broker; a few may be pending at most."""
        if self._producer is None:
            return
        if len(self._unsent) >= 8:
            log.debug("status topic unreachable; dropping a status message")
            return
        fut = await self._producer.send(
            self.status_topic, key=status.producer_id.encode(),
            value=status.model_dump_json().encode())
        self._unsent.add(fut)
        fut.add_done_callback(self._sent)

    async def recent_statuses(self, count: int = 256) -> list[ProducerStatus]:
        """The last ``count`` statuses on the status topic, oldest first (malformed ones
        skipped): what the other instances of a group were doing a moment ago."""
        consumer = make_consumer(self.target, client_id="fleetstream-status-reader",
                                 group_id=None, enable_auto_commit=False)
        out: list[ProducerStatus] = []
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(self.status_topic) or {0}
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
                                out.append(ProducerStatus.model_validate_json(rec.value))
                for tp in list(pending):
                    if await consumer.position(tp) >= ends[tp]:
                        pending.discard(tp)
        finally:
            await consumer.stop()
        return sorted(out, key=lambda st: st.updated_at)

    def _sent(self, fut: asyncio.Future[object]) -> None:
        self._unsent.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.debug("status not delivered: %s", fut.exception())
