"""The web API's read side of the derived events (issue 12): /events, WS /ws/events, /trips
and /trips/{id}, on a real broker. The events are built with the contract's models and
published as the events job would (key = vehicle id); no Spark here."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client import generate_latest

from common.contract import MAX_SEQ, Location
from common.fleet_events import (
    UUID_PATTERN,
    Alert,
    GeofenceEntered,
    TripEnded,
    TripStarted,
    TripSummary,
    Violations,
    derived_event_id,
)
from tests.support.webapi import make_event, publish, running_app, wait_for
from webapi.fleet_events import Rejected, decode_event
from webapi.keys import FLEET_CONSUMER, FLEET_EVENTS
from webapi.settings import Settings
from webapi.trip_route import downsample, violation_segments

pytestmark = pytest.mark.kafka

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(minutes=10)
HERE = Location(lat=48.137, lon=11.575)


def env(kind: str, vid: str, t: datetime, seq: int, trip: str = "", **more: Any) -> dict[str, Any]:
    return dict(event_id=derived_event_id(kind, vid, trip, seq), vehicle_id=vid, time=t,
                location=HERE, trip_id=trip, source_seq=seq, **more)


def started(vid: str, trip: str, t: datetime, seq: int = 0) -> TripStarted:
    return TripStarted(**env("trip_started", vid, t, seq, trip), odometer_km=1000.0,
                       fuel_level_pct=60.0)


def ended(vid: str, trip: str, t0: datetime, t1: datetime, seq: int) -> TripEnded:
    dur = (t1 - t0).total_seconds()
    summary = TripSummary(
        started_at=t0, ended_at=t1, end_reason="stopped", duration_s=dur, moving_s=dur,
        idle_s=0, distance_km=1.5, max_speed_kmh=80, avg_speed_kmh=40, stops=0,
        fuel_used_pct=0.5, violations=Violations(speeding=1, speeding_s=3, over_redline=0,
                                                 alerts=0),
        start_location=HERE, end_location=Location(lat=48.2, lon=11.6), samples=seq + 1)
    return TripEnded(**env("trip_ended", vid, t1, seq, trip), summary=summary)


def alert(vid: str, t: datetime, seq: int, trip: str = "") -> Alert:
    return Alert(**env("alert", vid, t, seq, trip), rule_id="default-over-redline",
                 rule_kind="over_redline", message="over the redline", value=6500.0,
                 threshold=6200.0)


def entered(vid: str, t: datetime, seq: int) -> GeofenceEntered:
    return GeofenceEntered(**env("geofence_entered", vid, t, seq), geofence_id="depot",
                           geofence_name="Depot")


def js(model: Any) -> dict[str, Any]:
    return orjson.loads(model.model_dump_json())


async def send(bootstrap: str, topic: str, records: list[Any]) -> None:
    """Models are sent keyed by their vehicle; (key, value) pairs as they are."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for rec in records:
            if isinstance(rec, tuple):  # (key, value) or (key, value, partition)
                await producer.send_and_wait(topic, key=rec[0], value=rec[1],
                                             partition=rec[2] if len(rec) > 2 else None)
            else:
                await producer.send_and_wait(topic, key=rec.vehicle_id.encode(),
                                             value=rec.model_dump_json().encode())
    finally:
        await producer.stop()


@pytest.fixture
def settings(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path) -> Settings:
    u = uuid.uuid4().hex[:10]
    return Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                    kafka_control_topic=topic_factory("control", 1),
                    kafka_status_topic=topic_factory("status", 1),
                    kafka_network_topic=f"network-{u}",
                    kafka_events_topic=topic_factory("events", 3),
                    kafka_geofences_topic=f"geofences-{u}",
                    kafka_alert_rules_topic=f"rules-{u}", api_token=None, cors_origins=(),
                    analytics_output_dir=tmp_path / "analytics", map_tile_url="",
                    control_timeout_s=1.0, status_stale_s=2.0, trip_route_points=10)


def test_route_downsampling_and_violation_runs() -> None:
    assert downsample(list(range(10)), 4) == [0, 3, 6, 9]
    assert downsample(list(range(3)), 4) == [0, 1, 2]
    pts = [{"timestamp": f"t{i}", "lat": 1.0, "lon": float(i), "speed_kmh": 10.0 * i,
            "speeding": i in (1, 2, 5), "rpm_over_redline": i == 2} for i in range(7)]
    assert violation_segments(pts) == [
        {"kind": "speeding", "started_at": "t1", "ended_at": "t2",
         "points": [[1.0, 1.0], [2.0, 1.0]], "max_speed_kmh": 20.0},
        {"kind": "over_redline", "started_at": "t2", "ended_at": "t2",
         "points": [[2.0, 1.0]], "max_speed_kmh": 20.0},
        {"kind": "speeding", "started_at": "t5", "ended_at": "t5",
         "points": [[5.0, 1.0]], "max_speed_kmh": 50.0}]


def test_event_store_is_bounded_and_orders_a_trip_whose_end_came_first() -> None:
    from webapi.fleet_events import EventStore, decode_event

    store = EventStore(keep=10, trips_keep=2)

    def add(model: Any) -> bool:
        entry, parsed = decode_event(model.model_dump_json().encode(),
                                     model.vehicle_id.encode(), 8192)
        return store.add(entry, parsed)

    t1 = T0 + timedelta(minutes=5)
    assert add(ended("CAR1", "a", T0, t1, 9))  # partitions read out of order: end first
    trip = store.trip_list(10)[0]
    assert (trip["status"], trip["started_at"], trip["ended_at"]) == (
        "ended", js(ended("CAR1", "a", T0, t1, 9))["summary"]["started_at"],
        js(ended("CAR1", "a", T0, t1, 9))["summary"]["ended_at"])
    assert add(started("CAR1", "a", T0))
    assert store.trip_list(10)[0]["status"] == "ended"  # the late start does not reopen it
    assert not add(started("CAR1", "a", T0))  # same event_id: a duplicate
    for i in range(3):
        add(started(f"CAR{i + 2}", f"t{i}", t1 + timedelta(seconds=i)))
    assert [t["vehicle_id"] for t in store.trip_list(10)] == ["CAR4", "CAR3"]  # 2 kept
    for i in range(20):
        add(alert("CAR9", t1 + timedelta(seconds=i), 100 + i))
    assert len(store.recent) == 10 and len(store.seen) <= store.seen_keep
    assert [e.ts for e in store.events(3)] == sorted(e.ts for e in store.events(3))
    assert store.events(3, kinds={"trip_started"}) == []  # pushed out of the ring


async def test_events_are_deduplicated_filtered_and_bad_records_counted(
        settings: Settings) -> None:
    t = [T0 + timedelta(seconds=10 * i) for i in range(6)]
    good = [started("CAR1", "trip-a", t[0], 0), entered("CAR1", t[1], 3),
            alert("CAR2", t[2], 7), alert("CAR1", t[3], 9, "trip-a"),
            ended("CAR1", "trip-a", t[0], t[4], 12)]
    nan = good[2].model_dump_json().replace('"value":6500.0', '"value":NaN').encode()
    bad = [(b"CAR1", b"{not json"), (b"CAR1", b'{"kind":"teleported"}'),
           (b"OTHER", good[1].model_dump_json().encode()),  # key is not the vehicle
           (b"CAR2", nan), (b"CAR1", b"x" * 9000), (b"CAR1", None),
           (b"CAR3", alert("CAR3", NOW + timedelta(hours=1), 1).model_dump_json().encode())]
    # out of order across keys; the alert of CAR2 twice (the job is at-least-once)
    await send(settings.kafka_bootstrap_servers, settings.kafka_events_topic,
               [good[4], good[0], good[2], *bad, good[2], good[1], good[3]])
    async with running_app(settings) as client:
        consumer = client.app[FLEET_CONSUMER]
        await wait_for(lambda: client.app[FLEET_EVENTS].consumed_total
                       + client.app[FLEET_EVENTS].duplicates_total + consumer.rejected_total
                       == 13)
        body = await (await client.get("/events")).json()
        assert body == {"items": [js(e) for e in good]}  # chronological, each once
        by_kind = await (await client.get("/events", params={"kind": "alert"})).json()
        assert by_kind["items"] == [js(good[2]), js(good[3])]
        two = await (await client.get("/events?kind=alert,trip_ended&vehicle_id=CAR1")).json()
        assert two["items"] == [js(good[3]), js(good[4])]
        since = await (await client.get("/events", params={
            "since": t[3].isoformat(), "limit": "1"})).json()
        assert since["items"] == [js(good[4])]  # limit keeps the newest
        wrong = await client.get("/events", params={"kind": "trip"})
        assert wrong.status == 422 and (await wrong.json())["parameter"] == "kind"
        for params in ({"since": "yesterday"}, {"limit": "0"}):
            assert (await client.get("/events", params=params)).status == 422

        stats = (await (await client.get("/stats")).json())["fleet_events"]
        assert stats == {"consumed_total": 5, "duplicates_total": 1, "rejected_total": 7,
                         "rejected": {"in_future": 1, "invalid": 1, "key_mismatch": 1,
                                      "not_json": 1, "oversized": 1, "tombstone": 1,
                                      "unknown_kind": 1},
                         "trips": 1}
        metrics = await (await client.get("/metrics")).text()
        assert 'fleetstream_webapi_fleet_events_rejected_total{reason="key_mismatch"} 1.0' \
            in metrics
        assert "fleetstream_webapi_fleet_events_duplicates_total 1.0" in metrics


@pytest.fixture
def one_partition_events(topic_factory) -> str:
    return topic_factory("events", 1)


async def test_partitions_added_to_the_events_topic_are_read_without_a_restart(
        settings: Settings, one_partition_events: str) -> None:
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

    settings = settings.model_copy(update={"kafka_events_topic": one_partition_events,
                                           "metadata_refresh_s": 0.5})
    bootstrap, events = settings.kafka_bootstrap_servers, settings.kafka_events_topic
    first = alert("CAR1", T0, 1)
    await send(bootstrap, events, [first])
    async with running_app(settings) as client:
        consumer = client.app[FLEET_CONSUMER]
        await wait_for(lambda: client.app[FLEET_EVENTS].consumed_total == 1)
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_partitions({events: NewPartitions(total_count=3)})
        finally:
            await admin.close()
        later = [alert("CAR2", T0 + timedelta(seconds=1), 2),
                 alert("CAR3", T0 + timedelta(seconds=2), 3)]
        # straight to the new partitions, before the web API has seen them
        await send(bootstrap, events, [(e.vehicle_id.encode(), e.model_dump_json().encode(), p)
                                       for p, e in enumerate(later, start=1)])
        await wait_for(lambda: client.app[FLEET_EVENTS].consumed_total == 3)
        body = await (await client.get("/events")).json()
        assert body == {"items": [js(first), *(js(e) for e in later)]}
        assert set(consumer.positions) == {TopicPartition(events, p) for p in range(3)}
        # the old partition kept its place: nothing there was read twice
        await send(bootstrap, events, [alert("CAR1", T0 + timedelta(seconds=3), 4)])
        await wait_for(lambda: client.app[FLEET_EVENTS].consumed_total == 4)
        assert client.app[FLEET_EVENTS].duplicates_total == 0


async def test_trips_list_and_detail_with_route_and_violation_segments(
        settings: Settings) -> None:
    start, stop = NOW - timedelta(seconds=120), NOW - timedelta(seconds=90)
    # CAR1 drives 30 s at 1 Hz, speeding at 10..12 s and 20 s, over the redline at 11 s;
    # before and after the trip it stands (outside the trip's time: not in the route)
    telemetry = [make_event("CAR1", seq=i + 5, timestamp=start + timedelta(seconds=i),
                            speed_kmh=70.0 if i in (10, 11, 12, 20) else 40.0,
                            engine_rpm=6500 if i == 11 else 2000, lon=11.5 + i * 0.001)
                 for i in range(-5, 36)]
    telemetry += [make_event("CAR9", seq=i, timestamp=start + timedelta(seconds=i))
                  for i in range(31)]
    await publish(settings.kafka_bootstrap_servers, settings.kafka_topic, telemetry)
    # CAR7's telemetry on a partition its key does not hash to (another writer's choice)
    key_partition = DefaultPartitioner()(b"CAR7", [0, 1, 2], [0, 1, 2])
    elsewhere = [(b"CAR7", make_event("CAR7", seq=i, timestamp=start + timedelta(seconds=i))
                  .model_dump_json().encode(), (key_partition + 1) % 3) for i in range(5)]
    await send(settings.kafka_bootstrap_servers, settings.kafka_topic, elsewhere)
    events = [started("CAR1", "trip-1", start, 0), ended("CAR1", "trip-1", start, stop, 30),
              started("CAR2", "trip-2", stop, 4), started("CAR3", "trip-1", stop, 0),
              ended("CAR7", "trip-7", start, start + timedelta(seconds=4), 4)]
    await send(settings.kafka_bootstrap_servers, settings.kafka_events_topic, events)
    async with running_app(settings) as client:
        await wait_for(lambda: client.app[FLEET_EVENTS].consumed_total == 5)
        listed = (await (await client.get("/trips")).json())["items"]
        keys = {"trip_id", "vehicle_id", "status", "started_at", "ended_at", "start_location",
                "end_location", "summary"}
        assert all(set(t) == keys for t in listed)
        assert sorted((t["vehicle_id"], t["status"]) for t in listed[:2]) == [
            ("CAR2", "in_progress"), ("CAR3", "in_progress")]  # started together, last
        assert sorted((t["vehicle_id"], t["status"]) for t in listed[2:]) == [
            ("CAR1", "ended"), ("CAR7", "ended")]
        car1 = next(t for t in listed if t["vehicle_id"] == "CAR1")
        assert car1["summary"] == js(events[1])["summary"]
        assert car1["ended_at"] == js(events[1])["summary"]["ended_at"]
        assert car1["end_location"] == {"lat": 48.2, "lon": 11.6}
        car2 = next(t for t in listed if t["vehicle_id"] == "CAR2")
        assert car2["ended_at"] is None and car2["summary"] is None
        only = (await (await client.get("/trips?vehicle_id=CAR1")).json())["items"]
        assert [t["trip_id"] for t in only] == ["trip-1"]
        later = (await (await client.get("/trips", params={
            "until": (start - timedelta(seconds=1)).isoformat()})).json())["items"]
        assert later == []

        ambiguous = await client.get("/trips/trip-1")
        assert ambiguous.status == 409 and "vehicle_id" in (await ambiguous.json())["error"]
        resp = await client.get("/trips/trip-1", params={"vehicle_id": "CAR1"})
        assert resp.status == 200, await resp.text()
        detail = await resp.json()
        assert set(detail) == keys | {"route", "violation_segments"}
        route = detail["route"]
        assert len(route) == 10  # 31 points downsampled to WEBAPI_TRIP_ROUTE_POINTS
        assert set(route[0]) == {"timestamp", "lat", "lon", "speed_kmh", "speeding",
                                 "rpm_over_redline", "seq"}
        assert (route[0]["seq"], route[-1]["seq"]) == (5, 35)
        segs = detail["violation_segments"]
        assert [(s["kind"], s["started_at"][17:19], s["ended_at"][17:19], len(s["points"]))
                for s in segs] == [
            ("speeding", f"{(start + timedelta(seconds=10)).second:02d}",
             f"{(start + timedelta(seconds=12)).second:02d}", 3),
            ("over_redline", f"{(start + timedelta(seconds=11)).second:02d}",
             f"{(start + timedelta(seconds=11)).second:02d}", 1),
            ("speeding", f"{(start + timedelta(seconds=20)).second:02d}",
             f"{(start + timedelta(seconds=20)).second:02d}", 1)]
        assert segs[0]["max_speed_kmh"] == 70.0
        assert segs[0]["points"][0] == [round(11.5 + 0.010, 6), 48.137]

        missing = await client.get("/trips/nope")
        assert missing.status == 404 and "unknown trip 'nope'" in (await missing.json())["error"]
        live = await (await client.get("/trips/trip-2")).json()
        assert live["status"] == "in_progress" and live["route"] == []
        other = await (await client.get("/trips/trip-7")).json()
        assert [p["seq"] for p in other["route"]] == [0, 1, 2, 3, 4]


async def test_ws_events_snapshot_then_live_frames_filtered(settings: Settings) -> None:
    first = [alert("CAR1", T0, 1), entered("CAR1", T0 + timedelta(seconds=1), 2)]
    await send(settings.kafka_bootstrap_servers, settings.kafka_events_topic, first)
    async with running_app(settings) as client:
        await wait_for(lambda: client.app[FLEET_EVENTS].consumed_total == 2)
        url = f"http://127.0.0.1:{client.server.port}/ws/events?kind=alert"
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            snap = await ws.receive_json(timeout=10)
            assert snap == {"type": "snapshot", "items": [js(first[0])]}
            new = [entered("CAR2", NOW, 5), alert("CAR2", NOW, 6), alert("CAR2", NOW, 6)]
            await send(settings.kafka_bootstrap_servers, settings.kafka_events_topic, new)
            frame = await ws.receive_json(timeout=10)
            assert frame == {"type": "event", "data": js(new[1])}
            await wait_for(lambda: client.app[FLEET_EVENTS].duplicates_total == 1)
            with pytest.raises(TimeoutError):  # the duplicate is not sent again
                await ws.receive_json(timeout=0.5)
        bad = await client.get("/ws/events?kind=nope",
                               headers={"Upgrade": "websocket", "Connection": "Upgrade"})
        assert bad.status == 422


async def test_ws_events_client_caps(settings: Settings) -> None:
    capped = settings.model_copy(update={"ws_max_per_address": 1})
    async with running_app(capped) as client:
        url = f"http://127.0.0.1:{client.server.port}/ws/events"
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            assert (await ws.receive_json(timeout=10))["type"] == "snapshot"
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url)
            assert refused.value.status == 503
            # /ws keeps its own count: still open to this address
            async with session.ws_connect(url.replace("/ws/events", "/ws")) as live:
                assert (await live.receive_json(timeout=10))["type"] == "snapshot"


@pytest.mark.browser
async def test_dashboard_alert_strip_shows_alerts_live_and_escaped(
        settings: Settings, output_dir: Path) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium is not installed")
    hostile = "<img src=x onerror=alert(1)>"
    old = [alert(f"CAR{i}", T0 + timedelta(seconds=i), i) for i in range(10)]
    await send(settings.kafka_bootstrap_servers, settings.kafka_events_topic, old)
    async with running_app(settings) as client, playwright_api.async_playwright() as pw:
        await wait_for(lambda: client.app[FLEET_EVENTS].consumed_total == 10)
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium",
                                           args=["--no-sandbox", "--disable-gpu"])
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            await page.goto(str(client.make_url("/dashboard")))
            items = page.locator("#alerts .alert-item")
            await wait_for(lambda: items.count(), timeout=20)
            # the snapshot: the 8 newest, newest first
            assert await items.count() == 8
            assert await page.locator("#alerts .alert-vehicle").all_text_contents() == [
                f"CAR{i}" for i in range(9, 1, -1)]
            live = Alert(**env("alert", hostile, NOW, 99), rule_id="default-harsh-brake",
                         rule_kind="harsh_brake", message="harsh braking")
            await send(settings.kafka_bootstrap_servers, settings.kafka_events_topic, [live])

            async def first_vehicle() -> str | None:
                return await page.locator("#alerts .alert-vehicle").first.text_content()

            assert await wait_for(lambda: _is(first_vehicle(), hostile), timeout=20)
            first = page.locator("#alerts .alert-item").first
            assert await first.locator(".alert-rule").text_content() == "default-harsh-brake"
            assert await first.locator(".alert-time").text_content() == \
                NOW.strftime("%H:%M:%S") + " UTC"
            assert await page.locator("#alerts img").count() == 0  # text, never markup
            assert await items.count() == 8
            await page.screenshot(path=str(output_dir / "dashboard-alert-strip.png"))
        finally:
            await browser.close()


async def _is(text_coro: Any, expected: str) -> bool:
    return await text_coro == expected


def test_event_hub_filters_bounds_queues_and_counts_clients() -> None:
    from webapi.fleet_events import EventHub, FleetEntry, FleetEventMetrics
    from webapi.metrics import Metrics

    metrics = Metrics()
    hub = EventHub(FleetEventMetrics(metrics), queue_size=3, max_clients=3, max_per_address=2)
    alerts = hub.subscribe(frozenset({"alert"}), None, "a")
    car2 = hub.subscribe(None, frozenset({"CAR2"}), "a")
    assert hub.full("a") and not hub.full("b") and not hub.full()
    entries = [FleetEntry(float(i), "alert" if i % 2 else "trip_started", f"CAR{i % 3}",
                          f"id{i}", f'{{"n":{i}}}'.encode()) for i in range(10)]
    hub.publish(entries)
    assert list(alerts.queue) == [b'{"type":"event","data":{"n":%d}}' % i for i in (5, 7, 9)]
    assert alerts.dropped == 2  # 1 and 3: the oldest, pushed out of its bounded queue
    assert list(car2.queue) == [b'{"type":"event","data":{"n":%d}}' % i for i in (2, 5, 8)]
    assert car2.dropped == 0
    text = generate_latest(metrics.registry).decode()
    assert "fleetstream_webapi_events_ws_dropped_total 2.0" in text
    assert "fleetstream_webapi_events_ws_clients 2.0" in text
    hub.unsubscribe(alerts)
    hub.unsubscribe(alerts)  # twice: no harm
    assert hub.per_address == {"a": 1} and len(hub.subscribers) == 1


# ---------------------------------------------------------------------------- audit findings
def with_(model: Any, path: tuple[str, ...], value: Any) -> bytes:
    """The model's JSON with one field replaced (json: orjson cannot write 10**30)."""
    doc = js(model)
    inner = doc
    for part in path[:-1]:
        inner = inner[part]
    inner[path[-1]] = value
    return json.dumps(doc).encode()


HOSTILE_IDS = ["a\r\nX-Injected: yes\r\nxxxxxxxxxxxxxxxx", "\u2603" * 36,
               "<script>alert(1)</script>xxxxxxxxxxx", "a\x00\x01\x7fb" + "x" * 31,
               "9A854380-300A-53E6-BA60-12AC0972059D", "{9a854380-300a-53e6-ba60-12ac09720}",
               "9a854380300a53e6ba6012ac0972059d1234"]


def test_event_ids_are_canonical_uuids_and_counters_fit_in_53_bits() -> None:
    for i in range(200):
        assert re.fullmatch(UUID_PATTERN.strip("^$"), derived_event_id("alert", f"V{i}", i))
    ok = ended("CAR1", "trip-a", T0, T0 + timedelta(minutes=5), MAX_SEQ - 1)
    assert decode_event(ok.model_dump_json().encode(), b"CAR1", 8192)[1] == ok
    bad = [with_(ok, ("event_id",), eid) for eid in HOSTILE_IDS]
    bad += [with_(ok, ("summary", "samples"), 10**30), with_(ok, ("source_seq",), 10**30),
            with_(ok, ("source_seq",), MAX_SEQ + 1)]
    bad += [with_(ok, ("summary", "violations", field), 2**64)
            for field in ("speeding", "over_redline", "alerts")]
    bad += [with_(ok, ("summary", "stops"), 2**63)]
    for value in bad:
        with pytest.raises(Rejected) as info:
            decode_event(value, b"CAR1", 8192)
        assert info.value.reason == "invalid", value


async def test_hostile_event_ids_and_huge_counters_are_refused_and_trips_still_served(
        settings: Settings) -> None:
    good = ended("CAR1", "trip-ok", T0, T0 + timedelta(minutes=5), 30)
    huge = ended("CAR2", "trip-huge", T0, T0 + timedelta(minutes=5), 30)
    bad = [(b"CAR2", with_(huge, ("summary", "samples"), 10**30)),
           (b"CAR2", with_(huge, ("source_seq",), 10**30))]
    bad += [(b"CAR3", with_(alert("CAR3", T0, i), ("event_id",), eid))
            for i, eid in enumerate(HOSTILE_IDS)]
    await send(settings.kafka_bootstrap_servers, settings.kafka_events_topic, [*bad, good])
    async with running_app(settings) as client:
        consumer = client.app[FLEET_CONSUMER]
        await wait_for(lambda: client.app[FLEET_EVENTS].consumed_total
                       + consumer.rejected_total == len(bad) + 1)
        assert consumer.rejected == {"invalid": len(bad)}
        trips = await client.get("/trips")
        assert trips.status == 200, await trips.text()
        assert [t["trip_id"] for t in (await trips.json())["items"]] == ["trip-ok"]
        events = await (await client.get("/events")).json()
        assert events == {"items": [js(good)]}
