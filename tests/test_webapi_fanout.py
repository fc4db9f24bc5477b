"""WebSocket fan-out serialises once: one batch frame per tick and per distinct filter, one
event frame per event, the same bytes shared by every client they fit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest

from common.contract import EVENT_FIELDS
from tests.support.webapi import fleet_events, make_event, publish, running_app, wait_for
from webapi.decode import entry_from_event
from webapi.hub import Hub, event_frame, items_frame
from webapi.keys import CONSUMER, HUB
from webapi.metrics import Metrics
from webapi.settings import Settings

TICK = 0.05


def entries(vehicles: int, steps: int):
    return [entry_from_event(e) for e in fleet_events(vehicles, steps)]


async def next_tick() -> None:
    await asyncio.sleep(TICK * 3)


async def test_one_batch_frame_per_tick_and_filter_shared_by_its_clients() -> None:
    hub = Hub(Metrics(), queue_size=1000, max_clients=10)
    everyone = [hub.subscribe(None, "a", batch_tick=TICK) for _ in range(3)]
    only_one = [hub.subscribe(frozenset({"CAR001"}), "b", batch_tick=TICK) for _ in range(2)]
    slower = hub.subscribe(None, "c", batch_tick=TICK * 2)  # another tick: another group
    per_event = [hub.subscribe(None, "d"), hub.subscribe(frozenset({"CAR001"}), "d")]
    assert len(hub.groups) == 3
    batch = entries(2, 5)
    hub.publish(batch)
    await next_tick()
    assert hub.frames_built == {"batch": 3, "event": len(batch)}
    frame = everyone[0].queue[0]
    assert all(len(s.queue) == 1 and s.queue[0] is frame for s in everyone)
    assert frame == items_frame(b"batch", batch)  # the same bytes as before the change
    assert set(orjson.loads(frame)) == {"type", "items"}
    assert only_one[0].queue[0] is only_one[1].queue[0]
    assert [e["vehicle_id"] for e in orjson.loads(only_one[0].queue[0])["items"]] == ["CAR001"] * 5
    assert slower.queue[0] == frame and slower.queue[0] is not frame
    # per-event frames: built once per event, shared by each client they fit
    assert list(per_event[0].queue) == [event_frame(e) for e in batch]
    assert all(any(f is g for g in per_event[0].queue) for f in per_event[1].queue)
    assert len(per_event[1].queue) == 5
    for s in [*everyone, *only_one, slower, *per_event]:
        hub.unsubscribe(s)
    assert not hub.groups and not hub.subscribers
    await asyncio.sleep(0)


async def test_a_batch_client_queue_is_bounded_in_events_dropping_oldest_frames() -> None:
    hub = Hub(Metrics(), queue_size=25, max_clients=10)
    stalled = hub.subscribe(None, "a", batch_tick=TICK)  # nobody pops its frames
    for _ in range(4):
        hub.publish(entries(2, 5))  # 10 events per tick
        await next_tick()
    assert list(stalled.sizes) == [10, 10] and stalled.queued == 20  # 30 would be > 25
    assert stalled.dropped == 20 == hub.dropped_total
    big = entries(10, 4)  # 40 events in one tick: more than the queue holds
    hub.publish(big)
    assert stalled.dropped == 35  # pending keeps the newest 25
    await next_tick()
    assert list(stalled.sizes) == [25] and stalled.dropped == 55 == hub.dropped_total
    hub.unsubscribe(stalled)
    await asyncio.sleep(0)


async def test_a_client_joining_mid_tick_gets_no_event_twice() -> None:
    hub = Hub(Metrics(), queue_size=1000, max_clients=10)
    early = hub.subscribe(None, "a", batch_tick=TICK)
    first, second = entries(1, 2), entries(3, 1)
    hub.publish(first)  # before the late one subscribes (its snapshot has these)
    late = hub.subscribe(None, "b", batch_tick=TICK)
    hub.publish(second)
    await next_tick()
    got = {s: [(e["vehicle_id"], e["seq"]) for f in s.queue for e in orjson.loads(f)["items"]]
           for s in (early, late)}
    assert got[early] == [(e.vehicle_id, orjson.loads(e.raw)["seq"]) for e in first + second]
    assert got[late] == [(e.vehicle_id, orjson.loads(e.raw)["seq"]) for e in second]
    hub.publish(first)  # next tick: the late one is an ordinary member again
    await next_tick()
    assert early.queue[-1] is late.queue[-1]
    hub.unsubscribe(early)
    hub.unsubscribe(late)
    await asyncio.sleep(0)


@pytest.fixture
def settings(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path) -> Settings:
    return Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                    kafka_control_topic=topic_factory("control", 1),
                    kafka_status_topic=topic_factory("status", 1), api_token=None,
                    analytics_output_dir=tmp_path, map_tile_url="", ws_batch_ms=50)


@pytest.mark.kafka
async def test_batch_clients_over_kafka_receive_the_same_frames(settings: Settings) -> None:
    kafka_bootstrap, topic = settings.kafka_bootstrap_servers, settings.kafka_topic
    events = [make_event(f"CAR{v:03d}", seq=s) for s in range(20) for v in range(10)]
    async with running_app(settings) as client:
        await wait_for(lambda: client.app[CONSUMER].assigned.is_set())
        hub = client.app[HUB]
        sockets = [await client.ws_connect("/ws?batch=1") for _ in range(4)]
        try:
            for ws in sockets:
                snap = await ws.receive_json(timeout=20)
                assert snap == {"type": "snapshot", "items": []}
            await publish(kafka_bootstrap, topic, events)
            received: list[list[bytes]] = [[] for _ in sockets]
            for ws, frames in zip(sockets, received, strict=True):
                n = 0
                while n < len(events):
                    msg = await ws.receive(timeout=20)
                    assert msg.type == aiohttp.WSMsgType.TEXT
                    frame = orjson.loads(msg.data)
                    assert set(frame) == {"type", "items"} and frame["type"] == "batch"
                    assert all(set(e) == set(EVENT_FIELDS) for e in frame["items"])
                    n += len(frame["items"])
                    frames.append(msg.data.encode())
                assert n == len(events)
            assert all(frames == received[0] for frames in received)  # byte for byte
            # serialised once per tick for all four, not once per client
            assert hub.frames_built["batch"] == len(received[0])
            assert hub.frames_built["event"] == 0  # no per-event client: no event frames
        finally:
            for ws in sockets:
                await ws.close()
        await wait_for(lambda: not hub.groups)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 300_000])
def test_frames_written_in_one_go_are_what_aiohttp_itself_writes(size: int) -> None:
    """The sender joins queued frames into one socket write (webapi.ws.framed); each must be
    byte for byte the frame aiohttp's own writer makes of the same payload."""
    from aiohttp import WSMsgType
    from aiohttp._websocket.writer import WebSocketWriter

    from webapi.ws import framed

    class Transport:
        def __init__(self) -> None:
            self.out = bytearray()

        def write(self, data: bytes) -> None:
            self.out += data

        def is_closing(self) -> bool:
            return False

    class Protocol:
        _paused = False

    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    transport = Transport()
    writer = WebSocketWriter(Protocol(), transport)  # type: ignore[arg-type]
    asyncio.run(writer.send_frame(payload, WSMsgType.TEXT))
    asyncio.run(writer.send_frame(b'{"a":1}', WSMsgType.TEXT))
    assert framed([payload, b'{"a":1}']) == bytes(transport.out)
