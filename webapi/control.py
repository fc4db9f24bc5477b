"""The control channel to the producer daemon(s), over Kafka.

Commands (:class:`common.contract.ControlCommand`) go to the control topic, keyed by their
command_id and, when FLEETSTREAM_API_TOKEN is set, signed with it (HMAC-SHA256 with a
timestamp; producers holding the token refuse unsigned, forged and stale commands). Every
producer answers on the status topic with a :class:`common.contract.ProducerStatus` whose
``reply_to`` is that id, and publishes its status every second. This side reads the status
topic from its end (no consumer group), keeps the latest status per producer, and matches
replies to waiting commands.

What it takes from the status topic: statuses within the contract's bounds
(:func:`common.contract.read_status`), stamped within MAX_CLOCK_SKEW_S of this clock and no
older than the producer's last one; with FLEETSTREAM_API_TOKEN set, only statuses signed with
it (producers holding the token sign theirs), so writing to the topic is not enough to fake a
producer or a reply. At most MAX_PRODUCERS_TRACKED producers are kept: a new id finds room
only among statuses older than WEBAPI_STATUS_STALE_S, never by evicting a live producer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from common.contract import (
    MAX_CLOCK_SKEW_S,
    ControlCommand,
    ProducerStatus,
    read_status,
    sign_command,
    status_in_future,
    status_signed,
)
from common.kafka import (
    KafkaEdgeError,
    TopicSpec,
    backoff,
    ensure_topics,
    make_consumer,
    make_producer,
)
from common.lifecycle import cancel_and_wait, finish_first
from common.logs import RateLimitedLog
from webapi.settings import Settings

log = logging.getLogger(__name__)

MAX_PRODUCERS_TRACKED = 256


class ControlUnavailable(Exception):
    """No producer answered (or Kafka is unreachable): the API answers 503."""


class ControlChannel:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.stopped = False
        self.statuses: dict[str, tuple[float, ProducerStatus]] = {}  # id -> (monotonic, status)
        self._pending: dict[str, asyncio.Future[ProducerStatus]] = {}
        self._log = RateLimitedLog(log)

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="webapi-control-channel")

    async def close(self) -> None:
        await cancel_and_wait(self.task)
        for fut in self._pending.values():
            fut.cancel()

    # ------------------------------------------------------------------ the status reader
    async def run(self) -> None:
        s = self.settings
        attempt = 0
        try:
            while True:
                producer = make_producer(s, "fleetstream-webapi-control", acks="all")
                consumer = make_consumer(s, client_id="fleetstream-webapi-status",
                                         group_id=None, enable_auto_commit=False,
                                         auto_offset_reset="latest", fetch_max_wait_ms=100)
                self.producer, self.consumer = producer, consumer
                try:
                    await finish_first(self._connect(producer, consumer))
                    self.ready.set()
                    attempt = 0
                    while True:
                        batch = await consumer.getmany(timeout_ms=500, max_records=500)
                        for records in batch.values():
                            for rec in records:
                                self._on_status(rec.value)
                except (KafkaError, KafkaEdgeError) as exc:
                    self._log.warning("kafka", "control channel: %s; retrying", exc)
                finally:
                    self.ready.clear()
                    await finish_first(asyncio.gather(consumer.stop(), producer.stop()))
                attempt += 1
                await asyncio.sleep(backoff(attempt))
        finally:
            self.stopped = True

    async def _connect(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer) -> None:
        s = self.settings  # whoever starts first creates the control and status topics
        await ensure_topics(s, [TopicSpec(s.kafka_control_topic), TopicSpec(s.kafka_status_topic)])
        await producer.start()
        await consumer.start()
        tp = TopicPartition(self.settings.kafka_status_topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)  # resolve now: no reply can slip past us

    def _on_status(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            status = read_status(value)
        except ValidationError as exc:
            self._log.warning("bad-status", "skipped malformed producer status: %s",
                              str(exc).splitlines()[0])
            return
        token = self.settings.api_token
        if token is not None and not status_signed(status, token):
            self._log.warning("unsigned-status", "ignored a producer status of %r: not signed "
                              "with FLEETSTREAM_API_TOKEN (give the producer the same token)",
                              status.producer_id)
            return
        wall = datetime.now(UTC)
        if status_in_future(status, wall) or \
                status.updated_at < wall - timedelta(seconds=MAX_CLOCK_SKEW_S):
            self._log.warning("status-time", "ignored a producer status of %r stamped %s: more "
                              "than %g s from this clock", status.producer_id,
                              status.updated_at.isoformat(), MAX_CLOCK_SKEW_S)
            return
        held = self.statuses.get(status.producer_id)
        if held is not None and status.updated_at < held[1].updated_at:
            return  # older than the one we have: late or replayed
        now = time.monotonic()
        if held is None and not self._make_room(now):
            self._log.warning("status-table", "ignored a status of new producer %r: %d live "
                              "producers tracked already", status.producer_id,
                              MAX_PRODUCERS_TRACKED)
        else:
            self.statuses[status.producer_id] = (now, status)
        if status.reply_to is not None:
            fut = self._pending.get(status.reply_to)
            if fut is not None and not fut.done():
                fut.set_result(status)

    def _make_room(self, now: float) -> bool:
        """Room for one more producer: statuses older than ``status_stale_s`` go (they are
        no longer shown); a live one is never evicted for a newcomer."""
        if len(self.statuses) < MAX_PRODUCERS_TRACKED:
            return True
        stale = self.settings.status_stale_s
        for pid in [k for k, (t, _) in self.statuses.items() if now - t > stale]:
            del self.statuses[pid]
        return len(self.statuses) < MAX_PRODUCERS_TRACKED

    # ------------------------------------------------------------------ the API's side
    def latest_status(self) -> ProducerStatus | None:
        """The freshest status of any producer heard from within ``status_stale_s``."""
        now = time.monotonic()
        fresh = [(t, st) for t, st in self.statuses.values()
                 if now - t <= self.settings.status_stale_s]
        if not fresh:
            return None
        running = [x for x in fresh if x[1].running]
        return max(running or fresh, key=lambda x: x[0])[1]

    def instances(self) -> list[ProducerStatus]:
        """The latest status of each producer heard from within ``status_stale_s``, by id
        (several instances of one fleet: PRODUCER_GROUP, producer/shards.py)."""
        now = time.monotonic()
        return sorted((st for t, st in self.statuses.values()
                       if now - t <= self.settings.status_stale_s),
                      key=lambda st: st.producer_id)

    async def command(self, name: str, *, rate_hz: float | None = None,
                      fleet_size: int | None = None) -> ProducerStatus:
        """Send one command and wait for the first producer's reply, else ControlUnavailable."""
        timeout = self.settings.control_timeout_s
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except TimeoutError:
            raise ControlUnavailable(
                f"Kafka control channel not connected ({self.settings.kafka_bootstrap_servers})"
            ) from None
        producer = self.producer
        assert producer is not None
        cmd = ControlCommand(command_id=uuid.uuid4().hex, command=name,  # type: ignore[arg-type]
                             rate_hz=rate_hz, fleet_size=fleet_size)
        if self.settings.api_token is not None:  # producers with the token refuse unsigned ones
            cmd = sign_command(cmd, self.settings.api_token, time.time())
        fut: asyncio.Future[ProducerStatus] = asyncio.get_running_loop().create_future()
        self._pending[cmd.command_id] = fut
        try:
            await asyncio.wait_for(
                producer.send_and_wait(self.settings.kafka_control_topic,
                                       key=cmd.command_id.encode(),
                                       value=cmd.model_dump_json().encode()),
                max(0.1, deadline - time.monotonic()))
            return await asyncio.wait_for(fut, max(0.1, deadline - time.monotonic()))
        except (TimeoutError, KafkaError):
            raise ControlUnavailable(
                f"no producer answered the {name!r} command within {timeout:g} s; "
                "is the producer daemon (python -m producer) running?") from None
        finally:
            self._pending.pop(cmd.command_id, None)
