"""No ghosts: a vehicle silent longer than WEBAPI_VEHICLE_TIMEOUT_S leaves the live view
(REST, WS snapshot, KPIs) and comes back with ?include_stale=true or its next event; and the
viewport and density reads the Streamlit map uses at fleet scale."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from common.contract import EVENT_FIELDS
from tests.support.webapi import make_event, publish, running_app, wait_for
from webapi.keys import STORE
from webapi.settings import Settings

pytestmark = pytest.mark.kafka
TIMEOUT_S = 1.0


@pytest.fixture
def settings(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path) -> Settings:
    return Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                    kafka_control_topic=topic_factory("control", 1),
                    kafka_status_topic=topic_factory("status", 1), api_token=None,
                    analytics_output_dir=tmp_path, map_tile_url="",
                    vehicle_timeout_s=TIMEOUT_S)


async def ids(client, url: str) -> list[str]:
    resp = await client.get(url)
    assert resp.status == 200, await resp.text()
    return [e["vehicle_id"] for e in (await resp.json())["items"]]


async def test_silent_car_leaves_and_comes_back(settings: Settings) -> None:
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.kafka_topic
    await publish(bootstrap, topic, [make_event("GHOST"), make_event("ALIVE")])
    async with running_app(settings) as client:
        store = client.app[STORE]
        await wait_for(lambda: store.consumed_total == 2)
        assert await ids(client, "/telemetry/latest") == ["ALIVE", "GHOST"]
        # ALIVE keeps reporting, GHOST goes silent
        seq = 1
        while not store.is_stale("GHOST"):
            await publish(bootstrap, topic, [make_event("ALIVE", seq=seq)])
            seq += 1
            await asyncio.sleep(0.3)
        await publish(bootstrap, topic, [make_event("ALIVE", seq=seq)])
        await wait_for(lambda: not store.is_stale("ALIVE"))
        assert await ids(client, "/telemetry/latest") == ["ALIVE"]
        assert (await (await client.get("/vehicles")).json()) == {"items": ["ALIVE"]}
        assert (await (await client.get("/vehicles?include_stale=true")).json()) == {
            "items": ["ALIVE", "GHOST"], "stale": ["GHOST"]}
        stats = await (await client.get("/stats")).json()
        assert (stats["vehicles_reporting"], stats["vehicles_stale"]) == (1, 1)
        resp = await client.get("/telemetry/latest?include_stale=true")
        items = (await resp.json())["items"]
        assert [(e["vehicle_id"], e["stale"]) for e in items] == [("ALIVE", False),
                                                                   ("GHOST", True)]
        assert all(set(e) == set(EVENT_FIELDS) | {"stale"} for e in items)
        async with client.ws_connect("/ws") as ws:
            snap = await ws.receive_json(timeout=10)
            assert [e["vehicle_id"] for e in snap["items"]] == ["ALIVE"]
        bad = await client.get("/telemetry/latest?include_stale=maybe")
        assert bad.status == 422 and (await bad.json())["parameter"] == "include_stale"
        # its next event brings it back
        await publish(bootstrap, topic, [make_event("GHOST", seq=1)])
        await wait_for(lambda: not store.is_stale("GHOST"))
        assert await ids(client, "/telemetry/latest") == ["ALIVE", "GHOST"]


async def test_viewport_and_density(kafka_bootstrap: str, settings: Settings) -> None:
    settings = settings.model_copy(update={"vehicle_timeout_s": 600.0})
    cars = [make_event("SW", lat=10.1, lon=20.1, speed_kmh=10.0),
            make_event("SW2", lat=10.2, lon=20.2, speed_kmh=30.0),
            make_event("NE", lat=10.9, lon=20.9, speed_kmh=50.0),
            make_event("OUT", lat=30.0, lon=40.0)]
    await publish(kafka_bootstrap, settings.kafka_topic, cars)
    async with running_app(settings) as client:
        await wait_for(lambda: client.app[STORE].consumed_total == len(cars))
        assert await ids(client, "/telemetry/latest?bbox=20,10,21,11") == ["NE", "SW", "SW2"]
        assert await ids(client, "/telemetry/latest?bbox=20,10,20.5,10.5") == ["SW", "SW2"]
        resp = await client.get("/telemetry/density?bbox=20,10,21,11&cells=2")
        assert resp.status == 200
        body = await resp.json()
        assert set(body) == {"bbox", "cells", "cell_size_deg", "total", "items"}
        assert body["total"] == 3 and body["cells"] == 2
        assert body["items"] == [
            {"col": 0, "row": 0, "lon": 20.25, "lat": 10.25, "count": 2,
             "mean_speed_kmh": 20.0},
            {"col": 1, "row": 1, "lon": 20.75, "lat": 10.75, "count": 1,
             "mean_speed_kmh": 50.0}]
        empty = await (await client.get("/telemetry/density?bbox=21,10,20,11")).json()
        assert (empty["total"], empty["items"]) == (0, [])
        assert await ids(client, "/telemetry/latest?bbox=21,10,20,11") == []
        for url, param in [("/telemetry/density", "bbox"),
                           ("/telemetry/density?bbox=0,0,1e2,1", "bbox"),
                           ("/telemetry/density?bbox=0,0,1,nan", "bbox"),
                           ("/telemetry/density?bbox=0,0,1,1&cells=0", "cells"),
                           ("/telemetry/density?bbox=0,0,1,1&cells=257", "cells"),
                           ("/telemetry/latest?bbox=1,2,3", "bbox")]:
            bad = await client.get(url)
            assert bad.status == 422, url
            assert (await bad.json())["parameter"] == param, url


async def test_backfilled_cars_of_an_old_run_are_not_live(settings: Settings) -> None:
    """A web API (re)started after a run: cars Kafka recorded long ago are backfilled as
    stale, cars of the run going on now are live."""
    from aiokafka import AIOKafkaProducer

    settings = settings.model_copy(update={"vehicle_timeout_s": 120.0,
                                           "backfill_seconds": 3600.0})
    now_ms = int(time.time() * 1000)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await producer.start()
    try:
        for vid, ts_ms in (("OLDRUN", now_ms - 600_000), ("NOWRUN", now_ms)):
            ev = make_event(vid, timestamp=datetime.fromtimestamp(ts_ms / 1000, UTC))
            await producer.send_and_wait(settings.kafka_topic, key=vid.encode(),
                                         value=ev.model_dump_json().encode(), timestamp_ms=ts_ms)
    finally:
        await producer.stop()
    async with running_app(settings) as client:
        await wait_for(lambda: client.app[STORE].consumed_total == 2)
        assert await ids(client, "/telemetry/latest") == ["NOWRUN"]
        assert (await (await client.get("/vehicles?include_stale=1")).json()) == {
            "items": ["NOWRUN", "OLDRUN"], "stale": ["OLDRUN"]}
