"""/start-sim, /stop-sim and /status against the real producer daemon (`python -m producer`
as a subprocess), over the Kafka control channel."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.contract import TelemetryEvent
from tests.support.webapi import (
    control_settings,
    running_app,
    start_producer,
    stop_producer,
    wait_for,
)
from tools.kafka import free_port
from webapi.control import ControlChannel, ControlUnavailable
from webapi.keys import STORE
from webapi.settings import Settings

pytestmark = pytest.mark.kafka

STATUS_KEYS = {"running", "last_event", "rate_hz", "vehicles", "events_sent", "send_errors",
               "lag_s", "behind_schedule", "producer_id", "updated_at", "instances"}


@pytest.fixture
def settings(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path) -> Settings:
    return control_settings(kafka_bootstrap, topic, topic_factory, tmp_path)


@pytest.fixture
def producer_daemon(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_producer(settings, tmp_path / "producer.log")
    yield proc
    stop_producer(proc)
    assert proc.returncode == 0, (tmp_path / "producer.log").read_text()[-3000:]


async def test_start_stop_status_end_to_end(settings: Settings, producer_daemon,
                                            tmp_path: Path) -> None:
    auth = {"Authorization": "Bearer tok"}
    async with running_app(settings) as client:
        async def status_ok():
            resp = await client.get("/status")
            return await resp.json() if resp.status == 200 else None

        try:
            status = await wait_for(status_ok, timeout=60, interval=0.25)
        except TimeoutError:
            pytest.fail("no producer status: " + (tmp_path / "producer.log").read_text()[-3000:])
        assert set(status) == STATUS_KEYS
        assert status["running"] is False

        resp = await client.post("/stop-sim", headers=auth)
        assert resp.status == 409 and "error" in await resp.json()

        resp = await client.post("/start-sim?rate_hz=5&fleet_size=3", headers=auth)
        assert resp.status == 200
        assert await resp.json() == {"status": "started", "rate_hz": 5.0}
        resp = await client.post("/start-sim?rate_hz=5", headers=auth)
        assert resp.status == 409 and "error" in await resp.json()

        store = client.app[STORE]
        await wait_for(lambda: store.consumed_total >= 10, timeout=30)
        latest = (await (await client.get("/telemetry/latest")).json())["items"]
        assert len(latest) == 3
        for e in latest:
            TelemetryEvent.model_validate(e)
        status = await wait_for(
            lambda: _running(client), timeout=10, interval=0.25)
        assert status["running"] is True and status["rate_hz"] == 5.0
        assert status["last_event"] is not None

        resp = await client.post("/stop-sim", headers=auth)
        assert resp.status == 200 and await resp.json() == {"status": "stopped"}
        resp = await client.post("/stop-sim", headers=auth)
        assert resp.status == 409
        assert (await client.post("/start-sim?rate_hz=1")).status == 401  # token still required


async def _running(client) -> dict | None:
    resp = await client.get("/status")
    body = await resp.json()
    return body if resp.status == 200 and body["running"] else None


async def test_without_kafka_commands_fail_clearly_and_close_ends_the_channel() -> None:
    dead = f"127.0.0.1:{free_port()}"
    channel = ControlChannel(Settings(kafka_bootstrap_servers=dead, control_timeout_s=1.0))
    channel.start()
    with pytest.raises(ControlUnavailable, match=f"not connected \\({dead}\\)"):
        await channel.command("status")
    assert channel.task is not None and not channel.task.done()  # still retrying, with back-off
    await channel.close()
    assert channel.task.done() and channel.stopped and not channel.ready.is_set()
