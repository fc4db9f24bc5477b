"""The daemon's logic with in-memory stand-ins for its two Kafka edges: commands, pacing,
lag reporting, changes applied between ticks. (The real broker: test_producer_kafka.py.)"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import datetime

import orjson
import pytest

from common.contract import ProducerStatus
from producer.builtin import warsaw
from producer.daemon import Daemon
from producer.publisher import PublisherStats
from producer.settings import Settings
from producer.sim import Simulation


class FakePublisher:
    def __init__(self, delay_s: float = 0.0) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.stats = PublisherStats()
        self.delay_s = delay_s
        self.flushes = 0

    async def publish(self, keys: list[bytes], values: list[bytes],
                      timestamp_ms: int | None = None) -> None:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.records.extend(zip(keys, values, strict=True))
        self.stats.sent += len(values)

    async def flush(self) -> None:
        self.flushes += 1


class FakeChannel:
    def __init__(self) -> None:
        self.published: list[ProducerStatus] = []

    async def publish(self, status: ProducerStatus) -> None:
        self.published.append(status)


def _daemon(rate: float = 10.0, fleet: int = 2, delay_s: float = 0.0, autostart: bool = True,
            steps: int | None = None) -> tuple[Daemon, FakePublisher]:
    s = Settings(sim_rate_hz=rate, fleet_size=fleet, sim_autostart=autostart, sim_seed=1)
    sim = Simulation(warsaw(), seed=1, fleet_size=fleet, rate_hz=rate,
                     first_vehicle_id="TESTCAR01", run_key="t")
    pub = FakePublisher(delay_s)
    d = Daemon(s, sim, pub, FakeChannel(), producer_id="p1", steps=steps)  # type: ignore[arg-type]
    return d, pub


def _cmd(**body: object) -> bytes:
    return orjson.dumps({"command_id": "c1", **body})


def test_commands_and_their_errors() -> None:
    d, _ = _daemon(autostart=False)
    r = d.handle(_cmd(command="stop"))
    assert r is not None and (r.ok, r.error, r.reply_to) == (False, "not_running", "c1")
    r = d.handle(_cmd(command="start", rate_hz=5, fleet_size=7))
    assert r is not None and r.ok and r.running and (r.rate_hz, r.vehicles) == (5.0, 7)
    r = d.handle(_cmd(command="start"))
    assert r is not None and (r.ok, r.error) == (False, "already_running")
    r = d.handle(_cmd(command="configure", rate_hz=50))
    assert r is not None and r.ok and r.rate_hz == 50.0
    for bad in (_cmd(command="configure"), _cmd(command="configure", rate_hz=0),
                _cmd(command="configure", fleet_size=0), _cmd(command="jump"),
                _cmd(command="start", extra=1)):
        r = d.handle(bad)
        assert r is not None and (r.ok, r.error) == (False, "invalid") and r.message
    assert d.handle(b"{not json") is None
    assert d.handle(b'{"command": "start"}') is None  # no id to answer to
    assert d.malformed_commands == 6  # the empty configure is well-formed
    r = d.handle(_cmd(command="status"))
    assert r is not None and r.ok and r.running and r.producer_id == "p1"
    r = d.handle(_cmd(command="stop"))
    assert r is not None and r.ok and not r.running


async def test_ticks_follow_the_schedule_and_changes_wait_for_a_tick_boundary() -> None:
    d, pub = _daemon(rate=20.0, fleet=2, steps=30)
    task = asyncio.create_task(d.sim_loop())
    while d.ticks < 10:
        await asyncio.sleep(0.01)
    d.handle(_cmd(command="configure", fleet_size=4))
    await asyncio.wait_for(task, 30)
    stamps: dict[str, list[datetime]] = defaultdict(list)
    seqs: dict[str, list[int]] = defaultdict(list)
    for key, value in pub.records:
        doc = orjson.loads(value)
        assert doc["vehicle_id"] == key.decode()
        seqs[doc["vehicle_id"]].append(doc["seq"])
        stamps[doc["vehicle_id"]].append(datetime.fromisoformat(doc["timestamp"]))
    assert sorted(seqs) == ["TESTCAR01", "TESTCAR02", "TESTCAR03", "TESTCAR04"]
    assert all(s == list(range(len(s))) for s in seqs.values())
    assert len(seqs["TESTCAR01"]) == 30 and 0 < len(seqs["TESTCAR04"]) < 30
    gaps = {(b - a).total_seconds() for a, b in zip(stamps["TESTCAR01"],
                                                    stamps["TESTCAR01"][1:], strict=False)}
    assert gaps == {0.05}  # the simulated clock: exactly 1/rate apart


async def test_a_slow_edge_is_reported_as_lag() -> None:
    """Each publish takes 0.3 s at 50 Hz (a tick due every 0.02 s): while the daemon runs,
    its status says it is behind by at least the sleeps so far."""
    d, _ = _daemon(rate=50.0, fleet=1, delay_s=0.3, steps=12)
    before = d.status()
    task = asyncio.create_task(d.sim_loop())
    async with asyncio.timeout(30):
        while d.ticks < 8:
            await asyncio.sleep(0.01)
    during = d.status()
    await asyncio.wait_for(task, 30)
    assert before.running and not before.behind_schedule and before.lag_s == 0
    assert during.running and during.behind_schedule and during.lag_s > 1.0


async def test_stop_flushes_and_waits_for_start() -> None:
    d, pub = _daemon(rate=50.0, fleet=1)
    task = asyncio.create_task(d.sim_loop())
    while d.ticks < 5:
        await asyncio.sleep(0.01)
    d.handle(_cmd(command="stop"))
    await asyncio.sleep(0.1)
    ticks = d.ticks
    assert pub.flushes >= 1 and not task.done()
    await asyncio.sleep(0.2)
    assert d.ticks == ticks  # holds while stopped
    d.handle(_cmd(command="start"))
    while d.ticks < ticks + 3:
        await asyncio.sleep(0.01)
    d.stop_event.set()
    d.wake.set()
    await asyncio.wait_for(task, 10)
    seqs = [orjson.loads(v)["seq"] for _, v in pub.records]
    assert seqs == list(range(len(seqs)))


@pytest.mark.parametrize(("env", "value", "name"), [
    ("FLEET_SIZE", "0", "FLEET_SIZE"), ("SIM_RATE_HZ", "51", "SIM_RATE_HZ"),
    ("REDLINE_RPM", "100", "REDLINE_RPM"), ("KAFKA_PARTITIONS", "0", "KAFKA_PARTITIONS"),
    ("SPEED_TOLERANCE_KMH", "-1", "SPEED_TOLERANCE_KMH"),
])
def test_settings_reject_bad_values_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, env: str, value: str, name: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ValueError, match=name):
        Settings()


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {"FLEET_SIZE": "12", "SIM_RATE_HZ": "2.5", "SIM_AUTOSTART": "true",
                 "SIM_SPORT_MODE": "1", "VEHICLE_ID": "VAN01", "KAFKA_PARTITIONS": "3"}.items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert (s.fleet_size, s.sim_rate_hz, s.sim_autostart, s.sim_sport_mode, s.vehicle_id,
            s.kafka_partitions) == (12, 2.5, True, True, "VAN01", 3)
    assert s.speed_tolerance_kmh == 5.0 and s.redline_rpm == 6200
    assert s.kafka_topic == "vehicle.telemetry.raw"
