"""Webhook delivery: a Kafka consumer group on the derived-events topic.

Every web API instance runs one :class:`DeliveryWorker` in the group WEBAPI_WEBHOOK_GROUP,
so the topic's partitions, and with them the deliveries, spread over the instances. A record
is read by :func:`webapi.fleet_events.decode_event`, as the event store reads it (strict
contract, key = vehicle_id, not ahead of the clock by more than WEBAPI_MAX_EVENT_FUTURE_S, at
most WEBAPI_MAX_MESSAGE_BYTES): a receiver never gets an event the API refuses. Each event
goes to every registered webhook whose ``kinds`` include the event's kind: a POST of the
event's JSON as the API serves it (the contract's JSON, re-serialised from the validated
model), with ``X-FleetStream-Event-Id``,
``X-FleetStream-Webhook-Id`` and ``X-FleetStream-Signature: t=<unix seconds>,v1=<hex
HMAC-SHA256 of "<t>.<body>" with the webhook's secret>`` (:func:`signature_header`). A 2xx
answer is delivered; any other status, a timeout or a connection error is retried after an
exponential back-off with full jitter, up to WEBAPI_WEBHOOK_MAX_ATTEMPTS attempts, then
given up. Every attempt's outcome is published as a delivery record (webapi.webhooks).

Offsets are committed by hand: a partition's offset moves past an event only once every
delivery of it, and of every event before it, is delivered or given up. A restart, or a
rebalance that hands the partition to another instance, re-delivers what was pending: at
least once, so receivers deduplicate by ``X-FleetStream-Event-Id``. A partition the group
has never committed starts at its end (new webhooks get no flood of history), and that
position is committed at once, so a restart resumes there.

Nothing waits for a slow target: each delivery is a task of its own; at most
WEBAPI_WEBHOOK_CONCURRENCY requests per webhook run at once, each within
WEBAPI_WEBHOOK_TIMEOUT_S; with WEBAPI_WEBHOOK_MAX_IN_FLIGHT deliveries pending the consumer
pauses fetching (it stays in the group). Redirects are not followed (a 3xx is a failure), no
proxy is taken from the environment, and unless WEBAPI_WEBHOOK_ALLOW_PRIVATE every
connection's addresses are checked again (:class:`SafeResolver`: DNS may have changed since
the webhook was registered).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import random
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge

from common.kafka import KafkaEdgeError, await_partitions, backoff, make_consumer
from common.lifecycle import cancel_and_wait, finish_first
from common.logs import RateLimitedLog
from webapi.fleet_events import Rejected, decode_event
from webapi.metrics import Metrics
from webapi.settings import Settings
from webapi.webhook_targets import forbidden_reason, is_ip_literal
from webapi.webhooks import MAX_ERROR_LEN, DeliveryRecord, DeliveryStatus, Webhook, WebhookStore

log = logging.getLogger(__name__)

EVENT_ID_HEADER = "X-FleetStream-Event-Id"
WEBHOOK_ID_HEADER = "X-FleetStream-Webhook-Id"
SIGNATURE_HEADER = "X-FleetStream-Signature"
USER_AGENT = "FleetStream-Webhooks/1"
SIGNATURE_TOLERANCE_S = 300
"""What :func:`verify` accepts (and receivers should): a signature at most this old."""
MAX_FETCH = 500


# ---- signing ------------------------------------------------------------------------------

def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` with the secret."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={sign(secret, timestamp, body)}"


def verify(header: str, secret: str, body: bytes, *, now: float,
           tolerance_s: float = SIGNATURE_TOLERANCE_S) -> bool:
    """What a receiver does: the header's v1 is the HMAC of its t and this body, and t is
    within ``tolerance_s`` of ``now`` (a replayed old delivery fails)."""
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), parts.get("v1", ""))


def retry_delay(attempt: int, first_s: float, max_s: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, the exponential back-off of ``attempt``]."""
    return rng.uniform(0, backoff(attempt, first_delay_s=first_s, max_delay_s=max_s, jitter=0))


class RefusedAddress(OSError):
    """Raised by :class:`SafeResolver`; the message says which address and why."""


class SafeResolver(AbstractResolver):
    """aiohttp's resolver, refusing a host any of whose addresses is not public
    (:func:`webapi.webhook_targets.forbidden_reason`); aiohttp then fails the connection."""

    def __init__(self) -> None:
        self.inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        for result in results:
            reason = forbidden_reason(str(result["host"]))
            if reason is not None:
                raise RefusedAddress(f"refused: {host} resolves to {reason}")
        return results

    async def close(self) -> None:
        await self.inner.close()


# ---- the worker ---------------------------------------------------------------------------

class WebhookMetrics:
    """The worker's instruments, in the app's registry (``/metrics``)."""

    def __init__(self, metrics: Metrics, worker: DeliveryWorker) -> None:
        r = metrics.registry
        self.attempts = Counter("fleetstream_webapi_webhook_attempts",
                                "Webhook POSTs made, by result", ["result"], registry=r)
        self.outcomes = Counter("fleetstream_webapi_webhook_deliveries",
                                "Webhook deliveries finished, by status", ["status"], registry=r)
        self.malformed = Counter("fleetstream_webapi_webhook_malformed_events",
                                 "Events-topic records the webhook worker skipped as invalid",
                                 registry=r)
        for result in ("ok", "failed"):
            self.attempts.labels(result)
        for status in ("delivered", "gave_up"):
            self.outcomes.labels(status)
        in_flight = Gauge("fleetstream_webapi_webhook_in_flight",
                          "Webhook deliveries pending on this instance", registry=r)
        in_flight.set_function(lambda: worker.in_flight)


@dataclass
class _Partition:
    next: int  # the offset after the last event dispatched
    committed: int | None
    pending: dict[int, int] = field(default_factory=dict)  # offset -> deliveries outstanding
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def committable(self) -> int:
        return next(iter(self.pending)) if self.pending else self.next


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: DeliveryWorker, consumer: AIOKafkaConsumer) -> None:
        self.worker, self.consumer = worker, consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.worker.release(self.consumer, revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass  # taken up by the fetch loop (positions need the consumer outside the rebalance)


class DeliveryWorker:
    def __init__(self, settings: Settings, store: WebhookStore,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.store = store
        self.topic = settings.kafka_events_topic
        self.ready = asyncio.Event()
        """Set while partitions are assigned and their starting positions committed."""
        self.partitions: dict[TopicPartition, _Partition] = {}
        self.in_flight = 0
        self.events_seen = 0
        self.malformed = 0
        self.outcomes = {"delivered": 0, "gave_up": 0, "attempts": 0}
        self.task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._rng = random.Random()  # jitter, not secrets  # noqa: S311
        self._log = RateLimitedLog(log)
        self.metrics = WebhookMetrics(metrics or Metrics(), self)

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="webapi-webhook-delivery")

    async def close(self) -> None:
        await cancel_and_wait(self.task)

    async def run(self) -> None:
        s = self.settings
        connector = aiohttp.TCPConnector(
            resolver=None if s.webhook_allow_private else SafeResolver(),
            use_dns_cache=False, limit=s.webhook_max_in_flight)
        self._session = aiohttp.ClientSession(
            connector=connector, trust_env=False, auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=s.webhook_timeout_s),
            headers={"User-Agent": USER_AGENT})
        try:
            await self.store.ready.wait()
            attempt = 0
            while True:
                seen = self.events_seen
                try:
                    await self._consume()
                except (KafkaError, KafkaEdgeError) as exc:
                    self._log.warning("kafka", "webhook delivery: %s; retrying", exc)
                attempt = 1 if self.events_seen > seen else attempt + 1
                await asyncio.sleep(backoff(attempt))
        finally:
            await finish_first(self._session.close())

    async def _consume(self) -> None:
        s = self.settings
        await await_partitions(s, self.topic, poll_s=2.0,
                               client_id="fleetstream-webapi-webhooks-admin")
        consumer = make_consumer(s, client_id="fleetstream-webapi-webhooks",
                                 group_id=s.webhook_group, enable_auto_commit=False,
                                 auto_offset_reset="latest", fetch_max_wait_ms=200)
        try:
            await finish_first(consumer.start())
            consumer.subscribe([self.topic], listener=_Rebalance(self, consumer))
            while True:
                await self._take_assignment(consumer)
                assigned = consumer.assignment()
                room = s.webhook_max_in_flight - self.in_flight
                if room <= 0:
                    consumer.pause(*assigned)
                else:
                    consumer.resume(*assigned)
                batch = await consumer.getmany(timeout_ms=200,
                                               max_records=max(1, min(MAX_FETCH, room)))
                for tp, records in batch.items():
                    # the fetch that completed the group join may carry records already
                    part = self.partitions.get(tp) or await self._take(consumer, tp,
                                                                       records[0].offset)
                    for rec in records:
                        self._dispatch(part, rec.offset, rec.value, rec.key)
                await self._commit(consumer)
        finally:
            self.ready.clear()
            await finish_first(self.release(consumer, set(self.partitions)))
            await finish_first(consumer.stop())

    async def _take_assignment(self, consumer: AIOKafkaConsumer) -> None:
        assigned = consumer.assignment()
        for tp in assigned - set(self.partitions):
            await self._take(consumer, tp, await consumer.position(tp))
        if assigned:
            self.ready.set()
        else:
            self.ready.clear()

    async def _take(self, consumer: AIOKafkaConsumer, tp: TopicPartition,
                    start: int) -> _Partition:
        """Track a partition newly assigned, whose next event is at ``start``."""
        committed = await consumer.committed(tp)
        part = self.partitions[tp] = _Partition(next=start, committed=committed)
        if committed is None:  # the group starts here: remember it, a restart resumes here
            await consumer.commit({tp: start})
            part.committed = start
        return part

    async def release(self, consumer: AIOKafkaConsumer, tps: set[TopicPartition]) -> None:
        """Partitions leave this instance (rebalance, shutdown): their unfinished deliveries
        are cancelled (whoever gets the partition resumes from the committed offset, and
        delivers them again), the finished ones committed."""
        parts = {tp: self.partitions.pop(tp) for tp in tps if tp in self.partitions}
        for part in parts.values():
            for task in list(part.tasks):
                task.cancel()
        await asyncio.gather(*(t for p in parts.values() for t in p.tasks),
                             return_exceptions=True)
        await self._commit(consumer, parts)

    async def _commit(self, consumer: AIOKafkaConsumer,
                      parts: dict[TopicPartition, _Partition] | None = None) -> None:
        parts = self.partitions if parts is None else parts
        offsets = {tp: p.committable() for tp, p in parts.items()
                   if p.committed is None or p.committable() > p.committed}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance in progress: the next round commits
            self._log.warning("commit", "webhook delivery: commit failed: %r", exc)
            return
        for tp, offset in offsets.items():
            parts[tp].committed = offset

    def _dispatch(self, part: _Partition, offset: int, value: bytes | None,
                  key: bytes | None) -> None:
        part.next = offset + 1
        self.events_seen += 1
        s = self.settings
        try:
            entry, _ = decode_event(value, key, s.max_message_bytes,
                                    time.time() + s.max_event_future_s)
        except Rejected as bad:
            self.malformed += 1
            self.metrics.malformed.inc()
            self._log.warning("malformed", "webhook delivery: skipped a record at offset %d of "
                              "%s (%s): %s", offset, self.topic, bad.reason, bad.detail[:200])
            return
        hooks = [h for h in self.store.hooks.values() if entry.kind in h.kinds]
        if not hooks:
            return
        part.pending[offset] = len(hooks)
        for hook in hooks:
            task = asyncio.create_task(self._deliver(hook, entry.event_id, entry.kind,
                                                     entry.raw))
            self.in_flight += 1
            part.tasks.add(task)
            task.add_done_callback(functools.partial(self._done, part, offset))

    def _done(self, part: _Partition, offset: int, task: asyncio.Task[None]) -> None:
        self.in_flight -= 1
        part.tasks.discard(task)
        if task.cancelled():
            return  # not delivered: the offset stays uncommitted
        if task.exception() is not None:
            log.error("webhook delivery failed unexpectedly", exc_info=task.exception())
        left = part.pending.get(offset, 1) - 1
        if left > 0:
            part.pending[offset] = left
        else:
            part.pending.pop(offset, None)

    def _limit(self, hook_id: str) -> asyncio.Semaphore:
        sem = self._limits.get(hook_id)
        if sem is None:
            if len(self._limits) > 2 * self.settings.max_webhooks:
                self._limits = {k: v for k, v in self._limits.items()
                                if k in self.store.hooks or v.locked()}
            sem = self._limits[hook_id] = asyncio.Semaphore(self.settings.webhook_concurrency)
        return sem

    async def _deliver(self, hook: Webhook, event_id: str, kind: str, body: bytes) -> None:
        s = self.settings
        first: datetime | None = None
        for attempt in range(1, s.webhook_max_attempts + 1):
            current = self.store.hooks.get(hook.id)
            if current is None:
                return  # deleted meanwhile
            async with self._limit(hook.id):
                at = datetime.now(UTC)
                first = first or at
                code, error = await self.attempt(current, event_id, body)
            self.outcomes["attempts"] += 1
            self.metrics.attempts.labels("ok" if error is None else "failed").inc()
            status: DeliveryStatus = ("delivered" if error is None
                      else "gave_up" if attempt == s.webhook_max_attempts else "retrying")
            self.store.publish(DeliveryRecord(
                webhook_id=hook.id, event_id=event_id, kind=kind,  # type: ignore[arg-type]
                attempts=attempt, status=status, last_status_code=code, last_error=error,
                first_attempt_at=first, last_attempt_at=at))
            if status != "retrying":
                self.outcomes[status] += 1
                self.metrics.outcomes.labels(status).inc()
                return
            await asyncio.sleep(retry_delay(attempt, s.webhook_backoff_s,
                                            s.webhook_backoff_max_s, self._rng))

    async def attempt(self, hook: Webhook, event_id: str,
                      body: bytes) -> tuple[int | None, str | None]:
        """One POST: (status code or None, error or None when delivered)."""
        session = self._session
        assert session is not None
        if not self.settings.webhook_allow_private:  # IP literals skip the resolver
            host = urlsplit(hook.url).hostname or ""
            if is_ip_literal(host):
                reason = forbidden_reason(host)
                if reason is not None:
                    return None, f"refused: {reason}"[:MAX_ERROR_LEN]
        timestamp = int(time.time())
        headers = {"Content-Type": "application/json", EVENT_ID_HEADER: event_id,
                   WEBHOOK_ID_HEADER: hook.id,
                   SIGNATURE_HEADER: signature_header(hook.secret, timestamp, body)}
        try:
            async with session.post(hook.url, data=body, headers=headers,
                                    allow_redirects=False) as resp:
                code = resp.status
        except TimeoutError:
            return None, f"timeout after {self.settings.webhook_timeout_s:g} s"
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedAddress):
                return None, str(exc.os_error)[:MAX_ERROR_LEN]
            return None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LEN]
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            # ValueError: what the client raises for a URL it cannot use (UnicodeError for
            # an empty host label): a failed attempt like any other, recorded and retried
            return None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LEN]
        if 200 <= code < 300:
            return code, None
        return code, f"HTTP {code}"

    def stats(self) -> dict[str, Any]:
        return {"events_seen": self.events_seen, "malformed": self.malformed,
                "in_flight": self.in_flight, **self.outcomes}

