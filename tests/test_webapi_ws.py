"""WS /ws end to end: snapshot and event frames, filters, batching, slow-client isolation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from common.contract import EVENT_FIELDS, MAX_FAULT_CODES
from tests.support.webapi import fleet_events, make_event, publish, running_app, wait_for
from webapi.keys import CONSUMER, HUB, METRICS, STORE
from webapi.settings import Settings

pytestmark = pytest.mark.kafka

EVENT_KEYS = set(EVENT_FIELDS)


@pytest.fixture
def settings(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path) -> Settings:
    return Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                    kafka_control_topic=topic_factory("control", 1),
                    kafka_status_topic=topic_factory("status", 1), api_token=None,
                    cors_origins=(), analytics_output_dir=tmp_path, map_tile_url="",
                    ws_batch_ms=50)


async def receive_json(ws, timeout: float = 20.0) -> dict:
    msg = await ws.receive(timeout=timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg  # text frames, as the original
    return msg.json()


async def test_snapshot_then_one_frame_per_event(settings: Settings) -> None:
    history = fleet_events(2, 5)
    await publish(settings.kafka_bootstrap_servers, settings.kafka_topic, history)
    async with running_app(settings) as client:
        await wait_for(lambda: client.app[STORE].consumed_total == len(history))
        async with client.ws_connect("/ws") as ws:
            snap = await receive_json(ws)
            assert set(snap) == {"type", "items"} and snap["type"] == "snapshot"
            # the latest event per vehicle, by id, as in the original FleetStream
            assert [(e["vehicle_id"], e["seq"]) for e in snap["items"]] == [
                ("CAR000", 4), ("CAR001", 4)]
            assert all(set(e) == EVENT_KEYS for e in snap["items"])
            async with client.ws_connect("/ws?snapshot=recent") as old:
                recent = await receive_json(old)
                assert set(recent) == {"type", "items"} and recent["type"] == "snapshot"
                assert sorted((e["vehicle_id"], e["seq"]) for e in recent["items"]) == sorted(
                    (e.vehicle_id, e.seq) for e in history)
            bad = await client.get("/ws?snapshot=all")
            assert bad.status == 422 and (await bad.json())["parameter"] == "snapshot"
            live = [make_event("LIVE01", seq=i, speed_kmh=10.0 + i) for i in range(5)]
            await publish(settings.kafka_bootstrap_servers, settings.kafka_topic, live)
            frames = [await receive_json(ws) for _ in live]
            for frame, sent in zip(frames, live, strict=True):
                assert set(frame) == {"type", "data"} and frame["type"] == "event"
                assert set(frame["data"]) == EVENT_KEYS
                assert frame["data"]["vehicle_id"] == "LIVE01"
                assert frame["data"]["seq"] == sent.seq
        text = await (await client.get("/metrics")).text()
        assert 'fleetstream_webapi_ws_frames_sent_total{type="event"} 5.0' in text


async def test_vehicle_filter_batch_mode_and_max_rate(settings: Settings) -> None:
    async with running_app(settings) as client:
        await wait_for(lambda: client.app[CONSUMER].assigned.is_set())
        async with client.ws_connect("/ws?vehicle_id=CAR001&batch=1") as batched, \
                client.ws_connect("/ws?vehicle_id=CAR002&max_hz=200") as limited:
            assert (await receive_json(batched)) == {"type": "snapshot", "items": []}
            assert (await receive_json(limited)) == {"type": "snapshot", "items": []}
            events = fleet_events(3, 30)
            await publish(settings.kafka_bootstrap_servers, settings.kafka_topic, events)
            got: list[dict] = []
            frames = 0
            while len(got) < 30:
                frame = await receive_json(batched)
                assert set(frame) == {"type", "items"} and frame["type"] == "batch"
                got.extend(frame["items"])
                frames += 1
            assert {e["vehicle_id"] for e in got} == {"CAR001"}
            assert sorted(e["seq"] for e in got) == list(range(30))
            assert frames < 30  # batched: several events per frame
            seqs = []
            while len(seqs) < 30:
                frame = await receive_json(limited)
                assert frame["type"] == "event" and frame["data"]["vehicle_id"] == "CAR002"
                seqs.append(frame["data"]["seq"])
            assert seqs == list(range(30))


async def test_a_stalled_client_never_slows_the_others(settings: Settings) -> None:
    """One client never reads; the other gets every event, in lock-step chunks so the test
    does not depend on how fast this shared machine is. The stalled one's queue is capped."""
    settings = settings.model_copy(update={"ws_queue_size": 300})
    chunk, chunks = 200, 60
    # the biggest valid events (about 1.1 kB) so the stalled client's socket buffers fill up
    codes = [f"P{i:015d}" for i in range(MAX_FAULT_CODES)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5)
    async with running_app(settings) as client:
        await wait_for(lambda: client.app[CONSUMER].assigned.is_set())
        hub = client.app[HUB]
        await producer.start()
        try:
            async with client.ws_connect("/ws") as stalled, client.ws_connect("/ws") as fast:
                await receive_json(fast)  # snapshot; the stalled client never reads anything
                for c in range(chunks):
                    sent = [await producer.send(settings.kafka_topic, key=b"CAR01",
                                                value=make_event("CAR01", seq=c * chunk + i,
                                                                 fault_codes=codes,
                                                                 trip_id="t" * 64)
                                                .model_dump_json().encode())
                            for i in range(chunk)]
                    await asyncio.gather(*sent)
                    for i in range(chunk):
                        frame = await receive_json(fast)
                        assert frame["type"] == "event"
                        assert frame["data"]["seq"] == c * chunk + i  # nothing lost, in order
                dropping = [s for s in hub.subscribers if s.dropped > 0]
                assert len(dropping) == 1, "only the stalled client lost events"
                assert len(dropping[0].queue) <= 300  # its memory stays bounded
                assert hub.dropped_total == dropping[0].dropped > 0
                assert client.app[METRICS].ws_dropped._value.get() == hub.dropped_total
                assert not stalled.closed
        finally:
            await producer.stop()
        await wait_for(lambda: not hub.subscribers)


async def test_too_many_clients_get_503(settings: Settings) -> None:
    settings = settings.model_copy(update={"ws_max_clients": 1})
    async with running_app(settings) as client:
        async with client.ws_connect("/ws") as first:
            await receive_json(first)
            resp = await client.get("/ws", headers={
                "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
            assert resp.status == 503 and "WEBAPI_WS_MAX_CLIENTS" in (await resp.json())["error"]
