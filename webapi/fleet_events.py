"""Derived fleet events (``fleetstream.events``): consumer, bounded store, live fan-out.

The events job (analytics/events_job.py) publishes trips, geofence crossings and alerts,
each with a deterministic ``event_id`` (common.fleet_events). Every web API instance reads
the whole topic from its beginning (no consumer group, like the telemetry consumer) into a
bounded :class:`EventStore`:

* a ring of the WEBAPI_EVENTS_KEEP most recent events (``GET /events``, the WS snapshot);
* a trips index of the WEBAPI_TRIPS_KEEP most recently started trips (``GET /trips``), built
  from ``trip_started`` / ``trip_ended``;
* the event ids seen (bounded too), so a record the job published twice (it is
  at-least-once: a restart from its checkpoint) is stored and sent once.

Validation is strict (``FLEET_EVENT``, pydantic's strict JSON mode); a record that fails is
skipped and counted by reason in /stats (``fleet_events.rejected``) and /metrics
(``fleetstream_webapi_fleet_events_rejected{reason}``). Stored events are the validated
model re-serialised, i.e. the contract's JSON of the event, whatever spacing the record had.

``WS /ws/events`` subscribers (:class:`EventHub`) get ``{"type":"event","data":...}`` frames
from bounded per-client queues (the :class:`webapi.hub.Subscriber` of ``/ws``), with the
same WEBAPI_WS_MAX_CLIENTS / WEBAPI_WS_MAX_PER_ADDRESS / WEBAPI_WS_QUEUE_SIZE limits as
``/ws``, counted separately.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from common.contract import format_timestamp
from common.fleet_events import FLEET_EVENT, TripEnded, TripStarted
from common.kafka import add_new_partitions, await_partitions, backoff, make_consumer
from common.logs import RateLimitedLog
from webapi.consumer import undecodable
from webapi.hub import EVENT_PREFIX, ClientCaps, Subscriber
from webapi.lifecycle import cancel_and_wait, finish_first
from webapi.metrics import Metrics
from webapi.settings import Settings

log = logging.getLogger(__name__)

REJECT_REASONS = ("oversized", "tombstone", "not_json", "unknown_kind", "invalid",
                  "key_mismatch", "in_future", "undecodable")
"""Why a record of the events topic was skipped (/stats and /metrics)."""
MAX_RECORDS = 2000


@dataclass(slots=True, frozen=True)
class FleetEntry:
    """One validated derived event as the store keeps it."""

    ts: float  # event time, seconds since the epoch
    kind: str
    vehicle_id: str
    event_id: str
    raw: bytes  # the contract's JSON of the event


class Rejected(Exception):  # noqa: N818 - a kind of record, like webapi.decode.Malformed
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_event(value: bytes | None, key: bytes | None, max_bytes: int,
                 latest: float = math.inf) -> tuple[FleetEntry, Any]:
    """Validate one record of the events topic -> (entry, model); raise :class:`Rejected`.
    An event timed after ``latest`` (epoch seconds) is ``in_future``, as in the telemetry
    consumer (WEBAPI_MAX_EVENT_FUTURE_S)."""
    if value is None:
        raise Rejected("tombstone", "empty record")
    if len(value) > max_bytes:
        raise Rejected("oversized", f"{len(value)} bytes > {max_bytes}")
    try:
        model = FLEET_EVENT.validate_json(value, strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        first = errors[0] if errors else {"type": "", "loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"]) or "record"
        detail = f"{where}: {first['msg']}"
        if first["type"] == "json_invalid" or (first["type"] == "model_type" and
                                               not first["loc"]):
            raise Rejected("not_json", detail) from None
        if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            raise Rejected("unknown_kind", detail) from None
        raise Rejected("invalid", detail) from None
    if key is None or key != model.vehicle_id.encode():
        raise Rejected("key_mismatch", f"Kafka key {key[:80] if key else None!r} is not the "
                                       "vehicle_id")
    try:
        ts = model.time.timestamp()
    except (OverflowError, ValueError):
        raise Rejected("invalid", f"time {model.time} out of range") from None
    if ts > latest:
        raise Rejected("in_future", f"time {format_timestamp(model.time)} is ahead of this "
                                    "server's clock by more than WEBAPI_MAX_EVENT_FUTURE_S")
    raw = model.model_dump_json().encode()
    return FleetEntry(ts, model.kind, model.vehicle_id, model.event_id, raw), model


def _loc(location: Any) -> dict[str, float]:
    return {"lat": location.lat, "lon": location.lon}


class EventStore:
    """Bounded, pure: recent events, trips, seen ids. No I/O."""

    def __init__(self, *, keep: int, trips_keep: int) -> None:
        self.recent: deque[FleetEntry] = deque(maxlen=keep)
        self.trips: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self.trips_keep = trips_keep
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.seen_keep = 2 * keep + 2 * trips_keep
        self.consumed_total = 0
        self.duplicates_total = 0

    def add(self, entry: FleetEntry, model: Any) -> bool:
        """Store one event; False if its event_id was seen already (a duplicate)."""
        if entry.event_id in self.seen:
            self.duplicates_total += 1
            return False
        self.seen[entry.event_id] = None
        if len(self.seen) > self.seen_keep:
            self.seen.popitem(last=False)
        self.consumed_total += 1
        self.recent.append(entry)
        if isinstance(model, TripStarted | TripEnded) and model.trip_id:
            self._trip(model)
        return True

    def _trip(self, model: TripStarted | TripEnded) -> None:
        key = (model.vehicle_id, model.trip_id)
        trip = self.trips.get(key)
        if isinstance(model, TripStarted):
            if trip is None:
                trip = self._new_trip(key, model.time, model.location)
            else:  # the end came first (partitions read out of order): keep it, fill the start
                trip["started_at"] = format_timestamp(model.time)
                trip["start_location"] = _loc(model.location)
                trip["_since"] = model.time.timestamp()
            return
        summary = model.summary
        if trip is None:
            trip = self._new_trip(key, summary.started_at, summary.start_location)
        trip.update(status="ended", ended_at=format_timestamp(summary.ended_at),
                    end_location=_loc(summary.end_location),
                    summary=summary.model_dump(mode="json"))
        trip["_until"] = summary.ended_at.timestamp()

    def _new_trip(self, key: tuple[str, str], started: Any, location: Any) -> dict[str, Any]:
        trip: dict[str, Any] = {
            "trip_id": key[1], "vehicle_id": key[0], "status": "in_progress",
            "started_at": format_timestamp(started), "ended_at": None,
            "start_location": _loc(location), "end_location": None, "summary": None,
            "_since": started.timestamp(), "_until": None}
        self.trips[key] = trip
        while len(self.trips) > self.trips_keep:
            self.trips.popitem(last=False)
        return trip

    # ------------------------------------------------------------------ reading
    def events(self, limit: int, kinds: Collection[str] | None = None,
               vehicles: Collection[str] | None = None, since: float | None = None
               ) -> list[FleetEntry]:
        """Matching events, oldest first (by event time), the newest ``limit`` of them."""
        found = [e for e in self.recent
                 if (kinds is None or e.kind in kinds)
                 and (vehicles is None or e.vehicle_id in vehicles)
                 and (since is None or e.ts >= since)]
        found.sort(key=lambda e: e.ts)
        return found[-limit:] if limit else []

    def trip_list(self, limit: int, vehicles: Collection[str] | None = None,
                  since: float | None = None, until: float | None = None
                  ) -> list[dict[str, Any]]:
        """Trips overlapping [since, until] (an in-progress trip reaches now), newest first."""
        found = [t for t in self.trips.values()
                 if (vehicles is None or t["vehicle_id"] in vehicles)
                 and (until is None or t["_since"] <= until)
                 and (since is None or t["_until"] is None or t["_until"] >= since)]
        found.sort(key=lambda t: t["_since"], reverse=True)
        return [public_trip(t) for t in found[:limit]]

    def find_trips(self, trip_id: str, vehicles: Collection[str] | None = None
                   ) -> list[dict[str, Any]]:
        return [t for (vid, tid), t in self.trips.items()
                if tid == trip_id and (vehicles is None or vid in vehicles)]


def public_trip(trip: dict[str, Any]) -> dict[str, Any]:
    """The trip object of the API (the store's private bounds left out)."""
    return {k: v for k, v in trip.items() if not k.startswith("_")}


class EventHub(ClientCaps):
    """WS /ws/events clients: per-client bounded queues of shared frames, filtered by kind
    and vehicle; client caps like :class:`webapi.hub.Hub`'s (counted separately)."""

    def __init__(self, metrics: FleetEventMetrics, queue_size: int, max_clients: int,
                 max_per_address: int) -> None:
        super().__init__(max_clients, max_per_address)
        self.metrics = metrics
        self.queue_size = queue_size
        self.subscribers: dict[Subscriber, frozenset[str] | None] = {}  # -> kinds
        self.dropped_total = 0

    def subscribe(self, kinds: frozenset[str] | None, vehicles: frozenset[str] | None,
                  address: str) -> Subscriber:
        sub = Subscriber(vehicles, self.queue_size, address)
        self.subscribers[sub] = kinds
        self._joined(address)
        self.metrics.ws_clients.set(len(self.subscribers))
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if self.subscribers.pop(sub, False) is not False:
            self._left(sub.address)
        self.metrics.ws_clients.set(len(self.subscribers))

    def publish(self, entries: Iterable[FleetEntry]) -> None:
        if not self.subscribers:
            return
        for entry in entries:
            frame = EVENT_PREFIX + entry.raw + b"}"  # built once, shared
            for sub, kinds in self.subscribers.items():
                if (kinds is None or entry.kind in kinds) and (
                        sub.vehicles is None or entry.vehicle_id in sub.vehicles):
                    if len(sub.queue) == sub.queue.maxlen:
                        sub.dropped += 1
                        self.dropped_total += 1
                        self.metrics.ws_dropped.inc()
                    sub.queue.append(frame)
                    sub.wake.set()

    def close_all(self) -> None:
        for sub in self.subscribers:
            sub.wake.set()


class FleetEventMetrics:
    """The instruments of this module, in the app's registry."""

    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        self.consumed = Counter("fleetstream_webapi_fleet_events_consumed",
                                "Derived fleet events consumed, validated and new", registry=r)
        self.duplicates = Counter("fleetstream_webapi_fleet_events_duplicates",
                                  "Derived fleet events skipped as already seen (event_id)",
                                  registry=r)
        self.rejected = Counter("fleetstream_webapi_fleet_events_rejected",
                                "Records of the events topic skipped as invalid", ["reason"],
                                registry=r)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason)
        self.ws_clients = Gauge("fleetstream_webapi_events_ws_clients",
                                "Connected WS /ws/events clients", registry=r)
        self.ws_dropped = Counter("fleetstream_webapi_events_ws_dropped",
                                  "Events dropped from slow WS /ws/events clients' queues",
                                  registry=r)


class FleetEventsConsumer:
    """Background task: KAFKA_EVENTS_TOPIC from its beginning -> store and hub."""

    def __init__(self, settings: Settings, store: EventStore, hub: EventHub,
                 metrics: FleetEventMetrics) -> None:
        self.settings = settings
        self.topic = settings.kafka_events_topic
        self.store = store
        self.hub = hub
        self.metrics = metrics
        self.rejected: dict[str, int] = {}
        self.positions: dict[TopicPartition, int] = {}
        self.task: asyncio.Task[None] | None = None
        self.assigned = asyncio.Event()
        self._log = RateLimitedLog(log)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="webapi-fleet-events-consumer")

    async def close(self) -> None:
        await cancel_and_wait(self.task)

    async def run(self) -> None:
        attempt = 0
        while True:
            client = make_consumer(self.settings, client_id="fleetstream-webapi-events",
                                   group_id=None, enable_auto_commit=False,
                                   auto_offset_reset="earliest", fetch_max_wait_ms=100,
                                   metadata_max_age_ms=int(
                                       self.settings.metadata_refresh_s * 1000))
            try:
                await finish_first(client.start())
                tps = await await_partitions(
                    self.settings, self.topic, poll_s=1.0,
                    client_id="fleetstream-webapi-events-admin",
                    waiting=lambda: self._log.warning(
                        "no-topic", "waiting for events topic %r to exist (the events job "
                        "creates it)", self.topic))
                client.assign(tps)
                await finish_first(client.seek_to_beginning(*tps))
                for tp in tps:  # after a reconnect: resume, do not replay
                    if tp in self.positions:
                        client.seek(tp, self.positions[tp])
                self.assigned.set()
                attempt = 0
                await self._loop(client, tps)
            except KafkaError as exc:
                self._log.warning("kafka", "events consumer: %s; retrying", exc)
            finally:
                await finish_first(client.stop())
            attempt += 1
            await asyncio.sleep(backoff(attempt))

    async def _loop(self, client: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        refresh_s = self.settings.metadata_refresh_s
        check_at = time.monotonic() + refresh_s
        while True:
            if time.monotonic() >= check_at:  # partitions added to the topic join
                check_at = time.monotonic() + refresh_s
                tps = await add_new_partitions(client, self.topic, tps, self.positions)
            try:
                batches = await client.getmany(timeout_ms=500, max_records=MAX_RECORDS)
            except Exception as exc:
                if not undecodable(exc):
                    raise
                await self._skip_undecodable(client, tps, exc)
                continue
            for tp, records in batches.items():
                self.take(records)
                if records:
                    self.positions[tp] = records[-1].offset + 1

    async def _skip_undecodable(self, client: AIOKafkaConsumer, tps: list[TopicPartition],
                                exc: Exception) -> None:
        """Find the partition whose fetch fails and step over one record there."""
        for tp in tps:
            try:
                batch = await client.getmany(tp, timeout_ms=200, max_records=MAX_RECORDS)
            except Exception as again:
                if not undecodable(again):
                    raise
                offset = await client.position(tp)
                client.seek(tp, offset + 1)
                self.positions[tp] = offset + 1
                self._reject(Rejected("undecodable", f"{type(exc).__name__}: {exc}"),
                             tp.partition, offset)
                continue
            records = batch.get(tp, [])
            self.take(records)
            if records:
                self.positions[tp] = records[-1].offset + 1

    def take(self, records: list[ConsumerRecord[bytes, bytes]]) -> list[FleetEntry]:
        new: list[FleetEntry] = []
        latest = time.time() + self.settings.max_event_future_s
        for rec in records:
            try:
                entry, model = decode_event(rec.value, rec.key,
                                            self.settings.max_message_bytes, latest)
            except Rejected as bad:
                self._reject(bad, rec.partition, rec.offset)
                continue
            if self.store.add(entry, model):
                new.append(entry)
            else:
                self.metrics.duplicates.inc()
        if new:
            self.metrics.consumed.inc(len(new))
            self.hub.publish(new)
        return new

    def _reject(self, bad: Rejected, partition: int, offset: int) -> None:
        self.rejected[bad.reason] = self.rejected.get(bad.reason, 0) + 1
        self.metrics.rejected.labels(bad.reason).inc()
        self._log.warning(bad.reason, "skipped record of %s (%s) at partition %d offset %d: %s",
                          self.topic, bad.reason, partition, offset, bad.detail[:200])

    def stats(self) -> dict[str, Any]:
        return {"consumed_total": self.store.consumed_total,
                "duplicates_total": self.store.duplicates_total,
                "rejected_total": self.rejected_total,
                "rejected": dict(sorted(self.rejected.items())),
                "trips": len(self.store.trips)}
