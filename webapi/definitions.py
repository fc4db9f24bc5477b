"""Geofences and alert rules as data: the web API's side of the two compacted topics.

``fleetstream.geofences`` and ``fleetstream.alert-rules`` (common.fleet_events): key = the
definition's id (UTF-8), value = its JSON, a tombstone (null value) deletes it. The events
job reads the same topics (analytics/events_config.py), so what is written here is in effect
there from its next micro-batch.

Each :class:`DefinitionView` reads its topic from the beginning to the end (folded with
``common.kafka.apply_compacted``), is *ready* then, and keeps following it, so writes made
through other web API instances show up here a moment later. A write through this instance
is sent with ``acks=all`` and, once the broker has acknowledged it, applied to the view at
once (read-your-writes); records of that key older than the acknowledged offset that the
follower has yet to read are then skipped, so the view never steps back to them.

Records are read by common.fleet_events.decode_definition, the events job's rule too: the
key must be valid UTF-8 and equal the value's id, the value strict JSON of at most
MAX_DEFINITION_BYTES. Records that do not pass (a foreign writer) are skipped, counted
(``invalid``) and logged without their content. Beyond MAX_GEOFENCES / MAX_ALERT_RULES valid
definitions (written straight to the topic: POST stops at WEBAPI_MAX_*, which cannot exceed
them), the view shows those with the smallest ids, which are those the job applies
(common.fleet_events.within_cap), and counts the rest (``over_cap``). A view keeps each
definition's JSON (re-serialised once from the validated model), not the model: a thousand
1,000-vertex geofences are about 22 MB of JSON, and GET /geofences joins
them without serialising anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from common.fleet_events import (
    ALERT_RULE_DEFINITIONS,
    GEOFENCE_DEFINITIONS,
    DefinitionKind,
    DefinitionRejected,
    decode_definition,
    within_cap,
)
from common.kafka import (
    TopicSpec,
    apply_compacted,
    backoff,
    ensure_topics,
    make_consumer,
    make_producer,
    topic_partitions,
)
from common.logs import RateLimitedLog
from webapi.lifecycle import cancel_and_wait, finish_first
from webapi.params import ApiError
from webapi.settings import Settings

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 10.0


class DefinitionView:
    """One compacted topic: id -> validated definition's JSON, following the topic."""

    def __init__(self, topic: str, kind: DefinitionKind) -> None:
        self.topic = topic
        self.kind = kind
        self.what = kind.what  # "geofence", "alert rule": for messages
        self.raw: dict[bytes, bytes] = {}
        self.valid: dict[str, bytes] = {}  # id -> the definition's JSON (validated), all
        self.pins: dict[bytes, int] = {}  # key -> offset of our acknowledged write
        self.invalid = 0
        self.ready = asyncio.Event()
        self._items: dict[str, bytes] | None = {}
        self._over_cap = 0

    @property
    def items(self) -> dict[str, bytes]:
        """The definitions in effect: at most ``kind.cap`` (those with the smallest ids)."""
        if self._items is None:
            self._items, over = within_cap(self.valid, self.kind.cap)
            if over and over != self._over_cap:
                log.warning("%d valid %ss on %s over the cap of %d skipped (those with the "
                            "smallest ids apply)", over, self.what, self.topic, self.kind.cap)
            self._over_cap = over
        return self._items

    @property
    def over_cap(self) -> int:
        """Valid definitions on the topic beyond ``kind.cap``, not in effect."""
        self.items  # noqa: B018 (brings the count up to date)
        return self._over_cap

    def take(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for rec in records:
            key = rec.key
            if key is None:
                continue
            pin = self.pins.get(key)
            if pin is not None:
                if rec.offset < pin:
                    continue  # older than what we wrote and already show
                del self.pins[key]
            apply_compacted(self.raw, [rec])
            self._decode(key)

    def _decode(self, key: bytes) -> None:
        value = self.raw.get(key)
        try:
            ident: str | None = key.decode("utf-8")
        except UnicodeDecodeError:
            ident = None  # never valid (decode_definition says why)
        if ident is not None and self.valid.pop(ident, None) is not None:
            self._items = None
        if value is None:
            return
        try:
            model = decode_definition(key, value, self.kind.parse)
        except DefinitionRejected as exc:
            self.invalid += 1
            del self.raw[key]  # nothing of it kept but the count
            self._log_invalid(key, exc)
            return
        canonical = model.model_dump_json().encode()  # served as is: no model kept
        self.raw[key] = canonical
        self.valid[model.id] = canonical
        self._items = None

    def _log_invalid(self, key: bytes, exc: DefinitionRejected) -> None:
        log.warning("%s %r on %s skipped: %s", self.what, key[:80], self.topic, exc)

    def wrote(self, key: bytes, value: bytes | None, offset: int) -> None:
        """Apply our own acknowledged write at ``offset``."""
        self.pins[key] = offset
        if value is None:
            self.raw.pop(key, None)
        else:
            self.raw[key] = value
        self._decode(key)

    def require_ready(self) -> None:
        if not self.ready.is_set():
            raise ApiError(503, f"{self.what}s not read yet from Kafka topic {self.topic!r}; "
                                "try again in a moment")


class Definitions:
    """Both views, their follower task and the producer that writes them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.geofences = DefinitionView(settings.kafka_geofences_topic, GEOFENCE_DEFINITIONS)
        self.rules = DefinitionView(settings.kafka_alert_rules_topic, ALERT_RULE_DEFINITIONS)
        self.producer: AIOKafkaProducer | None = None
        self.task: asyncio.Task[None] | None = None
        self._log = RateLimitedLog(log)
        self._write_lock = asyncio.Lock()

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="webapi-definitions")

    async def close(self) -> None:
        await cancel_and_wait(self.task)
        if self.producer is not None:
            await finish_first(self.producer.stop())
            self.producer = None

    async def run(self) -> None:
        views = {v.topic: v for v in (self.geofences, self.rules)}
        specs = [TopicSpec.compacted(t) for t in views]
        attempt = 0
        while True:
            consumer = make_consumer(self.settings, client_id="fleetstream-webapi-definitions",
                                     group_id=None, enable_auto_commit=False,
                                     auto_offset_reset="earliest", fetch_max_wait_ms=200)
            try:
                # shielded: aiokafka leaks a half-open connection when cancelled connecting
                await finish_first(ensure_topics(self.settings, specs))
                await finish_first(consumer.start())
                tps = []
                for topic in views:
                    tps += await finish_first(topic_partitions(
                        self.settings, topic, client_id="fleetstream-webapi-definitions"))
                consumer.assign(tps)
                await finish_first(consumer.seek_to_beginning(*tps))
                ends = await consumer.end_offsets(tps)
                pending = {tp for tp in tps if ends[tp] > 0}
                # the first read (and a reread after a reconnect) goes into fresh views,
                # swapped in when complete: a reader never sees a half-read set
                fresh = {t: DefinitionView(t, v.kind) for t, v in views.items()}
                while pending:
                    batches = await consumer.getmany(*pending, timeout_ms=200)
                    for tp, records in batches.items():
                        fresh[tp.topic].take(records)
                    pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
                for topic, view in views.items():
                    view.raw, view.valid = fresh[topic].raw, fresh[topic].valid
                    view._items = None
                    view.invalid, view.pins = fresh[topic].invalid, {}
                    view.ready.set()
                attempt = 0
                while True:
                    batches = await consumer.getmany(timeout_ms=1000)
                    for tp, records in batches.items():
                        views[tp.topic].take(records)
            except (KafkaError, OSError, RuntimeError) as exc:
                self._log.warning("kafka", "geofences/alert rules reader: %r; retrying", exc)
            finally:
                await finish_first(consumer.stop())
            attempt += 1
            await asyncio.sleep(backoff(attempt))

    async def _producer(self) -> AIOKafkaProducer:
        if self.producer is None:
            producer = make_producer(self.settings, "fleetstream-webapi-definitions",
                                     acks="all", enable_idempotence=True)
            try:
                await asyncio.wait_for(finish_first(producer.start()), SEND_TIMEOUT_S)
            except (KafkaError, TimeoutError, OSError) as exc:
                await finish_first(producer.stop())
                raise ApiError(503, f"Kafka unavailable: {exc!r}") from None
            self.producer = producer
        return self.producer

    async def write(self, view: DefinitionView, ident: str, value: bytes | None,
                    check: Callable[[], None] | None = None) -> None:
        """Send (value None: a tombstone), wait for the broker's ack, apply locally.
        ``check`` runs first, under the write lock (it raises ApiError to refuse)."""
        view.require_ready()
        key = ident.encode()
        async with self._write_lock:  # one write at a time: the count cap holds
            if check is not None:
                check()
            producer = await self._producer()
            try:
                md = await asyncio.wait_for(
                    producer.send_and_wait(view.topic, key=key, value=value), SEND_TIMEOUT_S)
            except (KafkaError, TimeoutError) as exc:
                raise ApiError(503, f"Kafka did not accept the {view.what}: {exc!r}") from None
            view.wrote(key, value, md.offset)
