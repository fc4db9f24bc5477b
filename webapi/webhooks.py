"""Webhooks: the registry, the delivery records and the routes.

Target checks (SSRF) live in webapi.webhook_targets, the delivery worker in
webapi.webhook_delivery. The registry is the compacted topic WEBAPI_WEBHOOKS_TOPIC
(``fleetstream.webhooks``): key = webhook id, value = :class:`Webhook` JSON *with its
secret* (every instance's deliveries sign with it), a tombstone deletes. Whoever reads that
topic can forge signatures: guard it with the cluster's ACLs, like the control topic. The
API never shows a secret again once it is stored.

Delivery records go to WEBAPI_WEBHOOK_DELIVERIES_TOPIC (``fleetstream.webhook-deliveries``,
retention DELIVERIES_RETENTION_MS): key = webhook id, value = :class:`DeliveryRecord`,
published by whichever instance made the attempt, after every attempt. Every instance
follows that topic (no consumer group) into a ring of the last DELIVERIES_KEPT events per
webhook, so any of them answers ``GET /webhooks/{id}/deliveries``; a record replaces the
earlier one of the same event. :class:`WebhookStore` follows both topics with one consumer.

A registry topic written to directly may hold more than WEBAPI_MAX_WEBHOOKS valid webhooks:
the store then uses the WEBAPI_MAX_WEBHOOKS with the smallest ids (every instance with the
same setting picks the same ones) and counts the rest (``over_cap``, logged when it changes);
they get no deliveries, and are not listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict, deque
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.fleet_events import EVENT_KINDS, EventKind, within_cap
from common.kafka import (
    KafkaEdgeError,
    TopicSpec,
    backoff,
    ensure_topics,
    make_consumer,
    make_producer,
    resume,
    topic_partitions,
)
from common.lifecycle import cancel_and_wait, finish_first
from common.logs import RateLimitedLog
from webapi.middleware import Cors, check_token
from webapi.params import ApiError
from webapi.settings import Settings
from webapi.webhook_targets import TargetRefused, check_target, check_url

log = logging.getLogger(__name__)

MAX_URL_LEN = 2048
MIN_SECRET_LEN, MAX_SECRET_LEN = 16, 256
MAX_BODY_BYTES = 8192
"""Largest POST /webhooks body."""
DELIVERIES_KEPT = 200
"""Delivery records kept per webhook (the newest events)."""
DELIVERIES_RETENTION_MS = 7 * 86_400_000
MAX_ERROR_LEN = 300
WRITE_TIMEOUT_S = 10.0
OUTBOX_MAX = 10_000
"""Delivery records queued at most while Kafka is unreachable."""
DeliveryStatus = Literal["delivered", "retrying", "gave_up"]


# ---- models -------------------------------------------------------------------------------

class WebhookSpec(BaseModel):
    """The body of POST /webhooks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(min_length=1, max_length=MAX_URL_LEN)
    secret: str = Field(min_length=MIN_SECRET_LEN, max_length=MAX_SECRET_LEN, repr=False)
    kinds: list[EventKind] = Field(min_length=1, max_length=64)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        return check_url(url)

    @field_validator("secret")
    @classmethod
    def _secret(cls, secret: str) -> str:
        if not all(0x20 <= ord(c) < 0x7F for c in secret):
            raise ValueError("must be printable ASCII characters")
        return secret

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, kinds: list[str]) -> list[str]:
        return [k for k in EVENT_KINDS if k in kinds]  # unique, in the contract's order


class Webhook(WebhookSpec):
    """A registered webhook (the registry topic's value, secret included)."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")
    created_at: AwareDatetime

    def public(self) -> dict[str, Any]:
        """What the API shows: everything but the secret."""
        return {"id": self.id, "url": self.url, "kinds": list(self.kinds),
                "created_at": self.created_at.isoformat()}


class DeliveryRecord(BaseModel):
    """One webhook's delivery of one event, as of its latest attempt."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    webhook_id: str = Field(max_length=64)
    event_id: str = Field(max_length=64)
    kind: EventKind
    attempts: int = Field(ge=1)
    status: DeliveryStatus
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=MAX_ERROR_LEN)
    first_attempt_at: AwareDatetime
    last_attempt_at: AwareDatetime

    def public(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", exclude={"webhook_id"})
        out["first_attempt_at"] = self.first_attempt_at.isoformat()
        out["last_attempt_at"] = self.last_attempt_at.isoformat()
        return out


def _first_error(exc: ValidationError) -> tuple[str, str]:
    """(field, message) of the first error, without the input (it may hold the secret)."""
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "body"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = f"unknown field (allowed: {', '.join(WebhookSpec.model_fields)})"
    elif err["type"] == "literal_error":
        msg = f"must be one of {', '.join(EVENT_KINDS)}"
    return loc.split(".")[0], f"{loc}: {msg}"


def parse_spec(body: bytes) -> WebhookSpec:
    """A POST /webhooks body -> the spec, or ApiError 422 naming the field."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(422, "body: must be a JSON object {url, secret, kinds}",
                       parameter="body") from None
    if not isinstance(doc, dict):
        raise ApiError(422, "body: must be a JSON object {url, secret, kinds}", parameter="body")
    try:
        return WebhookSpec.model_validate(doc)
    except ValidationError as exc:
        field, message = _first_error(exc)
        raise ApiError(422, message, parameter=field) from None


# ---- the store ----------------------------------------------------------------------------

class WebhookStore:
    """The webhooks and their delivery records, as every instance sees them: a background
    task follows both topics from their beginning; :attr:`ready` is set once it has read
    them to their end (the delivery worker waits for it). Writes go through a producer and
    are applied here once the broker acknowledged them (read-your-writes)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registered: dict[str, Webhook] = {}  # every valid webhook on the topic
        self._hooks: dict[str, Webhook] | None = {}
        self._over_cap = 0
        self.deliveries: OrderedDict[str, OrderedDict[str, DeliveryRecord]] = OrderedDict()
        self.ready = asyncio.Event()
        self.invalid = 0
        self.records_lost = 0
        self._outbox: deque[DeliveryRecord] = deque()
        self.producer: AIOKafkaProducer | None = None
        self.task: asyncio.Task[None] | None = None
        self._log = RateLimitedLog(log)

    @property
    def hooks(self) -> dict[str, Webhook]:
        """The webhooks in effect (delivered to, listed): at most WEBAPI_MAX_WEBHOOKS, those
        with the smallest ids (read-only: change :attr:`registered`)."""
        if self._hooks is None:
            self._hooks, over = within_cap(self.registered, self.settings.max_webhooks)
            if over and over != self._over_cap:
                self._log.warning("over-cap", "%d valid webhooks on %s over the cap of %d "
                                  "(WEBAPI_MAX_WEBHOOKS) skipped", over,
                                  self.settings.webhooks_topic, self.settings.max_webhooks)
            self._over_cap = over
        return self._hooks

    @property
    def over_cap(self) -> int:
        self.hooks  # noqa: B018 (brings the count up to date)
        return self._over_cap

    def _changed(self) -> None:
        self._hooks = None

    @property
    def topics(self) -> list[TopicSpec]:
        s = self.settings
        return [TopicSpec.compacted(s.webhooks_topic),
                TopicSpec(s.webhook_deliveries_topic,
                          config={"retention.ms": str(DELIVERIES_RETENTION_MS)})]

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="webapi-webhook-store")

    async def close(self) -> None:
        """Stop following; the records still queued go out first, if Kafka takes them."""
        producer = self.producer
        if producer is not None and self._outbox:
            with contextlib.suppress(KafkaError, TimeoutError):
                await asyncio.wait_for(self._flush(producer), WRITE_TIMEOUT_S)
        await cancel_and_wait(self.task)

    async def run(self) -> None:
        attempt = 0
        position: dict[TopicPartition, int] = {}
        while True:
            producer = make_producer(self.settings, "fleetstream-webapi-webhooks", acks="all")
            consumer = make_consumer(self.settings, client_id="fleetstream-webapi-webhooks",
                                     group_id=None, enable_auto_commit=False,
                                     auto_offset_reset="earliest", fetch_max_wait_ms=200)
            try:
                ends = await finish_first(self._connect(producer, consumer, position))
                self.producer = producer
                attempt = 0
                while True:
                    await self._flush(producer)
                    batch = await consumer.getmany(timeout_ms=200, max_records=500)
                    for tp, records in batch.items():
                        for rec in records:
                            self.take(rec.topic, rec.key, rec.value)
                        if records:
                            position[tp] = records[-1].offset + 1
                    if not self.ready.is_set() and all(
                            position.get(tp, 0) >= end for tp, end in ends.items()):
                        self.ready.set()
            except (KafkaError, KafkaEdgeError) as exc:
                self._log.warning("kafka", "webhook store: %s; retrying", exc)
            finally:
                self.producer = None
                await finish_first(asyncio.gather(consumer.stop(), producer.stop()))
            attempt += 1
            await asyncio.sleep(backoff(attempt))

    async def _connect(self, producer: AIOKafkaProducer, consumer: AIOKafkaConsumer,
                       position: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        await ensure_topics(self.settings, self.topics)
        await producer.start()
        await consumer.start()
        tps = [tp for spec in self.topics
               for tp in await topic_partitions(self.settings, spec.name)]
        await resume(consumer, tps, position)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends

    def take(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Fold one record of either topic in."""
        if key is None:
            return
        hook_id = key.decode("utf-8", "replace")  # a valid id is hex: a bad key never matches
        if topic == self.settings.webhooks_topic:
            if self.registered.pop(hook_id, None) is not None:
                self._changed()
            if value is None:
                self.deliveries.pop(hook_id, None)
                return
            try:
                hook = Webhook.model_validate_json(value)
            except ValidationError:
                hook = None
            if hook is None or hook.id != hook_id:
                self.invalid += 1
                self._log.warning("invalid", "skipped an invalid webhook record on %s", topic)
                return
            self.registered[hook_id] = hook
            self._changed()
        elif value is not None:
            try:
                record = DeliveryRecord.model_validate_json(value)
            except ValidationError:
                self.invalid += 1
                self._log.warning("invalid", "skipped an invalid delivery record on %s", topic)
                return
            self._record(record)

    def _record(self, record: DeliveryRecord) -> None:
        ring = self.deliveries.get(record.webhook_id)
        if ring is None:
            ring = self.deliveries[record.webhook_id] = OrderedDict()
            while len(self.deliveries) > 2 * self.settings.max_webhooks:
                self.deliveries.popitem(last=False)  # the longest quiet (deleted ones first)
        self.deliveries.move_to_end(record.webhook_id)
        ring[record.event_id] = record
        ring.move_to_end(record.event_id)
        while len(ring) > DELIVERIES_KEPT:
            ring.popitem(last=False)

    # ------------------------------------------------------------------ writes
    async def loaded(self) -> None:
        """Wait (a little) until the topics were read once; else 503: answering from a
        registry not yet read would show no webhooks where there are some."""
        try:
            await asyncio.wait_for(self.ready.wait(), WRITE_TIMEOUT_S)
        except TimeoutError:
            raise ApiError(503, "the webhook registry is not loaded: Kafka "
                                f"({self.settings.kafka_bootstrap_servers}) did not "
                                "answer") from None

    async def _producer(self) -> AIOKafkaProducer:
        await self.loaded()
        if self.producer is None:
            raise ApiError(503, "Kafka is not reachable; try again")
        return self.producer

    async def _send(self, topic: str, key: str, value: bytes | None) -> None:
        producer = await self._producer()
        try:
            await asyncio.wait_for(producer.send_and_wait(topic, key=key.encode(), value=value),
                                   WRITE_TIMEOUT_S)
        except (KafkaError, TimeoutError) as exc:
            raise ApiError(503, f"Kafka did not take the write: {exc!r}") from None

    async def add(self, spec: WebhookSpec) -> Webhook:
        await self._producer()
        if len(self.hooks) >= self.settings.max_webhooks:
            raise ApiError(409, f"too many webhooks: {len(self.hooks)} registered, at most "
                                f"{self.settings.max_webhooks} (WEBAPI_MAX_WEBHOOKS)")
        hook = Webhook(id=uuid.uuid4().hex, created_at=datetime.now(UTC), **spec.model_dump())
        await self._send(self.settings.webhooks_topic, hook.id, hook.model_dump_json().encode())
        self.registered[hook.id] = hook
        self._changed()
        return hook

    async def remove(self, hook_id: str) -> None:
        await self._send(self.settings.webhooks_topic, hook_id, None)
        self.registered.pop(hook_id, None)
        self._changed()
        self.deliveries.pop(hook_id, None)

    def publish(self, record: DeliveryRecord) -> None:
        """Queue a delivery record for the topic (sent by the store's task, which waits out a
        Kafka outage); beyond OUTBOX_MAX queued, the oldest is dropped and counted."""
        if len(self._outbox) >= OUTBOX_MAX:
            self._outbox.popleft()
            self.records_lost += 1
            self._log.warning("record-lost", "delivery records dropped: %d queued while Kafka "
                              "is unreachable (%d lost so far)", OUTBOX_MAX, self.records_lost)
        self._outbox.append(record)

    async def _flush(self, producer: AIOKafkaProducer) -> None:
        while self._outbox:
            record = self._outbox.popleft()
            try:
                sent = await producer.send(self.settings.webhook_deliveries_topic,
                                           key=record.webhook_id.encode(),
                                           value=record.model_dump_json().encode())
            except BaseException:
                self._outbox.appendleft(record)
                raise
            sent.add_done_callback(self._acked)

    def _acked(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            self.records_lost += 1
            self._log.warning("record-lost", "a delivery record was not published: %r",
                              fut.exception())


# ---- routes -------------------------------------------------------------------------------

def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


class WebhookRoutes:
    """``POST/GET /webhooks``, ``DELETE /webhooks/{id}``, ``GET /webhooks/{id}/deliveries``;
    all four need the control token when FLEETSTREAM_API_TOKEN is set (a target URL may
    itself be a credential)."""

    def __init__(self, store: WebhookStore, cors: Cors) -> None:
        self.store = store
        self.cors = cors
        self.settings = store.settings

    def add_to(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/webhooks", self.create)
        r.add_get("/webhooks", self.list)
        r.add_delete("/webhooks/{id}", self.delete)
        r.add_get("/webhooks/{id}/deliveries", self.deliveries)

    async def _hook(self, request: web.Request) -> Webhook:
        await self.store.loaded()
        hook_id = request.match_info["id"]
        hook = self.store.hooks.get(hook_id)
        if hook is None:
            raise ApiError(404, f"no webhook with id {hook_id[:64]!r}")
        return hook

    async def create(self, request: web.Request) -> web.Response:
        self.cors.check_origin(request)
        check_token(request, self.settings.api_token)
        if (request.content_length or 0) > MAX_BODY_BYTES:
            raise ApiError(413, f"body: at most {MAX_BODY_BYTES} bytes", parameter="body")
        body = await request.read()  # chunked bodies: the app's client_max_size bounds it
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"body: at most {MAX_BODY_BYTES} bytes", parameter="body")
        spec = parse_spec(body)
        try:
            await check_target(spec.url, self.settings.webhook_allow_private)
        except TargetRefused as exc:
            raise ApiError(422, f"url: {exc}", parameter="url") from None
        hook = await self.store.add(spec)
        return _json(hook.public(), 201)

    async def list(self, request: web.Request) -> web.Response:
        check_token(request, self.settings.api_token)
        await self.store.loaded()
        hooks = sorted(self.store.hooks.values(), key=lambda h: (h.created_at, h.id))
        return _json({"items": [h.public() for h in hooks]})

    async def delete(self, request: web.Request) -> web.Response:
        self.cors.check_origin(request)
        check_token(request, self.settings.api_token)
        hook = await self._hook(request)
        await self.store.remove(hook.id)
        return web.Response(status=204)

    async def deliveries(self, request: web.Request) -> web.Response:
        """The newest first."""
        check_token(request, self.settings.api_token)
        hook = await self._hook(request)
        ring = self.store.deliveries.get(hook.id)
        items = [r.public() for r in reversed(ring.values())] if ring else []
        return _json({"items": items})
