"""Webhooks: registration, signed delivery, retries, give-up, isolation of a slow target,
kinds, a restart mid-delivery, and the SSRF guard.

Pure tests first (signing, target checks). The rest run the real web API against the real
broker, with real aiohttp receivers on 127.0.0.1 as targets (so WEBAPI_WEBHOOK_ALLOW_PRIVATE
is on, except where the guard itself is tested), and publish derived events built with the
contract's models to an events topic of their own.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaProducer

from common.contract import Location
from common.fleet_events import (
    Alert,
    TripEnded,
    TripStarted,
    TripSummary,
    Violations,
    derived_event_id,
)
from common.kafka import backoff
from tests.support.webapi import AppClient, control_settings, publish, running_app, wait_for
from webapi.keys import WEBHOOK_WORKER
from webapi.settings import Settings
from webapi.webhook_delivery import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    WEBHOOK_ID_HEADER,
    DeliveryWorker,
    SafeResolver,
    retry_delay,
    sign,
    signature_header,
    verify,
)
from webapi.webhook_targets import TargetRefused, check_target, check_url, forbidden_reason
from webapi.webhooks import OUTBOX_MAX, DeliveryRecord, Webhook, WebhookStore, parse_spec

AUTH = {"Authorization": "Bearer tok"}
SECRET = "s3cret-for-the-test-only"  # noqa: S105
DELIVERY_KEYS = {"event_id", "kind", "attempts", "status", "last_status_code", "last_error",
                 "first_attempt_at", "last_attempt_at"}
T0 = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------- pure
def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"kind":"alert","event_id":"x"}'
    expected = hmac.new(SECRET.encode(), b"1764403200." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1764403200, body) == expected
    header = signature_header(SECRET, 1764403200, body)
    assert header == f"t=1764403200,v1={expected}"
    assert verify(header, SECRET, body, now=1764403200 + 10)
    assert not verify(header, SECRET, body + b" ", now=1764403200)  # body changed
    assert not verify(header, "another-secret-16chars", body, now=1764403200)
    assert not verify(header, SECRET, body, now=1764403200 + 301)  # too old: a replay
    assert not verify("v1=" + expected, SECRET, body, now=1764403200)  # no t
    assert not verify("t=abc,v1=" + expected, SECRET, body, now=1764403200)


@pytest.mark.parametrize("address, word", [
    ("127.0.0.1", "loopback"), ("127.1.2.3", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
    ("fc00::1", "private"), ("169.254.169.254", "link-local"), ("fe80::1%eth0", "link-local"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"),  # noqa: S104
    ("::", "unspecified"), ("240.0.0.1", "reserved"), ("100.64.0.1", "globally routable"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"),
    ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
    ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
    ("not-an-ip", "not an IP address"),
])
def test_non_public_addresses_are_refused(address: str, word: str) -> None:
    reason = forbidden_reason(address)
    assert reason is not None and word in reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111",
                                     "93.184.215.14"])
def test_public_addresses_pass(address: str) -> None:
    assert forbidden_reason(address) is None


@pytest.mark.parametrize("url, word", [
    ("ftp://example.com/hook", "scheme"), ("file:///etc/passwd", "scheme"),
    ("http://user:pw@example.com/", "credentials"), ("http://user@example.com/", "credentials"),
    ("http:///path", "host"), ("http://exa mple.com/", "ASCII"), ("http://bü.de/", "ASCII"),
    ("http://example.com/#frag", "fragment"), ("http://example.com:0/", "port"),
    ("http://example.com:99999/", "URL"), ("http://[::1/", "URL"), ("http://a\x00b/", "ASCII"),
    # host labels the resolver and the HTTP client cannot encode (a 500 at registration)
    ("http://a..example.com/", "DNS name"), ("http://.example.com/", "DNS name"),
    ("http://" + "a" * 64 + ".example.com/", "DNS name"), ("http://-a.example.com/", "DNS name"),
    ("http://" + "a." * 127 + "com/", "DNS name"),
])
def test_bad_urls_are_refused(url: str, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        check_url(url)


def test_good_urls_pass() -> None:
    for url in ("https://example.com/hook?x=1", "http://example.com:8080/a/b", "http://[2606:4700::1]/",
                "http://example.com./", "http://my_host.example.com/",
                "http://" + "a" * 63 + ".io/"):
        assert check_url(url) == url


async def test_a_url_the_http_client_cannot_use_is_a_failed_attempt() -> None:
    """Registered before hosts were checked (or stored by hand): the client's UnicodeError
    is a failed attempt, recorded and retried, not a delivery lost with the worker."""
    worker = DeliveryWorker(Settings(webhook_allow_private=True), store=None)  # type: ignore[arg-type]
    worker._session = aiohttp.ClientSession()
    try:
        for url in ("http://a..example.com/", "http://" + "a" * 64 + ".example.com/"):
            hook = Webhook.model_construct(url=url, secret="s" * 16, id="ab", kinds=("alert",),
                                           created_at=datetime.now(UTC))
            code, error = await worker.attempt(hook, "e1", b"{}")
            assert code is None and error is not None and "UnicodeError" in error
    finally:
        await worker._session.close()


async def test_targets_are_resolved_and_checked() -> None:
    for url in ("http://localhost:8080/x", "http://127.0.0.1/", "http://[::ffff:127.0.0.1]/",
                "http://10.0.0.1/", "https://169.254.169.254/latest/meta-data",
                "http://2130706433/", "http://0x7f000001/", "http://127.1/",
                "http://[fe80::1%25eth0]/"):  # loopback spelled as numbers; a scoped address
        with pytest.raises(TargetRefused, match="refused"):
            await check_target(url, allow_private=False)
        await check_target(url, allow_private=True)  # allowed: nothing is even resolved
    with pytest.raises(TargetRefused, match="cannot resolve"):
        await check_target("http://no-such-host.invalid/", allow_private=False)
    await check_target("http://8.8.8.8/", allow_private=False)


async def test_delivery_resolver_refuses_private_addresses() -> None:
    resolver = SafeResolver()
    try:
        with pytest.raises(OSError, match="refused: localhost resolves to .*loopback"):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


def test_retry_delay_is_full_jitter_under_the_exponential_cap() -> None:
    rng = random.Random(1)
    for attempt in range(1, 12):
        cap = backoff(attempt, first_delay_s=1.0, max_delay_s=60.0, jitter=0)
        delays = [retry_delay(attempt, 1.0, 60.0, rng) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert min(delays) < cap / 4 and max(delays) > cap * 3 / 4  # spread over [0, cap]
    assert backoff(11, first_delay_s=1.0, max_delay_s=60.0, jitter=0) == 60.0


def test_spec_errors_name_the_field_and_never_echo_the_secret() -> None:
    def error(doc: Any) -> dict[str, Any]:
        with pytest.raises(Exception) as info:
            parse_spec(orjson.dumps(doc))
        return info.value.body  # type: ignore[attr-defined]

    ok = {"url": "https://example.com/h", "secret": SECRET, "kinds": ["alert"]}
    assert SECRET not in repr(parse_spec(orjson.dumps(ok)))  # nor in a log line of it
    assert parse_spec(orjson.dumps({**ok, "kinds": ["alert", "trip_started", "alert"]})
                      ).kinds == ["trip_started", "alert"]
    short = error({**ok, "secret": "short-secret"})
    assert short["parameter"] == "secret" and "short-secret" not in str(short)
    assert "short-secret" not in str(error({**ok, "secret": "short-secret", "x": 1}))
    assert error({**ok, "secret": "tab\tin-the-secret-here"})["parameter"] == "secret"
    assert error({**ok, "kinds": []})["parameter"] == "kinds"
    assert "one of" in error({**ok, "kinds": ["speeding"]})["error"]
    assert error({**ok, "url": "ftp://x/"})["parameter"] == "url"
    assert error({**ok, "url": "https://e.com/" + "a" * 2100})["parameter"] == "url"
    assert error({**ok, "extra": 1})["parameter"] == "extra"
    assert error([1, 2])["parameter"] == "body"
    assert error({"url": "https://example.com/h"})["parameter"] == "secret"


def test_delivery_records_wait_for_kafka_in_a_bounded_outbox() -> None:
    store = WebhookStore(Settings())
    record = DeliveryRecord(webhook_id="ab", event_id="e", kind="alert", attempts=1,
                            status="retrying", last_status_code=500, last_error="HTTP 500",
                            first_attempt_at=T0, last_attempt_at=T0)
    for _ in range(OUTBOX_MAX + 5):
        store.publish(record)
    assert len(store._outbox) == OUTBOX_MAX and store.records_lost == 5
    store.take(Settings().webhook_deliveries_topic, b"ab", record.model_dump_json().encode())
    assert [r.public() for r in store.deliveries["ab"].values()] == [{
        "event_id": "e", "kind": "alert", "attempts": 1, "status": "retrying",
        "last_status_code": 500, "last_error": "HTTP 500",
        "first_attempt_at": T0.isoformat(), "last_attempt_at": T0.isoformat()}]


# ---------------------------------------------------------------------------- receivers
@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    received_at: float


@dataclass
class Receiver:
    """Paths answer from a script of statuses, then ``default``; a gate holds requests."""

    scripts: dict[str, list[int]] = field(default_factory=dict)
    default: dict[str, int] = field(default_factory=dict)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    waiting: dict[str, int] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        body = await request.read()
        gate = self.gates.get(path)
        if gate is not None:
            self.waiting[path] = self.waiting.get(path, 0) + 1
            await gate.wait()
        script = self.scripts.get(path, [])
        status = script.pop(0) if script else self.default.get(path, 200)
        self.hits.append(Hit(path, dict(request.headers), body, status, time.time()))
        location = {"Location": "/elsewhere"} if 300 <= status < 400 else {}
        return web.Response(status=status, text="ok", headers=location)

    def at(self, path: str, status: int | None = None) -> list[Hit]:
        return [h for h in self.hits if h.path == path and (status is None or h.status == status)]


@asynccontextmanager
async def receiver_server(receiver: Receiver) -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield server


# ---------------------------------------------------------------------------- helpers
def alert(n: int, vehicle: str = "CAR1") -> Alert:
    return Alert(event_id=derived_event_id("alert", vehicle, "r1", n), vehicle_id=vehicle,
                 time=T0, location=Location(lat=60.17, lon=24.94), source_seq=n,
                 rule_id="r1", rule_kind="over_redline", message=f"over the redline #{n}",
                 value=6500.0, threshold=6200.0)


def trip_started(vehicle: str = "CAR1") -> TripStarted:
    return TripStarted(event_id=derived_event_id("trip_started", vehicle, "T1"),
                       vehicle_id=vehicle, time=T0, location=Location(lat=60.17, lon=24.94),
                       trip_id="T1", source_seq=0, odometer_km=100.0, fuel_level_pct=50.0)


def trip_ended(vehicle: str = "CAR1") -> TripEnded:
    loc = Location(lat=60.18, lon=24.95)
    summary = TripSummary(started_at=T0, ended_at=T0, end_reason="parked", duration_s=60,
                          moving_s=50, idle_s=10, distance_km=1.0, max_speed_kmh=50,
                          avg_speed_kmh=40, stops=1, fuel_used_pct=0.5,
                          violations=Violations(speeding=0, speeding_s=0, over_redline=1,
                                                alerts=1),
                          start_location=loc, end_location=loc, samples=60)
    return TripEnded(event_id=derived_event_id("trip_ended", vehicle, "T1"), vehicle_id=vehicle,
                     time=T0, location=loc, trip_id="T1", source_seq=60, summary=summary)


async def send_events(settings: Settings, *events: Any) -> list[bytes]:
    values = [e.model_dump_json().encode() for e in events]
    for event, value in zip(events, values, strict=True):
        await publish(settings.kafka_bootstrap_servers, settings.kafka_events_topic, [value],
                      key=event.vehicle_id.encode())
    return values


async def register(client: AppClient, url: str, kinds: list[str]) -> dict[str, Any]:
    resp = await client.post("/webhooks", json={"url": url, "secret": SECRET, "kinds": kinds},
                             headers=AUTH)
    text = await resp.text()
    assert resp.status == 201, text
    assert SECRET not in text
    body = orjson.loads(text)
    assert set(body) == {"id", "url", "kinds", "created_at"}
    assert body["url"] == url and body["kinds"] == kinds
    return body


async def deliveries(client: AppClient, hook_id: str) -> list[dict[str, Any]]:
    resp = await client.get(f"/webhooks/{hook_id}/deliveries", headers=AUTH)
    text = await resp.text()
    assert resp.status == 200, text
    assert SECRET not in text
    items: list[dict[str, Any]] = orjson.loads(text)["items"]
    assert all(set(i) == DELIVERY_KEYS for i in items)
    return items


async def settled(client: AppClient, hook_id: str, count: int) -> list[dict[str, Any]]:
    """Poll the deliveries until ``count`` events are delivered or given up."""
    async def done() -> list[dict[str, Any]] | None:
        items = await deliveries(client, hook_id)
        final = [i for i in items if i["status"] != "retrying"]
        return items if len(final) >= count else None
    result: list[dict[str, Any]] = await wait_for(done, timeout=120, interval=0.1)
    return result


async def worker_ready(client: AppClient, partitions: int = 2) -> None:
    worker = client.app[WEBHOOK_WORKER]
    await wait_for(lambda: worker.ready.is_set() and len(worker.partitions) == partitions,
                   timeout=120)


def check_signed(hit: Hit, body: bytes, hook_id: str, event_id: str) -> None:
    assert hit.body == body  # the contract's JSON of the event, as the API serves it
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers[EVENT_ID_HEADER] == event_id
    assert hit.headers[WEBHOOK_ID_HEADER] == hook_id
    assert verify(hit.headers[SIGNATURE_HEADER], SECRET, hit.body, now=hit.received_at)
    assert not verify(hit.headers[SIGNATURE_HEADER], "wrong-secret-of-16+", hit.body,
                      now=hit.received_at)


# ---------------------------------------------------------------------------- integration
@pytest.fixture
def settings(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path) -> Settings:
    tag = uuid.uuid4().hex[:12]
    update: dict[str, Any] = {
        "kafka_events_topic": topic_factory("events", 2),
        "webhooks_topic": f"webhooks-{tag}", "webhook_deliveries_topic": f"deliveries-{tag}",
        "webhook_group": f"webhooks-{tag}", "webhook_allow_private": True,
        "webhook_max_attempts": 3, "webhook_backoff_s": 0.05, "webhook_backoff_max_s": 0.2,
        "webhook_timeout_s": 5.0}
    for name in ("kafka_geofences_topic", "kafka_alert_rules_topic"):
        if name in Settings.model_fields:
            update[name] = f"{name[6:-6]}-{tag}"
    base = control_settings(kafka_bootstrap, topic, topic_factory, tmp_path)
    return base.model_copy(update=update)




@pytest.mark.kafka
async def test_delivered_signed_listed_without_secret_and_deleted(settings: Settings) -> None:
    receiver = Receiver()
    async with receiver_server(receiver) as target, running_app(settings) as client:
        url = str(target.make_url("/hook?team=ops"))
        hook = await register(client, url, ["alert"])
        await worker_ready(client)
        [body] = await send_events(settings, event := alert(1))

        [item] = await settled(client, hook["id"], 1)
        assert item["event_id"] == event.event_id and item["kind"] == "alert"
        assert (item["status"], item["attempts"], item["last_status_code"],
                item["last_error"]) == ("delivered", 1, 200, None)
        [hit] = receiver.hits
        assert hit.path == "/hook"
        check_signed(hit, body, hook["id"], event.event_id)

        listed = await client.get("/webhooks", headers=AUTH)
        text = await listed.text()
        assert listed.status == 200 and SECRET not in text
        assert orjson.loads(text) == {"items": [hook]}
        assert (await client.get("/webhooks")).status == 401  # the token guards reads too
        assert (await client.delete(f"/webhooks/{hook['id']}")).status == 401

        doc = await (await client.get("/openapi.json")).json()
        assert {"/webhooks", "/webhooks/{id}", "/webhooks/{id}/deliveries"} <= set(doc["paths"])
        headers = {p["name"] for p in doc["webhooks"]["fleetEvent"]["post"]["parameters"]}
        assert {EVENT_ID_HEADER, SIGNATURE_HEADER, WEBHOOK_ID_HEADER} <= headers

        gone = await client.delete(f"/webhooks/{hook['id']}", headers=AUTH)
        assert gone.status == 204
        assert await (await client.get("/webhooks", headers=AUTH)).json() == {"items": []}
        assert (await client.delete(f"/webhooks/{hook['id']}", headers=AUTH)).status == 404
        missing = await client.get(f"/webhooks/{hook['id']}/deliveries", headers=AUTH)
        assert missing.status == 404 and set(await missing.json()) == {"error"}


@pytest.mark.kafka
async def test_retried_until_delivered_or_given_up(settings: Settings) -> None:
    receiver = Receiver(scripts={"/flaky": [500, 503]}, default={"/broken": 500,
                                                                  "/moved": 307})
    async with receiver_server(receiver) as target, running_app(settings) as client:
        flaky = await register(client, str(target.make_url("/flaky")), ["alert"])
        broken = await register(client, str(target.make_url("/broken")), ["alert"])
        moved = await register(client, str(target.make_url("/moved")), ["alert"])
        await worker_ready(client)
        [body] = await send_events(settings, event := alert(2))

        [ok] = await settled(client, flaky["id"], 1)
        assert (ok["status"], ok["attempts"], ok["last_status_code"],
                ok["last_error"]) == ("delivered", 3, 200, None)
        assert [h.status for h in receiver.at("/flaky")] == [500, 503, 200]
        for hit in receiver.at("/flaky"):  # every attempt signed afresh, same event id
            check_signed(hit, body, flaky["id"], event.event_id)

        [failed] = await settled(client, broken["id"], 1)
        assert (failed["status"], failed["attempts"], failed["last_status_code"],
                failed["last_error"]) == ("gave_up", 3, 500, "HTTP 500")
        assert failed["first_attempt_at"] < failed["last_attempt_at"]
        assert [h.status for h in receiver.at("/broken")] == [500] * 3
        [redirected] = await settled(client, moved["id"], 1)  # redirects are not followed
        assert (redirected["status"], redirected["last_error"]) == ("gave_up", "HTTP 307")
        assert len(receiver.at("/moved")) == 3 and not receiver.at("/elsewhere")
        worker = client.app[WEBHOOK_WORKER]
        await wait_for(lambda: worker.in_flight == 0)
        assert len(receiver.at("/broken")) == 3  # nothing after giving up
        assert worker.outcomes["gave_up"] == 2 and worker.outcomes["delivered"] == 1
        text = await (await client.get("/metrics")).text()
        assert 'fleetstream_webapi_webhook_deliveries_total{status="gave_up"} 2.0' in text
        assert 'fleetstream_webapi_webhook_attempts_total{result="failed"} 8.0' in text
        assert 'fleetstream_webapi_webhook_attempts_total{result="ok"} 1.0' in text
        assert "fleetstream_webapi_webhook_in_flight 0.0" in text


@pytest.mark.kafka
async def test_a_slow_target_delays_no_other_target_nor_the_api(settings: Settings) -> None:
    gate = asyncio.Event()
    receiver = Receiver(gates={"/slow": gate})
    settings = settings.model_copy(update={"webhook_timeout_s": 120.0, "webhook_concurrency": 2})
    async with receiver_server(receiver) as target, running_app(settings) as client:
        slow = await register(client, str(target.make_url("/slow")), ["alert"])
        fast = await register(client, str(target.make_url("/fast")), ["alert"])
        await worker_ready(client)
        events = [alert(n, vehicle=f"CAR{n}") for n in range(6)]
        await send_events(settings, *events)
        ids = {e.event_id for e in events}

        await wait_for(lambda: {h.headers[EVENT_ID_HEADER] for h in receiver.at("/fast")} == ids,
                       timeout=60)
        assert not receiver.at("/slow")  # every slow request still held at the gate
        assert receiver.waiting["/slow"] <= 2  # WEBAPI_WEBHOOK_CONCURRENCY per target
        assert (await client.get("/health")).status == 200
        assert len(await settled(client, fast["id"], 6)) == 6

        gate.set()
        await wait_for(lambda: {h.headers[EVENT_ID_HEADER] for h in receiver.at("/slow")} == ids,
                       timeout=60)
        items = await settled(client, slow["id"], 6)
        assert {i["event_id"] for i in items} == ids
        assert {(i["status"], i["attempts"]) for i in items} == {("delivered", 1)}


@pytest.mark.kafka
async def test_each_webhook_gets_only_its_kinds(settings: Settings) -> None:
    receiver = Receiver()
    async with receiver_server(receiver) as target, running_app(settings) as client:
        alerts = await register(client, str(target.make_url("/alerts")), ["alert"])
        trips = await register(client, str(target.make_url("/trips")),
                               ["trip_started", "trip_ended"])
        await worker_ready(client)
        started, raised, ended = trip_started(), alert(3), trip_ended()
        await send_events(settings, started, raised, ended)
        worker = client.app[WEBHOOK_WORKER]
        await wait_for(lambda: worker.events_seen == 3 and worker.in_flight == 0
                       and len(receiver.hits) == 3, timeout=60)
        assert [h.headers[EVENT_ID_HEADER] for h in receiver.at("/alerts")] == [raised.event_id]
        assert sorted(h.headers[EVENT_ID_HEADER] for h in receiver.at("/trips")) == sorted(
            [started.event_id, ended.event_id])
        assert {i["kind"] for i in await settled(client, trips["id"], 2)} == {
            "trip_started", "trip_ended"}
        assert [i["kind"] for i in await settled(client, alerts["id"], 1)] == ["alert"]


@pytest.mark.kafka
async def test_a_restart_mid_delivery_still_delivers_the_event(settings: Settings) -> None:
    receiver = Receiver(default={"/restart": 500})
    settings = settings.model_copy(update={"webhook_max_attempts": 1000})
    async with receiver_server(receiver) as target:
        async with running_app(settings) as client:
            hook = await register(client, str(target.make_url("/restart")), ["alert"])
            await worker_ready(client)
            [body] = await send_events(settings, event := alert(4))
            await wait_for(lambda: len(receiver.at("/restart")) >= 2, timeout=60)
        # the first instance is gone with the delivery pending; the target recovers
        receiver.default["/restart"] = 200
        tried = len(receiver.hits)
        async with running_app(settings) as client:
            listed = await (await client.get("/webhooks", headers=AUTH)).json()
            assert listed == {"items": [hook]}  # the registry survived the restart
            await wait_for(lambda: receiver.at("/restart", 200), timeout=60)
            [item] = await settled(client, hook["id"], 1)
            assert item["status"] == "delivered" and item["last_status_code"] == 200
        assert len(receiver.hits) > tried
        assert {h.headers[EVENT_ID_HEADER] for h in receiver.hits} == {event.event_id}
        check_signed(receiver.at("/restart", 200)[0], body, hook["id"], event.event_id)


@pytest.mark.kafka
async def test_two_instances_share_the_deliveries(settings: Settings) -> None:
    receiver = Receiver()
    async with receiver_server(receiver) as target, running_app(settings) as first:
        hook = await register(first, str(target.make_url("/shared")), ["alert"])
        async with running_app(settings) as second:
            workers = [first.app[WEBHOOK_WORKER], second.app[WEBHOOK_WORKER]]
            await wait_for(lambda: all(w.ready.is_set() and len(w.partitions) == 1
                                       for w in workers), timeout=180)  # a rebalance
            events = [alert(n, vehicle=f"CAR{n}") for n in range(10)]
            await send_events(settings, *events)
            ids = {e.event_id for e in events}
            await wait_for(lambda: {h.headers[EVENT_ID_HEADER] for h in receiver.hits} == ids,
                           timeout=60)
            assert all(w.events_seen > 0 for w in workers)  # each served its partition
            assert sum(w.events_seen for w in workers) == 10
            for client in (first, second):  # either instance tells every delivery
                items = await settled(client, hook["id"], 10)
                assert {i["event_id"] for i in items} == ids


@pytest.mark.kafka
async def test_private_targets_are_refused_unless_allowed(settings: Settings) -> None:
    settings = settings.model_copy(update={"webhook_allow_private": False,
                                           "webhook_max_attempts": 2})
    receiver = Receiver()
    async with receiver_server(receiver) as target, running_app(settings) as client:
        local = str(target.make_url("/private"))
        for url in (local, "http://localhost:8080/x", "http://[::ffff:127.0.0.1]/",
                    "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/"):
            resp = await client.post("/webhooks", headers=AUTH,
                                     json={"url": url, "secret": SECRET, "kinds": ["alert"]})
            body = await resp.json()
            assert resp.status == 422, (url, body)
            assert body["parameter"] == "url" and "refused" in body["error"]
            assert "WEBAPI_WEBHOOK_ALLOW_PRIVATE" in body["error"]
        ok = {"url": "https://example.com/h", "secret": SECRET, "kinds": ["alert"]}
        bad = [({**ok, "kinds": ["nope"]}, 422), ({**ok, "secret": "x" * 15}, 422),
               ({**ok, "url": "https://u:p@example.com/"}, 422), (b"{", 422),
               (b"x" * 10_000, 413)]
        for doc, status in bad:
            data = doc if isinstance(doc, bytes) else orjson.dumps(doc)
            resp = await client.post("/webhooks", data=data, headers=AUTH)
            assert resp.status == status, (doc, await resp.text())
        assert (await client.post("/webhooks", json=ok)).status == 401
        assert await (await client.get("/webhooks", headers=AUTH)).json() == {"items": []}

        # A target that turns private after registration (DNS changed) is refused at delivery:
        # written to the registry topic directly, as if it had passed the check back then.
        # An IP literal is checked before connecting, a name by the connection's resolver.
        by_name = local.replace("127.0.0.1", "localhost")
        hooks = [Webhook(id=uuid.uuid4().hex, url=url, secret=SECRET, kinds=["alert"],
                         created_at=datetime.now(UTC)) for url in (local, by_name)]
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
        await producer.start()
        try:
            for hook in hooks:
                await producer.send_and_wait(settings.webhooks_topic, key=hook.id.encode(),
                                             value=hook.model_dump_json().encode())
        finally:
            await producer.stop()
        store = client.app[WEBHOOK_WORKER].store
        await wait_for(lambda: all(h.id in store.hooks for h in hooks))
        await worker_ready(client)
        await send_events(settings, alert(5))
        [literal] = await settled(client, hooks[0].id, 1)
        assert (literal["status"], literal["attempts"], literal["last_status_code"]) == (
            "gave_up", 2, None)
        assert literal["last_error"].startswith("refused: 127.0.0.1 is a loopback address")
        [named] = await settled(client, hooks[1].id, 1)
        assert (named["status"], named["attempts"], named["last_status_code"]) == (
            "gave_up", 2, None)
        assert "refused: localhost resolves to" in named["last_error"]
        assert "loopback" in named["last_error"]
        assert receiver.hits == []


async def test_the_readme_receiver_accepts_our_signature_and_refuses_forgeries(
        capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("### Webhooks"):]
    code = section[section.index("```python\n") + 10:]
    code = code[:code.index("```")]
    assert len(code.strip().splitlines()) <= 17
    namespace: dict[str, Any] = {}
    exec(code.replace("web.run_app(", "(lambda *a, **k: None)("), namespace)  # noqa: S102
    app, secret = namespace["app"], namespace["SECRET"].decode()
    body = alert(9).model_dump_json().encode()
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        async def post(signature: str, data: bytes = body) -> int:
            headers = {SIGNATURE_HEADER: signature, EVENT_ID_HEADER: alert(9).event_id}
            async with session.post(server.make_url("/hook"), data=data,
                                    headers=headers) as resp:
                return resp.status

        now = int(time.time())
        assert await post(signature_header(secret, now, body)) == 204
        assert alert(9).event_id in capsys.readouterr().out
        assert await post(signature_header(secret, now, body), body + b" ") == 401
        assert await post(signature_header("not-the-secret-at-all", now, body)) == 401
        assert await post(signature_header(secret, now - 3600, body)) == 401  # a replay


# ---------------------------------------------------------------------------- audit findings
async def send_records(settings: Settings, topic: str,
                       records: list[tuple[bytes | None, bytes | None]]) -> None:
    """Raw records, each with its own key, as a foreign writer would send them."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                acks="all", max_request_size=1 << 20)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()


def hostile_events() -> list[tuple[bytes, bytes]]:
    """Events the store refuses (webapi.fleet_events.decode_event), so no webhook may get."""
    def doc(event: Any, **over: Any) -> bytes:
        d = orjson.loads(event.model_dump_json())
        d.update(over)
        return json.dumps(d).encode()  # orjson cannot write 10**30

    big = orjson.loads(alert(3, "V5").model_dump_json())
    big["message"] = "m"
    big["pad"] = "P" * 100_000
    ended = orjson.loads(trip_ended("V7").model_dump_json())
    ended["summary"]["samples"] = 10**30
    return [(b"OTHER", doc(alert(1, "V1"))),  # key is not the vehicle_id
            (b"V2", doc(alert(1, "V2"), time="2099-01-01T00:00:00.000000+00:00")),
            (b"V3", doc(alert(1, "V3"), time=1767254400)),
            (b"V4", doc(alert(1, "V4"), source_seq="5")),
            (b"V5", json.dumps(big).encode()),  # 100 KB: beyond WEBAPI_MAX_MESSAGE_BYTES
            (b"V6", doc(alert(1, "V6"), event_id="a\r\nX-Injected: yes\r\nxxxxxxxxxxxxxxxx")),
            (b"V6", doc(alert(2, "V6"), event_id="\u2603" * 36)),
            (b"V6", doc(alert(3, "V6"), event_id=alert(3, "V6").event_id.upper())),
            (b"V7", json.dumps(ended).encode()),
            (b"V8", doc(alert(1, "V8"), source_seq=10**30))]


@pytest.mark.kafka
async def test_the_worker_delivers_only_what_the_event_store_accepts(
        settings: Settings) -> None:
    receiver = Receiver()
    async with receiver_server(receiver) as target, running_app(settings) as client:
        hook = await register(client, str(target.make_url("/all")),
                              ["trip_started", "trip_ended", "alert"])
        await worker_ready(client)
        bad = hostile_events()
        await send_records(settings, settings.kafka_events_topic, bad)
        [body] = await send_events(settings, good := alert(7))
        [item] = await settled(client, hook["id"], 1)
        assert item["event_id"] == good.event_id
        worker = client.app[WEBHOOK_WORKER]
        await wait_for(lambda: worker.events_seen == len(bad) + 1)
        assert worker.malformed == len(bad)
        [hit] = receiver.hits
        check_signed(hit, body, hook["id"], good.event_id)
        stored = await (await client.get("/events?limit=100")).json()
        assert [e["event_id"] for e in stored["items"]] == [good.event_id]


@pytest.mark.kafka
async def test_webhooks_beyond_the_cap_on_the_topic_are_counted_not_used(
        settings: Settings) -> None:
    settings = settings.model_copy(update={"max_webhooks": 3})
    receiver = Receiver()
    async with receiver_server(receiver) as target, running_app(settings) as client:
        store = client.app[WEBHOOK_WORKER].store
        await wait_for(store.ready.is_set, 60)
        url = str(target.make_url("/capped"))
        hooks = [Webhook(id=f"{i:x}0", url=url, secret=SECRET, kinds=["alert"],
                         created_at=T0) for i in range(8)]  # written straight to the topic
        await send_records(settings, settings.webhooks_topic,
                           [(h.id.encode(), h.model_dump_json().encode()) for h in hooks])
        await wait_for(lambda: len(store.registered) == 8)
        assert sorted(store.hooks) == ["00", "10", "20"] and store.over_cap == 5
        listed = await (await client.get("/webhooks", headers=AUTH)).json()
        assert sorted(h["id"] for h in listed["items"]) == ["00", "10", "20"]
        refused = await client.post("/webhooks", headers=AUTH, json={
            "url": url, "secret": SECRET, "kinds": ["alert"]})
        assert refused.status == 409
        await worker_ready(client)
        await send_events(settings, alert(11))
        for hook_id in ("00", "10", "20"):
            await settled(client, hook_id, 1)
        assert len(receiver.at("/capped")) == 3  # one per webhook in effect, none for the rest
        assert (await client.delete("/webhooks/10", headers=AUTH)).status == 204
        await wait_for(lambda: sorted(store.hooks) == ["00", "20", "30"])  # the next one
