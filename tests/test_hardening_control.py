"""Issue 9, item 1: no command can kill, hang or (without the token) steer the producer.

Each test replays an attack first: rates that made ``dt`` infinite or the sub-step loop run
10^9 times, and commands forged straight onto the control topic. Unit tests drive the daemon
with in-memory edges; the Kafka tests run the real ``python -m producer`` on a real broker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from common.contract import (
    COMMAND_MAX_AGE_S,
    MAX_CLOCK_SKEW_S,
    MAX_FLEET_SIZE,
    MAX_RATE_HZ,
    MAX_SEQ,
    MAX_SHARDS,
    MAX_STATUS_TEXT_LEN,
    MIN_RATE_HZ,
    ControlCommand,
    ProducerStatus,
    read_status,
    sign_command,
    sign_status,
    status_signed,
    verify_command,
)
from producer.builtin import warsaw
from producer.daemon import THREAD_TICK_WORK, Daemon
from producer.publisher import PublisherStats
from producer.settings import Settings
from producer.sim import MAX_STEP_S, Simulation
from tests.support.webapi import ROOT, control_settings, running_app, start_producer, stop_producer
from tests.support.webapi import wait_for as wait_until
from webapi.control import MAX_PRODUCERS_TRACKED
from webapi.control import ControlChannel as WebControl
from webapi.settings import Settings as WebSettings

TOKEN = "s3cret-token"  # noqa: S105


class FakePublisher:
    def __init__(self) -> None:
        self.stats = PublisherStats()

    async def publish(self, keys: list[bytes], values: list[bytes]) -> None:
        self.stats.sent += len(values)

    async def flush(self) -> None:
        pass


class FakeChannel:
    async def publish(self, status: ProducerStatus) -> None:
        pass
HOSTILE_RATES = [5e-324, 1e-9, 0.0, -1.0, MIN_RATE_HZ / 2, MAX_RATE_HZ * 1.01,
                 float("nan"), float("inf"), float("-inf")]


def _daemon(token: str | None = None, *, rate: float = 10.0, fleet: int = 2,
            autostart: bool = False) -> tuple[Daemon, FakePublisher]:
    s = Settings(sim_rate_hz=rate, fleet_size=fleet, sim_autostart=autostart, sim_seed=1,
                 api_token=token)
    sim = Simulation(warsaw(), seed=1, fleet_size=fleet, rate_hz=rate,
                     first_vehicle_id="TESTCAR01", run_key="t")
    pub = FakePublisher()
    d = Daemon(s, sim, pub, FakeChannel(), producer_id="p1")  # type: ignore[arg-type]
    return d, pub


def _raw(rate: float) -> bytes:
    # NaN and infinities as the literals a hostile JSON writer would send
    text = {math.inf: "Infinity", -math.inf: "-Infinity"}.get(rate, repr(rate))
    if math.isnan(rate):
        text = "NaN"
    return b'{"command_id":"c1","command":"start","rate_hz":' + text.encode() + b"}"


# ---------------------------------------------------------------------- numbers, everywhere
@pytest.mark.parametrize("rate", HOSTILE_RATES)
def test_a_hostile_rate_on_the_control_topic_is_refused_and_changes_nothing(rate: float) -> None:
    d, _ = _daemon()
    reply = d.handle(_raw(rate))
    assert reply is not None and (reply.ok, reply.error) == (False, "invalid")
    assert not d.running and d.rate_hz == 10.0 and d.sim.rate_hz == 10.0
    d._apply_targets()
    assert d.sim.dt == 0.1


@pytest.mark.parametrize("size", [0, -5, MAX_FLEET_SIZE + 1, 10**18])
def test_a_hostile_fleet_size_on_the_control_topic_is_refused(size: int) -> None:
    d, _ = _daemon()
    reply = d.handle(orjson.dumps({"command_id": "c1", "command": "configure",
                                   "fleet_size": size}))
    assert reply is not None and reply.error == "invalid" and d.fleet_size == 2


@pytest.mark.parametrize("rate", HOSTILE_RATES)
def test_the_simulation_refuses_a_rate_out_of_range(rate: float) -> None:
    sim = Simulation(warsaw(), seed=1, fleet_size=1, rate_hz=1.0,
                     first_vehicle_id="TESTCAR01", run_key="t")
    with pytest.raises(ValueError, match="rate_hz"):
        sim.set_rate(rate)
    assert sim.rate_hz == 1.0
    with pytest.raises(ValueError, match="rate_hz"):
        Simulation(warsaw(), seed=1, fleet_size=1, rate_hz=rate,
                   first_vehicle_id="TESTCAR01", run_key="t")


@pytest.mark.parametrize("value", ["5e-324", "1e-9", "nan", "inf", "-1", "0", "50.5"])
def test_settings_refuse_a_rate_out_of_range(monkeypatch: pytest.MonkeyPatch,
                                             value: str) -> None:
    monkeypatch.setenv("SIM_RATE_HZ", value)
    with pytest.raises(ValidationError, match="SIM_RATE_HZ"):
        Settings()


@pytest.mark.parametrize("rate", [1e-9, math.inf, math.nan, MIN_RATE_HZ / 1.5])
def test_the_sub_step_loop_is_bounded(rate: float) -> None:
    sim = Simulation(warsaw(), seed=1, fleet_size=2, rate_hz=MIN_RATE_HZ,
                     first_vehicle_id="TESTCAR01", run_key="t")
    sim.rate_hz = rate  # past set_rate's check, as a bug might
    with pytest.raises(ValueError, match="dt"):
        sim.advance()
    sim.rate_hz = MIN_RATE_HZ
    sim.advance()
    assert sim.state.t == pytest.approx(MAX_STEP_S)


def test_a_refused_target_is_undone_not_fatal() -> None:
    d, _ = _daemon()
    d.rate_hz = 1e-9  # as if validation were bypassed
    d.fleet_size = 0
    d._apply_targets()
    assert (d.rate_hz, d.sim.rate_hz, d.fleet_size, d.sim.size) == (10.0, 10.0, 2, 2)


async def test_a_big_tick_leaves_the_event_loop_free() -> None:
    """The slowest rate on a big fleet: signals, commands and statuses are still served."""
    fleet = THREAD_TICK_WORK // int(MAX_STEP_S) + 1
    d, _ = _daemon(rate=MIN_RATE_HZ, fleet=fleet)
    beats = 0

    async def heartbeat() -> None:
        nonlocal beats
        while True:
            await asyncio.sleep(0.001)
            beats += 1

    hb = asyncio.create_task(heartbeat())
    try:
        await d._advance()
    finally:
        hb.cancel()
    assert beats > 0  # the loop ran while the fleet advanced 100 sub-steps
    assert d.sim.state.t == pytest.approx(MAX_STEP_S)


# ---------------------------------------------------------------------- signed commands
def _signed(token: str, *, now: float | None = None, cid: str | None = None,
            **body: object) -> bytes:
    cmd = ControlCommand.model_validate({"command_id": cid or uuid.uuid4().hex, **body})
    return sign_command(cmd, token, time.time() if now is None else now) \
        .model_dump_json().encode()


def test_without_the_token_unsigned_commands_are_obeyed() -> None:
    d, _ = _daemon(None)
    reply = d.handle(orjson.dumps({"command_id": "c1", "command": "start"}))
    assert reply is not None and reply.ok and d.running


@pytest.mark.parametrize("forgery", ["unsigned", "wrong token", "tampered", "stale", "future",
                                     "garbage signature"])
def test_with_the_token_a_forged_command_is_refused_counted_and_ignored(forgery: str) -> None:
    d, _ = _daemon(TOKEN)
    now = time.time()
    if forgery == "unsigned":
        raw = orjson.dumps({"command_id": "c1", "command": "start", "rate_hz": 50})
    elif forgery == "wrong token":
        raw = _signed("guess", command="start", rate_hz=50)
    elif forgery == "tampered":  # a real signature, for a different rate
        doc = orjson.loads(_signed(TOKEN, command="start", rate_hz=1))
        raw = orjson.dumps({**doc, "rate_hz": 50})
    elif forgery == "stale":
        raw = _signed(TOKEN, now=now - COMMAND_MAX_AGE_S - 5, command="start", rate_hz=50)
    elif forgery == "future":
        raw = _signed(TOKEN, now=now + COMMAND_MAX_AGE_S + 5, command="start", rate_hz=50)
    else:
        raw = orjson.dumps({"command_id": "c1", "command": "start", "issued_at": now,
                            "signature": "00" * 32})
    reply = d.handle(raw)
    assert reply is not None and (reply.ok, reply.error) == (False, "unauthorized")
    assert reply.message and "FLEETSTREAM_API_TOKEN" in reply.message
    assert d.unauthorized_commands == 1
    assert not d.running and d.rate_hz == 10.0


def test_with_the_token_a_signed_command_is_obeyed_once() -> None:
    d, _ = _daemon(TOKEN)
    raw = _signed(TOKEN, command="start", rate_hz=4, fleet_size=3)
    reply = d.handle(raw)
    assert reply is not None and reply.ok and d.running and (d.rate_hz, d.fleet_size) == (4, 3)
    assert d.handle(_signed(TOKEN, command="stop")).ok  # type: ignore[union-attr]
    replay = d.handle(raw)  # the same signed bytes again, within the time window
    assert replay is not None and replay.error == "unauthorized" and "replayed" in replay.message
    assert not d.running and d.unauthorized_commands == 1


def test_the_signature_covers_every_field() -> None:
    cmd = sign_command(ControlCommand(command_id="c", command="configure", rate_hz=2),
                       TOKEN, 1000.0)
    assert verify_command(cmd, TOKEN, 1000.0) is None
    for change in ({"command": "start"}, {"rate_hz": 3.0}, {"fleet_size": 9},
                   {"command_id": "d"}, {"issued_at": 1001.0}):
        assert verify_command(cmd.model_copy(update=change), TOKEN, 1000.0) == "bad signature"


# ---------------------------------------------------------------------- the real broker
async def _read_replies(bootstrap: str, topic: str, into: list[ProducerStatus],
                        ready: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="latest", enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        ready.set()
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                into.extend(ProducerStatus.model_validate_json(r.value) for r in records)
    finally:
        await consumer.stop()


@pytest.fixture
def signed_settings(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path):
    settings = control_settings(kafka_bootstrap, topic, topic_factory, tmp_path)
    return settings.model_copy(update={"api_token": TOKEN})


@pytest.mark.kafka
async def test_a_command_forged_on_the_control_topic_does_nothing(
        kafka_bootstrap: str, signed_settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = signed_settings
    monkeypatch.setenv("FLEETSTREAM_API_TOKEN", TOKEN)  # the producer's, inherited
    log = tmp_path / "producer.log"
    proc = start_producer(settings, log)
    assert proc is not None
    statuses: list[ProducerStatus] = []
    ready = asyncio.Event()
    reader = asyncio.create_task(_read_replies(kafka_bootstrap, settings.kafka_status_topic,
                                               statuses, ready))
    sender = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await sender.start()
    try:
        await asyncio.wait_for(ready.wait(), 30)
        await wait_until(lambda: statuses, timeout=60)  # the producer is up and listening

        async def send(raw: bytes) -> None:
            await sender.send_and_wait(settings.kafka_control_topic, value=raw)

        def reply_to(cid: str) -> ProducerStatus | None:
            return next((s for s in statuses if s.reply_to == cid), None)

        # the attacks: unsigned start at the rate that once killed the daemon, and unsigned
        # starts that would be valid with a signature
        await send(b'{"command_id":"f1","command":"start","rate_hz":5e-324}')
        await send(b'{"command_id":"f2","command":"start","rate_hz":50,"fleet_size":100000}')
        await send(orjson.dumps({"command_id": "f3", "command": "start",
                                 "issued_at": time.time(), "signature": "ab" * 32}))
        await send(_signed("wrong", cid="f4", command="configure", fleet_size=5))
        for cid in ("f1", "f2", "f3", "f4"):
            await wait_until(lambda c=cid: reply_to(c), timeout=20)
        assert reply_to("f1").error == "invalid"  # type: ignore[union-attr]
        assert reply_to("f2").error == "unauthorized"  # type: ignore[union-attr]
        assert reply_to("f3").error == "unauthorized"  # type: ignore[union-attr]
        assert reply_to("f4").error == "unauthorized"  # type: ignore[union-attr]
        await asyncio.sleep(1.5)  # statuses after the forgeries
        assert proc.poll() is None  # alive
        latest = statuses[-1]
        assert latest.running is False and latest.vehicles == 3 and latest.events_sent == 0

        # the web API signs with the same token: its start is obeyed
        async with running_app(settings) as client:
            await wait_until(lambda: _status_ok(client), timeout=30, interval=0.25)
            resp = await client.post("/start-sim?rate_hz=2",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
            assert resp.status == 200, await resp.text()
        await wait_until(lambda: statuses[-1].events_sent > 0, timeout=30)
    finally:
        await sender.stop()
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        stop_producer(proc)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "unauthorized" in text and "unsigned" in text


async def _status_ok(client) -> bool:
    return (await client.get("/status")).status == 200


@pytest.mark.kafka
def test_sigterm_during_a_long_tick_exits_cleanly(kafka_bootstrap: str, topic: str,
                                                  tmp_path: Path) -> None:
    """The slowest rate on a big fleet (100 sub-steps per tick): SIGTERM still ends it, exit 0."""
    log = tmp_path / "producer.log"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_TOPIC": topic,
           "KAFKA_CONTROL_TOPIC": f"control-{uuid.uuid4().hex}",
           "KAFKA_STATUS_TOPIC": f"status-{uuid.uuid4().hex}",
           "FLEET_SIZE": "5000", "SIM_RATE_HZ": str(MIN_RATE_HZ), "SIM_SEED": "3",
           "SIM_AUTOSTART": "true"}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "producer"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while b"connected to" not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(0.5)  # inside the first tick: publishing or advancing 100 sub-steps
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "signal received" in log.read_text()


# ---------------------------------------------------------------------- the status topic
def _status_doc(**over: object) -> dict[str, object]:
    doc: dict[str, object] = dict(producer_id="p1", updated_at=datetime.now(UTC).isoformat(),
                                  running=False, rate_hz=1.0, vehicles=3, fleet_size=3)
    doc.update(over)
    return doc


def _status(**over: object) -> bytes:
    """A status record as anyone may write it (integers past 64 bits too)."""
    return json.dumps(_status_doc(**over), separators=(",", ":")).encode()


@pytest.mark.parametrize(("field", "value"), [
    ("vehicles", 10**30), ("vehicles", 10**12), ("vehicles", -7),
    ("vehicles", MAX_FLEET_SIZE + 1), ("fleet_size", 120_000), ("fleet_size", 0),
    ("events_sent", 10**30), ("events_sent", -1), ("send_errors", MAX_SEQ + 1),
    ("rate_hz", -3), ("rate_hz", MIN_RATE_HZ / 2), ("rate_hz", MAX_RATE_HZ * 2),
    ("lag_s", -1.0), ("producer_id", ""), ("producer_id", "<script>" * 4000),
    ("producer_id", "evil\x1b[31m\r\nINFO fake line"), ("producer_id", "p" * 129),
    ("group", "g\n1"), ("shards", list(range(MAX_SHARDS + 1))), ("shards", [-1]),
    ("message", "m" * (MAX_STATUS_TEXT_LEN + 1)), ("reply_to", "r" * 65),
    ("running", "true"), ("vehicles", "12"), ("updated_at", "1767254400"),
    ("updated_at", "2026-01-01T08:00:00"), ("signature", "ab" * 100),
])
def test_a_status_out_of_bounds_is_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        read_status(_status(**{field: value}))


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_status_with_a_non_finite_number_is_refused(literal: bytes) -> None:
    for field in (b"rate_hz", b"lag_s"):
        raw = (_status(rate_hz=1.0, lag_s=0.5)).replace(
            b'"' + field + b'":' + (b"1.0" if field == b"rate_hz" else b"0.5"),
            b'"' + field + b'":' + literal)
        assert literal in raw
        with pytest.raises(ValidationError):
            read_status(raw)


def test_what_a_producer_publishes_validates_and_its_signature_verifies() -> None:
    d, _ = _daemon(TOKEN)
    d.handle(_signed(TOKEN, command="start", rate_hz=4))
    reply = d.handle(orjson.dumps({"command_id": "x" * 64, "command": "start",
                                   **{f"f{i}": i for i in range(500)}}))  # a long message
    for st in (d.status(), reply, d.status(message="shutting down")):
        assert st is not None
        back = read_status(st.model_dump_json())  # over the wire and back, strictly
        assert back == st and status_signed(back, TOKEN) and not status_signed(back, "other")
        for change in ({"running": not back.running}, {"vehicles": 4}, {"rate_hz": 9.0},
                       {"updated_at": back.updated_at + timedelta(seconds=1)}):
            assert not status_signed(back.model_copy(update=change), TOKEN)
    assert reply is not None and len(reply.message or "") == MAX_STATUS_TEXT_LEN
    stopped, _ = _daemon(None, rate=MIN_RATE_HZ)  # a stopped producer's rate is its setting
    st = stopped.status()
    assert st.signature is None and read_status(st.model_dump_json()).rate_hz == MIN_RATE_HZ
    assert read_status(_status(rate_hz=0)).rate_hz == 0  # 0: not set


def test_malformed_commands_are_logged_at_most_once_per_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    d, _ = _daemon(TOKEN)
    caplog.set_level(logging.WARNING, logger="producer.daemon")
    for i in range(500):
        d.handle(orjson.dumps({"command_id": f"j{i}", "command": "x"}))
    lines = [r for r in caplog.records if "invalid command" in r.getMessage()]
    assert d.malformed_commands == 500 and len(lines) == 1


def test_the_unauthorized_warning_cannot_forge_log_lines(
        caplog: pytest.LogCaptureFixture) -> None:
    d, _ = _daemon(TOKEN)
    caplog.set_level(logging.WARNING, logger="producer.daemon")
    d.handle(orjson.dumps({"command_id": "x\nWARNING producer.daemon: fake\x1b[2J",
                           "command": "start"}))
    (line,) = [r.getMessage() for r in caplog.records if "unauthorized" in r.getMessage()]
    assert "\n" not in line and "\x1b" not in line and "\\n" in line


def test_replies_to_refused_junk_are_routine_and_others_are_essential() -> None:
    sent: list[tuple[str | None, bool]] = []

    class Channel:
        async def commands(self):  # type: ignore[no-untyped-def]
            yield orjson.dumps({"command_id": "j1", "command": "x"})
            yield orjson.dumps({"command_id": "u1", "command": "start"})  # unsigned
            yield _signed(TOKEN, cid="s1", command="start")
            yield _signed(TOKEN, cid="s2", command="start")
            raise asyncio.CancelledError

        async def publish(self, status: ProducerStatus, *, essential: bool = False) -> None:
            sent.append((status.reply_to, essential))

    d, _ = _daemon(TOKEN)
    d.channel = Channel()  # type: ignore[assignment]
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(d.control_loop())
    assert sent == [("j1", False), ("u1", False), ("s1", True), ("s2", True)]


def _webapi_channel(token: str | None = None) -> WebControl:
    return WebControl(WebSettings(api_token=token, status_stale_s=5.0))


def test_the_web_api_takes_only_signed_present_statuses_with_a_token() -> None:
    ch = _webapi_channel(TOKEN)
    now = datetime.now(UTC)

    def signed(**over: object) -> bytes:
        st = ProducerStatus.model_validate(_status_doc(**over))
        return sign_status(st, TOKEN).model_dump_json().encode()

    ch._on_status(_status(producer_id="unsigned"))
    ch._on_status(signed(producer_id="bad").replace(b'"running":false', b'"running":true'))
    ch._on_status(signed(producer_id="future", updated_at="9999-12-31T23:59:59+00:00"))
    ch._on_status(signed(producer_id="ahead",
                         updated_at=(now + timedelta(seconds=MAX_CLOCK_SKEW_S + 60)).isoformat()))
    ch._on_status(signed(producer_id="old",
                         updated_at=(now - timedelta(seconds=MAX_CLOCK_SKEW_S + 60)).isoformat()))
    assert ch.statuses == {} and ch.latest_status() is None
    ch._on_status(signed(producer_id="real", running=True))
    older = (now - timedelta(seconds=2)).isoformat()
    ch._on_status(signed(producer_id="real", running=False, updated_at=older))  # replayed
    st = ch.latest_status()
    assert st is not None and (st.producer_id, st.running) == ("real", True)


def test_the_web_api_without_a_token_takes_unsigned_statuses() -> None:
    ch = _webapi_channel(None)
    ch._on_status(_status(producer_id="real"))
    assert [i.producer_id for i in ch.instances()] == ["real"]


def test_unknown_producers_cannot_evict_a_live_one() -> None:
    ch = _webapi_channel(None)
    ch._on_status(_status(producer_id="real", running=True))
    for i in range(2 * MAX_PRODUCERS_TRACKED):
        ch._on_status(_status(producer_id=f"fake{i}"))
    assert len(ch.statuses) == MAX_PRODUCERS_TRACKED and "real" in ch.statuses
    st = ch.latest_status()
    assert st is not None and st.producer_id == "real" and st.running
    ch._on_status(_status(producer_id="real", vehicles=5))  # still updated
    assert ch.statuses["real"][1].vehicles == 5
    # once the fakes fall silent for the stale window, a new producer finds room
    for pid, (t, st) in list(ch.statuses.items()):
        if pid != "real":
            ch.statuses[pid] = (t - 60.0, st)
    ch._on_status(_status(producer_id="newcomer"))
    assert set(ch.statuses) == {"real", "newcomer"}
