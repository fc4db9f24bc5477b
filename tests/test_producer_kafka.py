"""The producer daemon against the real broker: round trip, control commands, signals, and a
broker killed and restarted mid-run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from common.contract import (
    EVENT_FIELDS,
    ControlCommand,
    ProducerStatus,
    read_event,
    read_status,
    sign_command,
    sign_status,
    status_signed,
)
from producer.daemon import build_daemon, run_daemon
from producer.settings import Settings
from tools.kafka import free_port

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parent.parent


def _settings(bootstrap: str, **kw: object) -> Settings:
    tag = uuid.uuid4().hex[:10]
    base: dict[str, object] = dict(
        kafka_bootstrap_servers=bootstrap, kafka_topic=f"telemetry-{tag}",
        kafka_control_topic=f"control-{tag}", kafka_status_topic=f"status-{tag}",
        kafka_partitions=3, sim_seed=7, fleet_size=3, sim_rate_hz=10.0,
        producer_id=f"test-{tag}", status_interval_s=0.5,
        # every car drives and reports every tick, in fleet order: exact counts, last car last
        sim_trips=False, sim_phase_jitter=False)
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


async def _read_all(bootstrap: str, topic: str, expect: int | None = None,
                    idle_s: float = 3.0) -> list:
    """Every record of ``topic`` (until ``expect`` seen, or nothing new for ``idle_s``)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list = []
    try:
        idle = 0.0
        async with asyncio.timeout(120):
            while (expect is None or len(out) < expect) and idle < idle_s:
                batch = await consumer.getmany(timeout_ms=500)
                got = [r for recs in batch.values() for r in recs]
                out.extend(got)
                idle = 0.0 if got else idle + 0.5
    finally:
        await consumer.stop()
    return out


def _check_sequences(records: list) -> dict[str, list[int]]:
    """Per vehicle, seq must be 0, 1, 2, ... with no gap and no duplicate."""
    seqs: dict[str, list[int]] = defaultdict(list)
    for rec in records:
        doc = orjson.loads(rec.value)
        assert rec.key.decode() == doc["vehicle_id"]
        seqs[doc["vehicle_id"]].append(doc["seq"])
    for vid, s in seqs.items():
        assert s == list(range(len(s))), f"{vid}: seq not contiguous from 0: {s[:20]}..."
    return seqs


class StatusWatcher:
    """Reads the status topic from the start; finds replies by command id."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                         auto_offset_reset="earliest")
        self.seen: list[ProducerStatus] = []

    async def __aenter__(self) -> StatusWatcher:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def wait_for(self, pred, timeout: float = 60.0) -> ProducerStatus:
        async with asyncio.timeout(timeout):
            while True:
                for st in self.seen:
                    if pred(st):
                        return st
                batch = await self.consumer.getmany(timeout_ms=300)
                for recs in batch.values():
                    self.seen.extend(read_status(r.value) for r in recs)  # as readers do


async def test_round_trip_events_match_the_contract(kafka_bootstrap: str) -> None:
    s = _settings(kafka_bootstrap, sim_autostart=True, fleet_size=4, sim_rate_hz=20.0)
    assert await run_daemon(s, steps=25) == 0
    records = await _read_all(kafka_bootstrap, s.kafka_topic, expect=100)
    assert len(records) == 100
    for rec in records:
        doc = orjson.loads(rec.value)
        assert set(doc) == set(EVENT_FIELDS)
        assert read_event(rec.value).vehicle_id == rec.key.decode()
    seqs = _check_sequences(records)
    assert sorted(seqs) == ["TESTCAR01", "TESTCAR02", "TESTCAR03", "TESTCAR04"]
    assert all(len(v) == 25 for v in seqs.values())


async def test_the_lifecycle_closes_every_resource_it_opened(kafka_bootstrap: str) -> None:
    s = _settings(kafka_bootstrap, sim_autostart=True, fleet_size=2, sim_rate_hz=20.0)
    daemon = build_daemon(s, steps=5)
    before = {t.get_name() for t in asyncio.all_tasks()}
    assert await daemon.run() == 0
    assert daemon.publisher._producer is None  # stopped
    assert (daemon.channel._consumer, daemon.channel._producer) == (None, None)
    assert {t.get_name() for t in asyncio.all_tasks()} == before  # no loop left running
    loop = asyncio.get_running_loop()
    assert not loop.remove_signal_handler(signal.SIGTERM)  # the handlers are gone too
    assert not loop.remove_signal_handler(signal.SIGINT)
    assert daemon.publisher.stats.sent == 10 and not daemon.running


async def test_a_stop_while_kafka_is_away_exits_0_at_once() -> None:
    s = _settings(f"127.0.0.1:{free_port()}")
    stop = asyncio.Event()
    daemon = asyncio.create_task(run_daemon(s, stop_event=stop))
    await asyncio.sleep(1.5)
    assert not daemon.done()  # retrying with back-off
    stop.set()
    assert await asyncio.wait_for(daemon, 10) == 0


async def test_control_commands_end_to_end(kafka_bootstrap: str) -> None:
    s = _settings(kafka_bootstrap, fleet_size=2, sim_rate_hz=5.0)
    stop = asyncio.Event()
    daemon = asyncio.create_task(run_daemon(s, stop_event=stop))
    ctl = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await ctl.start()
    try:
        async with StatusWatcher(kafka_bootstrap, s.kafka_status_topic) as watch:
            first = await watch.wait_for(lambda st: st.reply_to is None)
            assert first.running is False and first.producer_id == s.producer_id
            assert set(first.model_dump()) >= {"running", "rate_hz", "vehicles", "events_sent",
                                               "send_errors", "lag_s", "behind_schedule",
                                               "last_event"}

            async def command(**body: object) -> ProducerStatus:
                cid = uuid.uuid4().hex
                await ctl.send_and_wait(s.kafka_control_topic, key=cid.encode(),
                                        value=orjson.dumps({"command_id": cid, **body}))
                return await watch.wait_for(lambda st: st.reply_to == cid)

            r = await command(command="stop")
            assert (r.ok, r.error) == (False, "not_running")
            r = await command(command="start", rate_hz=10)
            assert r.ok and r.running and r.rate_hz == 10.0 and r.error is None
            r = await command(command="start")
            assert (r.ok, r.error, r.running) == (False, "already_running", True)
            r = await command(command="configure", fleet_size=4)
            assert r.ok and r.vehicles == 4
            r = await command(command="configure")
            assert (r.ok, r.error) == (False, "invalid")
            r = await command(command="fly")
            assert (r.ok, r.error) == (False, "invalid")
            r = await command(command="configure", rate_hz=99)
            assert (r.ok, r.error) == (False, "invalid")
            await ctl.send_and_wait(s.kafka_control_topic, value=b"not json at all")
            await watch.wait_for(lambda st: st.running and st.events_sent >= 40
                                 and st.last_event is not None
                                 and st.last_event.vehicle_id == "TESTCAR04")
            r = await command(command="status")
            assert r.ok and r.running and r.vehicles == 4 and r.send_errors == 0
            assert r.last_event is not None
            r = await command(command="stop")
            assert r.ok and r.running is False
            r = await command(command="status")
            assert r.running is False
            # stopped: still answering and still publishing its status every interval
            n = len([st for st in watch.seen if st.reply_to is None])
            await watch.wait_for(
                lambda st: len([x for x in watch.seen if x.reply_to is None]) >= n + 2)
    finally:
        await ctl.stop()
        stop.set()  # as SIGTERM does: finish the tick, flush, return 0
        assert await asyncio.wait_for(daemon, 60) == 0
    records = await _read_all(kafka_bootstrap, s.kafka_topic)
    seqs = _check_sequences(records)
    assert set(seqs) == {"TESTCAR01", "TESTCAR02", "TESTCAR03", "TESTCAR04"}


async def test_sigterm_flushes_everything_acknowledged(kafka_bootstrap: str) -> None:
    s = _settings(kafka_bootstrap, sim_autostart=True, fleet_size=5, sim_rate_hz=20.0)
    env = {**os.environ, **{k.upper(): str(v) for k, v in s.model_dump().items()
                            if v is not None}}
    proc = subprocess.Popen([sys.executable, "-m", "producer"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        async with StatusWatcher(kafka_bootstrap, s.kafka_status_topic) as watch:
            await watch.wait_for(lambda st: st.events_sent >= 200)
            proc.send_signal(signal.SIGTERM)
            rc = await asyncio.to_thread(proc.wait, 60)
            final = await watch.wait_for(lambda st: st.message == "shutting down")
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate()
    assert rc == 0, err.decode()[-2000:]
    records = await _read_all(kafka_bootstrap, s.kafka_topic, expect=final.events_sent)
    assert len(records) == final.events_sent
    _check_sequences(records)


async def test_broker_killed_and_restarted_loses_and_duplicates_nothing(private_kafka) -> None:
    bootstrap = private_kafka.bootstrap
    s = _settings(bootstrap, sim_autostart=True, fleet_size=5, sim_rate_hz=20.0)
    stop = asyncio.Event()
    daemon = asyncio.create_task(run_daemon(s, stop_event=stop))
    async with StatusWatcher(bootstrap, s.kafka_status_topic) as watch:
        pre = (await watch.wait_for(lambda st: st.events_sent >= 200)).events_sent
    await asyncio.to_thread(private_kafka.kill)
    await asyncio.sleep(3)
    assert not daemon.done()
    await asyncio.to_thread(private_kafka.start)
    await asyncio.to_thread(private_kafka.wait_ready)
    async with StatusWatcher(bootstrap, s.kafka_status_topic) as watch:
        await watch.wait_for(lambda st: st.events_sent >= pre + 400, timeout=120)
    stop.set()
    assert await asyncio.wait_for(daemon, 90) == 0
    records = await _read_all(bootstrap, s.kafka_topic)
    seqs = _check_sequences(records)
    assert len(seqs) == 5
    # the simulation kept going after the restart (the outage held it, did not end it)
    assert min(len(v) for v in seqs.values()) >= 100


async def test_daemon_waits_for_a_broker_that_is_not_up_yet(private_kafka) -> None:
    """As under `make run`, where honcho starts Kafka and the producer together."""
    await asyncio.to_thread(private_kafka.kill)
    s = _settings(private_kafka.bootstrap, sim_autostart=True, fleet_size=2, sim_rate_hz=20.0)
    stop = asyncio.Event()
    daemon = asyncio.create_task(run_daemon(s, stop_event=stop))
    await asyncio.sleep(2)
    assert not daemon.done()  # retrying with back-off, not crashed
    await asyncio.to_thread(private_kafka.start)
    await asyncio.to_thread(private_kafka.wait_ready)
    async with StatusWatcher(private_kafka.bootstrap, s.kafka_status_topic) as watch:
        await watch.wait_for(lambda st: st.events_sent >= 40, timeout=120)
    stop.set()
    assert await asyncio.wait_for(daemon, 60) == 0
    _check_sequences(await _read_all(private_kafka.bootstrap, s.kafka_topic))


TOKEN = "group-token"  # noqa: S105


async def _write(bootstrap: str, topic: str, values: list[bytes]) -> None:
    sender = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await sender.start()
    try:
        await asyncio.gather(*[await sender.send(topic, value=v) for v in values])
    finally:
        await sender.stop()


def _peer(token: str | None, **over: object) -> bytes:
    doc: dict[str, object] = dict(
        producer_id="peer", updated_at=datetime.now(UTC).isoformat(), running=True,
        rate_hz=2.0, vehicles=2, fleet_size=7, group="g1", shards=[0])
    doc.update(over)
    st = ProducerStatus.model_validate(doc)
    return (st if token is None else sign_status(st, token)).model_dump_json().encode()


async def test_a_joining_instance_adopts_only_a_signed_present_status(
        kafka_bootstrap: str) -> None:
    """The audit's attack: a forged status on the status topic (unsigned, or stamped in year
    9999, or past MAX_FLEET_SIZE) made a joining instance run 120,000 cars."""
    s = _settings(kafka_bootstrap, producer_group="g1", api_token=TOKEN, sim_rate_hz=1.0)
    topic = s.kafka_status_topic
    far = "9999-12-31T23:59:59+00:00"
    daemon = build_daemon(s)
    await daemon.channel.start()

    async def adopted(token: str | None = TOKEN) -> tuple[bool, float, int]:
        daemon.settings = s.model_copy(update={"api_token": token})
        daemon.running, daemon.rate_hz, daemon.fleet_size = False, 1.0, 3  # as configured
        await daemon._adopt_group_state()
        return daemon.running, daemon.rate_hz, daemon.fleet_size

    try:
        await _write(kafka_bootstrap, topic, [
            b'{"producer_id":"evil","updated_at":"' + far.encode() + b'","running":true,'
            b'"rate_hz":0.05,"vehicles":1,"fleet_size":120000,"group":"g1"}',
            _peer(None, producer_id="unsigned"),
            _peer("a guess", producer_id="wrong-token"),
            _peer(TOKEN, producer_id="future", updated_at=far),
            _peer(TOKEN, producer_id="old",
                  updated_at=(datetime.now(UTC) - timedelta(minutes=5)).isoformat()),
            _peer(TOKEN, producer_id="elsewhere", group="g2"),
        ])
        assert await adopted() == (False, 1.0, 3)  # none taken
        await _write(kafka_bootstrap, topic, [_peer(TOKEN, fleet_size=7, rate_hz=2.0)])
        assert await adopted() == (True, 2.0, 7)  # the group's real state
        # a flood written after it does not hide it (the tail of 256 records did)
        await _write(kafka_bootstrap, topic, [b"junk"] * 400 + [
            _peer(None, producer_id=f"unsigned{i}", fleet_size=9) for i in range(400)])
        assert await adopted() == (True, 2.0, 7)
        # without the token statuses need no signature, but the contract's bounds hold
        await _write(kafka_bootstrap, topic, [
            _peer(None, fleet_size=6, rate_hz=3.0),
            b'{"producer_id":"evil","updated_at":"' + datetime.now(UTC).isoformat().encode()
            + b'","running":true,"rate_hz":0.05,"vehicles":1,"fleet_size":1000000000000,'
            b'"group":"g1"}'])
        assert await adopted(None) == (True, 3.0, 6)
    finally:
        await daemon.channel.stop()


async def test_with_the_token_statuses_are_signed_and_a_command_obeyed_before_a_restart_is_not_replayed(  # noqa: E501
        kafka_bootstrap: str) -> None:
    s = _settings(kafka_bootstrap, api_token=TOKEN)
    cmd = sign_command(ControlCommand(command_id="once", command="start"), TOKEN, time.time())
    raw = cmd.model_dump_json().encode()
    stop = asyncio.Event()
    daemon = asyncio.create_task(run_daemon(s, stop_event=stop))
    try:
        async with StatusWatcher(kafka_bootstrap, s.kafka_status_topic) as watch:
            first = await watch.wait_for(lambda st: True)
            assert status_signed(first, TOKEN)
            await _write(kafka_bootstrap, s.kafka_control_topic, [raw])
            r = await watch.wait_for(lambda st: st.reply_to == "once")
            assert r.ok and r.running and status_signed(r, TOKEN)
    finally:
        stop.set()
        assert await asyncio.wait_for(daemon, 60) == 0
    # a new process: the same signed record again, well within its 30 s
    restarted = build_daemon(s)
    await restarted.channel.start()
    try:
        await restarted._seed_seen_commands()
    finally:
        await restarted.channel.stop()
    reply = restarted.handle(raw)
    assert reply is not None and reply.error == "unauthorized" and "replayed" in reply.message
    assert not restarted.running
