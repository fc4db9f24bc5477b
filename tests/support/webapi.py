"""Helpers for tests and benchmarks of the web API (like aiohttp.test_utils): events built
from the contract, publishing them to a real broker, running the app in-process, and a real
producer beside it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer

from common.contract import Location, TelemetryEvent
from tests.support.processes import stop_process
from webapi.app import create_app
from webapi.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
AppClient = TestClient[web.Request, Any]


def make_event(vehicle_id: str = "TESTCAR01", *, seq: int = 0,
               timestamp: datetime | None = None, speed_kmh: float = 42.0,
               speed_limit_kmh: int = 50, engine_rpm: int = 2100, lat: float = 48.137,
               lon: float = 11.575, **extra: Any) -> TelemetryEvent:
    """A valid event (speeding derived with the default 5 km/h tolerance)."""
    fields: dict[str, Any] = dict(
        vehicle_id=vehicle_id, timestamp=timestamp or datetime.now(UTC),
        location=Location(lat=lat, lon=lon), speed_kmh=speed_kmh, engine_rpm=engine_rpm,
        gear=3, fuel_level_pct=71.5, fault_codes=[], road_type="urban",
        speed_limit_kmh=speed_limit_kmh, speeding=speed_kmh > speed_limit_kmh + 5,
        rpm_over_redline=engine_rpm > 6200, seq=seq)
    fields.update(extra)
    return TelemetryEvent(**fields)


def fleet_events(vehicles: int, steps: int, *, start: datetime | None = None,
                 every_s: float = 1.0) -> list[TelemetryEvent]:
    """``steps`` events per vehicle, moving north-east, every third one speeding."""
    t0 = start or datetime.now(UTC) - timedelta(seconds=steps * every_s)
    out = []
    for step in range(steps):
        for v in range(vehicles):
            speed = 20.0 + 10 * ((step + v) % 12)
            out.append(make_event(f"CAR{v:03d}", seq=step,
                                  timestamp=t0 + timedelta(seconds=step * every_s),
                                  speed_kmh=speed, lat=48.10 + 0.01 * v + 0.0004 * step,
                                  lon=11.50 + 0.01 * v + 0.0005 * step))
    return out


async def publish(bootstrap: str, topic: str, events: Iterable[TelemetryEvent | bytes],
                  key: bytes | None = None) -> int:
    """Send events (or raw message values) and wait until all are acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    n = 0
    try:
        futures = []
        for ev in events:
            if isinstance(ev, bytes):
                futures.append(await producer.send(topic, key=key, value=ev))
            else:
                futures.append(await producer.send(topic, key=ev.vehicle_id.encode(),
                                                   value=ev.model_dump_json().encode()))
            n += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[AppClient]:
    """The app on a real loopback port, with a client; shut down cleanly on exit."""
    app = create_app(settings)
    async with TestServer(app, host="127.0.0.1") as server:
        client: AppClient = TestClient(server)
        async with client:
            yield client


async def wait_for(predicate: Callable[[], Any], timeout: float = 30.0,
                   interval: float = 0.05) -> Any:
    """Poll ``predicate`` until truthy (returns its value) or raise TimeoutError."""
    async with asyncio.timeout(timeout):
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(interval)


def control_settings(bootstrap: str, topic: str, make_topic: Callable[[str, int], str],
                     analytics_dir: Path) -> Settings:
    """Settings for tests that drive a real producer: own control/status topics, a token."""
    return Settings(kafka_bootstrap_servers=bootstrap, kafka_topic=topic,
                    kafka_control_topic=make_topic("control", 1),
                    kafka_status_topic=make_topic("status", 1), api_token="tok",  # noqa: S106
                    kafka_network_topic=f"network-{uuid.uuid4().hex[:12]}",
                    cors_origins=(), analytics_output_dir=analytics_dir, map_tile_url="",
                    control_timeout_s=5.0, status_stale_s=5.0)


def start_producer(settings: Settings, log: Path, *, fleet_size: int = 3, rate_hz: float = 2.0,
                   autostart: bool = False, trips: bool = False) -> subprocess.Popen[bytes]:
    """``python -m producer`` as a subprocess on the settings' topics.

    Trips are off unless asked for: with them, how many cars drive depends on the wall
    clock's hour (most are parked at night), and a test must not."""
    env = {**os.environ,
           "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "KAFKA_TOPIC": settings.kafka_topic,
           "KAFKA_CONTROL_TOPIC": settings.kafka_control_topic,
           "KAFKA_STATUS_TOPIC": settings.kafka_status_topic,
           "KAFKA_NETWORK_TOPIC": settings.kafka_network_topic,
           "FLEET_SIZE": str(fleet_size), "SIM_RATE_HZ": str(rate_hz), "SIM_SEED": "7",
           "SIM_AUTOSTART": "true" if autostart else "false",
           "SIM_TRIPS": "true" if trips else "false"}
    if settings.api_token is not None:  # the documented set-up: the web API's token, signing
        env["FLEETSTREAM_API_TOKEN"] = settings.api_token  # commands and statuses both ways
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "producer"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)  # noqa: S603


def stop_producer(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc)
