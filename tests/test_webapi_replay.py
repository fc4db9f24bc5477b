"""WS /replay on the real broker: order and pacing match the recorded event times, the
retention error says what is still there, bad parameters are refused by name."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.partitioner import DefaultPartitioner

from common.contract import TelemetryEvent
from tests.support.webapi import make_event, publish, running_app, wait_for
from webapi.keys import REPLAYS
from webapi.settings import Settings

pytestmark = pytest.mark.kafka
SPEED = 10.0
HANDSHAKE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
             "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


@pytest.fixture
def settings(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path) -> Settings:
    return Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                    kafka_control_topic=topic_factory("control", 1),
                    kafka_status_topic=topic_factory("status", 1), api_token=None,
                    analytics_output_dir=tmp_path, map_tile_url="", backfill_seconds=0)


async def record(bootstrap: str, topic: str, events: list[TelemetryEvent]) -> None:
    """Publish with Kafka's record time = the event time, as a recording would have it."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for ev in events:
            await producer.send_and_wait(topic, key=ev.vehicle_id.encode(),
                                         value=ev.model_dump_json().encode(),
                                         timestamp_ms=int(ev.timestamp.timestamp() * 1000))
    finally:
        await producer.stop()


def recording(t0: datetime) -> list[TelemetryEvent]:
    """Three cars on three partitions (by key), irregular gaps, written out of time order
    across cars, so the merge has work to do."""
    offsets = {"CAR_A": [0.0, 1.0, 1.5, 4.0], "CAR_B": [0.2, 0.4, 2.5, 3.0],
               "CAR_C": [0.9, 2.0, 3.5]}
    return [make_event(vid, seq=i, timestamp=t0 + timedelta(seconds=s))
            for vid, times in offsets.items() for i, s in enumerate(times)]


def q(ts: datetime) -> str:
    return ts.isoformat().replace("+", "%2B")


async def test_replay_order_and_pacing_match_event_times(settings: Settings) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    events = recording(t0)
    before = make_event("CAR_A", seq=99, timestamp=t0 - timedelta(seconds=30))
    after = make_event("CAR_A", seq=98, timestamp=t0 + timedelta(seconds=30))
    await record(settings.kafka_bootstrap_servers, settings.kafka_topic,
                 [before, *events, after])
    expected = sorted(events, key=lambda e: e.timestamp)
    url = f"/replay?since={q(t0)}&until={q(t0 + timedelta(seconds=5))}&speed={SPEED:g}"
    async with running_app(settings) as client, client.ws_connect(url) as ws:
        frames, arrived = [], []
        while True:
            msg = await ws.receive(timeout=30)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frames.append(msg.json())
            arrived.append(time.monotonic())
    assert frames[-1] == {"type": "end", "count": len(expected), "skipped": 0}
    data = [f for f in frames[:-1]]
    assert all(set(f) == {"type", "data"} and f["type"] == "event" for f in data)
    got = [(f["data"]["vehicle_id"], f["data"]["seq"]) for f in data]
    assert got == [(e.vehicle_id, e.seq) for e in expected]
    # pacing: each frame arrives (its event time - the first's) / SPEED after the first.
    # Receipt times carry the client's own delays (2 cores shared with other work), so the
    # schedule is anchored on the frame that came earliest relative to it, and each frame may
    # be late by a tolerance derived from this run's median lateness, at least 0.25 s.
    stamps = [e.timestamp.timestamp() for e in expected]
    wall = [t - arrived[0] for t in arrived[:len(expected)]]
    ideal = [(s - stamps[0]) / SPEED for s in stamps]
    anchor = min(w - want for w, want in zip(wall, ideal, strict=True))
    late = sorted(w - want - anchor for w, want in zip(wall, ideal, strict=True))
    slack = max(0.25, 3 * late[len(late) // 2])
    for i, (w, want) in enumerate(zip(wall, ideal, strict=True)):
        assert w - anchor <= want + slack, (i, w, want, anchor, slack)
    total = (stamps[-1] - stamps[0]) / SPEED  # 0.4 s; unpaced it would take a few ms
    assert total / 2 <= wall[-1] <= total + slack, (wall[-1], total, slack)


async def test_replay_max_speed_batches_and_vehicle_filter(settings: Settings) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    events = recording(t0)
    await record(settings.kafka_bootstrap_servers, settings.kafka_topic, events)
    url = (f"/replay?since={q(t0)}&until={q(t0 + timedelta(seconds=5))}&speed=max"
           "&batch=1&vehicle_id=CAR_B,CAR_C")
    async with running_app(settings) as client, client.ws_connect(url) as ws:
        frames = []
        while True:
            msg = await ws.receive(timeout=30)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frames.append(msg.json())
    wanted = sorted((e for e in events if e.vehicle_id != "CAR_A"), key=lambda e: e.timestamp)
    assert frames[-1] == {"type": "end", "count": len(wanted), "skipped": 0}
    assert all(set(f) == {"type", "items"} and f["type"] == "batch" for f in frames[:-1])
    got = [(e["vehicle_id"], e["seq"]) for f in frames[:-1] for e in f["items"]]
    assert got == [(e.vehicle_id, e.seq) for e in wanted]
    # CAR_B's 0.2 s and 0.4 s are 200 ms apart: separate 100 ms batches
    assert all(len(f["items"]) == 1 for f in frames[:-1])


async def test_range_older_than_retention_is_refused_with_what_is_left(
        settings: Settings) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    old = [make_event("CAR_A", seq=i, timestamp=t0 + timedelta(minutes=i)) for i in range(4)]
    await record(settings.kafka_bootstrap_servers, settings.kafka_topic, old)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:  # what retention does: the log start moves past the first two records
        part = DefaultPartitioner()(b"CAR_A", [0, 1, 2], [0, 1, 2])
        await admin.delete_records(
            {TopicPartition(settings.kafka_topic, part): RecordsToDelete(2)})
    finally:
        await admin.close()
    async with running_app(settings) as client:
        url = f"/replay?since={q(t0)}&until={q(t0 + timedelta(minutes=10))}"
        resp = await client.get(url, headers=HANDSHAKE)
        assert resp.status == 410, await resp.text()
        body = await resp.json()
        assert set(body) == {"error", "parameter", "earliest_available"}
        assert body["parameter"] == "since"
        earliest = datetime.fromisoformat(body["earliest_available"])
        assert earliest == t0 + timedelta(minutes=2)
        assert body["earliest_available"] in body["error"]
        # from what is left, it plays
        url = f"/replay?since={q(earliest)}&until={q(t0 + timedelta(minutes=10))}&speed=max"
        async with client.ws_connect(url) as ws:
            frames = []
            while True:
                msg = await ws.receive(timeout=30)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                frames.append(msg.json())
        assert [f["data"]["seq"] for f in frames[:-1]] == [2, 3]


async def test_bad_parameters_are_named(settings: Settings) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    cases = [("", "since"), (f"since={q(t0)}", "until"),
             (f"since={q(t0)}&until={q(t0)}", "until"),
             (f"since={q(t0)}&until={q(t0 + timedelta(days=2))}", "until"),
             (f"since={q(t0)}&until={q(t0 + timedelta(hours=1))}&speed=0.5", "speed"),
             (f"since={q(t0)}&until={q(t0 + timedelta(hours=1))}&speed=nan", "speed"),
             (f"since={q(t0)}&until={q(t0 + timedelta(hours=1))}&speed=101", "speed"),
             ("since=yesterday&until=today", "since")]
    async with running_app(settings) as client:
        for query, param in cases:
            resp = await client.get("/replay?" + query)
            assert resp.status == 422, query
            assert (await resp.json())["parameter"] == param, query


async def test_concurrent_replays_are_capped_and_a_closed_one_frees_its_slot(
        settings: Settings) -> None:
    settings = settings.model_copy(update={"replay_max_clients": 1})
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    slow = [make_event("CAR_A", seq=0, timestamp=t0),
            make_event("CAR_A", seq=1, timestamp=t0 + timedelta(seconds=60))]
    await record(settings.kafka_bootstrap_servers, settings.kafka_topic, slow)
    url = f"/replay?since={q(t0)}&until={q(t0 + timedelta(minutes=2))}&speed=1"
    async with running_app(settings) as client:
        async with client.ws_connect(url) as first:
            frame = await first.receive_json(timeout=30)
            assert frame["type"] == "event" and frame["data"]["seq"] == 0
            busy = await client.get(url, headers=HANDSHAKE)
            assert busy.status == 503, await busy.text()
            assert "WEBAPI_REPLAY_MAX_CLIENTS" in (await busy.json())["error"]
        # the first client left mid-replay (its next event was 60 s away): the slot is free
        # once its consumer has stopped
        await wait_for(lambda: not client.app[REPLAYS], timeout=20)
        async with client.ws_connect(url + "0") as second:  # speed=10
            assert (await second.receive_json(timeout=30))["type"] == "event"


async def test_an_imported_recording_replays_by_event_time(settings: Settings) -> None:
    """Events published long after their own time (Kafka's record time = now) still replay:
    Kafka time only positions the read, event time selects and orders."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    events = recording(t0)
    await publish(settings.kafka_bootstrap_servers, settings.kafka_topic, events)
    url = f"/replay?since={q(t0)}&until={q(t0 + timedelta(seconds=5))}&speed=max"
    async with running_app(settings) as client, client.ws_connect(url) as ws:
        frames = []
        while True:
            msg = await ws.receive(timeout=30)
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frames.append(msg.json())
    expected = sorted(events, key=lambda e: e.timestamp)
    assert frames[-1] == {"type": "end", "count": len(expected), "skipped": 0}
    assert [(f["data"]["vehicle_id"], f["data"]["seq"]) for f in frames[:-1]] == [
        (e.vehicle_id, e.seq) for e in expected]
