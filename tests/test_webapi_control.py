"""/start-sim, /stop-sim and /status against the real producer daemon (`python -m producer`
as a subprocess), over the Kafka control channel."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from common.contract import MAX_CLOCK_SKEW_S, ProducerStatus, TelemetryEvent, sign_status
from tests.support.webapi import (
    control_settings,
    publish,
    running_app,
    start_producer,
    stop_producer,
    wait_for,
)
from tools.kafka import free_port
from webapi.control import ControlChannel, ControlUnavailable
from webapi.keys import CONTROL, STORE
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


def _status(**over: object) -> bytes:
    doc: dict[str, object] = dict(producer_id="real", updated_at=datetime.now(UTC).isoformat(),
                                  running=False, rate_hz=1.0, vehicles=3, fleet_size=3)
    doc.update(over)
    return json.dumps(doc).encode()  # integers past 64 bits too, as anyone may write them


async def _status_of(client) -> tuple[int, dict]:
    resp = await client.get("/status")
    return resp.status, await resp.json()


async def test_hostile_statuses_on_the_topic_never_reach_status(settings: Settings) -> None:
    """The audit's records: /status answered 500 for 10**30 vehicles and showed negative,
    NaN, year-9999 and 100 KB values. Without the token every writer is trusted, but only
    within the contract's bounds; a status stamped in the future is set aside."""
    s = settings.model_copy(update={"api_token": None})
    ahead = (datetime.now(UTC) + timedelta(seconds=MAX_CLOCK_SKEW_S + 60)).isoformat()
    async with running_app(s) as client:
        await wait_for(lambda: client.app[CONTROL].ready.is_set(), timeout=60)
        await publish(s.kafka_bootstrap_servers, s.kafka_status_topic, [
            _status(producer_id="p1", vehicles=10**30),
            _status(producer_id="p2", events_sent=10**30),
            _status(producer_id="p3", vehicles=10**12, running=True),
            _status(producer_id="p4", updated_at="9999-12-31T23:59:59+00:00", running=True),
            _status(producer_id="p5", updated_at=ahead, running=True),
            _status(producer_id="p6").replace(b'"rate_hz": 1.0', b'"rate_hz": NaN'),
            _status(producer_id="p7", vehicles=-7, rate_hz=-3),
            _status(producer_id="<script>alert(1)</script>" * 4000),
            _status(producer_id="evil\x1b[31m\r\nINFO fake line"),
            _status(producer_id="p8", running="true", vehicles="12"),
        ])
        code, body = await _status_of(client)
        assert code == 503, body  # nothing acceptable yet (and no 500)
        await publish(s.kafka_bootstrap_servers, s.kafka_status_topic,
                      [_status(producer_id="real", vehicles=4)])
        await wait_for(lambda: "real" in client.app[CONTROL].statuses, timeout=30)
        code, body = await _status_of(client)
    assert code == 200
    assert [i["producer_id"] for i in body["instances"]] == ["real"]
    assert (body["running"], body["vehicles"]) == (False, 4)


async def test_with_the_token_status_shows_only_signed_statuses(settings: Settings) -> None:
    token = settings.api_token
    assert token is not None

    def signed(**over: object) -> bytes:
        st = ProducerStatus.model_validate_json(_status(**over))
        return sign_status(st, token).model_dump_json().encode()

    async with running_app(settings) as client:
        await wait_for(lambda: client.app[CONTROL].ready.is_set(), timeout=60)
        await publish(settings.kafka_bootstrap_servers, settings.kafka_status_topic, [
            _status(producer_id="forged", running=True, vehicles=99),
            signed(producer_id="future", updated_at="9999-12-31T23:59:59+00:00"),
            signed(producer_id="real", vehicles=5),
        ])
        await wait_for(lambda: "real" in client.app[CONTROL].statuses, timeout=30)
        code, body = await _status_of(client)
    assert code == 200
    assert [i["producer_id"] for i in body["instances"]] == ["real"]
    assert (body["running"], body["vehicles"]) == (False, 5)


async def test_a_junk_flood_on_the_control_topic_does_not_starve_replies(
        settings: Settings, tmp_path: Path) -> None:
    """The audit's flood: 200 malformed commands every 50 ms. Each earned a reply and a log
    line; replies past 8 pending were dropped, so /start-sim answered 503 although the
    producer had started."""
    log = tmp_path / "producer.log"
    proc = start_producer(settings, log)
    auth = {"Authorization": f"Bearer {settings.api_token}"}
    stop = asyncio.Event()
    sent = 0

    async def junk() -> None:
        nonlocal sent
        sender = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                  linger_ms=20)
        await sender.start()
        try:
            while not stop.is_set():
                for _ in range(200):
                    sent += 1
                    await sender.send(settings.kafka_control_topic, value=json.dumps(
                        {"command_id": f"j{sent}", "command": "x"}).encode())
                await asyncio.sleep(0.05)
        finally:
            await sender.stop()

    try:
        async with running_app(settings) as client:
            await wait_for(lambda: client.app[CONTROL].latest_status() is not None, timeout=60)
            flood = asyncio.create_task(junk())
            try:
                await wait_for(lambda: sent >= 2000, timeout=60)
                answers = []
                for rate in range(1, 11):  # each one once had about 1 chance in 4 of a 503
                    resp = await client.post(f"/start-sim?rate_hz={rate}", headers=auth)
                    answers.append((resp.status, await resp.json()))
                    resp = await client.post("/stop-sim", headers=auth)
                    answers.append((resp.status, await resp.json()))
            finally:
                stop.set()
                await flood
    finally:
        stop_producer(proc)
    text = log.read_text()
    assert answers == [x for rate in range(1, 11) for x in (
        (200, {"status": "started", "rate_hz": float(rate)}), (200, {"status": "stopped"}))]
    skipped = [ln for ln in text.splitlines() if "invalid command skipped" in ln]
    assert sent >= 2000 and 1 <= len(skipped) < 20, text[-2000:]  # one line per 10 s
