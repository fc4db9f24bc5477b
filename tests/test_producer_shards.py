"""One fleet across several ``python -m producer`` processes (PRODUCER_GROUP), real broker.

Two instances share a fleet of 40 cars at 5 Hz: the group splits the shards between them;
SIGKILL one and its cars continue on the other after the session timeout; a third joins
and leaves with SIGTERM; start, stop and configure act on the fleet as a whole. Over the
whole topic every car's ``seq`` runs 0, 1, 2, ... without gap or duplicate (so no car was
ever published by two instances at once), and a car keeps its trip id and its odometer
across the hand-overs (it was continued, not re-created).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from common.contract import ControlCommand, ProducerStatus
from producer.events import vehicle_id
from producer.fleet import LastSeen, restore_fleet, snap
from producer.roads import RoadNetwork
from producer.shards import shard_of
from tests.support.processes import stop_process
from tests.test_producer_kafka import StatusWatcher, _read_all

ROOT = Path(__file__).resolve().parent.parent
SESSION_S = 6.0  # the broker's smallest session timeout (group.min.session.timeout.ms)
FLEET, RATE, SHARDS = 40, 5.0, 6


# ---- pure parts ------------------------------------------------------------------------------

def test_shard_of_is_kafka_s_default_partitioner() -> None:
    """murmur2 of the key, positive, modulo the partition count: the Java client's
    ``Utils.toPositive(Utils.murmur2(key)) % numPartitions`` (hashes from Kafka's UtilsTest)."""
    for key, java in ((b"21", -973932308), (b"foobar", -790332482), (b"abc", 479470107)):
        for n in (1, 6, 7):
            assert shard_of(key, n) == (java & 0x7FFFFFFF) % n
    keys = [vehicle_id("TESTCAR01", i).encode() for i in range(1000)]
    counts = np.bincount([shard_of(k, SHARDS) for k in keys], minlength=SHARDS)
    assert counts.sum() == 1000 and counts.min() > 100  # every shard gets a share


def test_a_car_is_snapped_back_onto_the_edge_it_was_reported_on() -> None:
    from producer.builtin import warsaw
    from producer.events import Encoder
    from producer.fleet import init_fleet

    net: RoadNetwork = warsaw()
    rng = np.random.default_rng(3)
    st = init_fleet(200, rng, net)
    enc = Encoder(net, first_vehicle_id="C01", run_key="k", speed_tolerance_kmh=5,
                  redline_rpm=6200)
    docs = [orjson.loads(v) for v in enc.encode(st, datetime.fromisoformat(
        "2026-01-01T08:00:00+00:00"))]
    lat = np.array([d["location"]["lat"] for d in docs])
    lon = np.array([d["location"]["lon"] for d in docs])
    heading = np.array([d["heading_deg"] for d in docs])
    edge, pos = snap(net, lat, lon, heading)
    assert (edge == st.edge).mean() > 0.95  # else a segment lying on the same line
    ok = edge == st.edge
    assert np.abs(pos[ok] - st.pos[ok]).max() < 1.0  # 6 decimals of a degree: ~0.1 m
    seen = LastSeen(lat=lat, lon=lon, heading=heading,
                    speed_kmh=np.array([d["speed_kmh"] for d in docs]),
                    gear=np.array([d["gear"] for d in docs]),
                    rpm=np.array([d["engine_rpm"] for d in docs]),
                    fuel=np.array([d["fuel_level_pct"] for d in docs]),
                    odo=np.array([d["odometer_km"] for d in docs]),
                    fault=np.full(200, -1), vclass=st.vclass, parked=np.zeros(200, bool),
                    next_seq=np.arange(200) + 10, report_in=np.zeros(200))
    back = restore_fleet(seen, rng, net, t=5.0, clock0=st.clock0, trip=np.zeros(200, int))
    assert (back.seq == np.arange(200) + 10).all() and (back.vclass == st.vclass).all()
    assert np.allclose(back.v * 3.6, seen.speed_kmh) and np.allclose(back.odo, seen.odo)


LAX_ONLY = [  # values the contract refuses that a lax reading takes (pydantic lax, or orjson)
    {"timestamp": 1767254400}, {"timestamp": "1767254400"}, {"speed_kmh": "12.5"},
    {"ignition": "false"}, {"seq": "5"}, {"gear": 2.0}, {"speeding": 1},
]


def test_a_car_continues_only_from_an_event_the_contract_accepts() -> None:
    """A record under a car's key that pydantic's lax mode would take (a number for the
    timestamp, ``"false"`` for ignition) is passed over as every reader of the topic passes
    it over. Read laxly, a numeric timestamp failed the take-over with a TypeError, which
    the daemon retried for ever with its tick lock held: every car of the instance stopped.
    And ``"false"`` woke a parked car."""
    from producer.restore import last_seen, usable
    from tests.support.webapi import make_event

    good = make_event("CAR1", seq=7, speed_kmh=0.0, timestamp=datetime.now(UTC),
                      ignition=False, fault_codes=["P0300"])
    doc = orjson.loads(good.model_dump_json())
    assert usable(orjson.dumps(doc)) == good
    for change in LAX_ONLY:
        assert usable(orjson.dumps({**doc, **change})) is None, change
    seen = last_seen([good], datetime.now(UTC), heartbeat_s=60.0)
    assert seen.parked.tolist() == [True] and seen.next_seq.tolist() == [8]
    assert 55.0 < seen.report_in[0] <= 60.0


async def test_a_shard_kept_through_a_rebalance_is_not_read_back(monkeypatch) -> None:
    """Cars of a shard the instance drove in the generation just before stay as they are;
    after a gap in generations (it was dropped from the group meanwhile) they are read back;
    growing and shrinking the fleet adds and drops only this instance's shards' cars."""
    from producer import restore
    from producer.builtin import warsaw
    from producer.shards import ShardedFleet
    from producer.sim import Simulation

    reads: list[set[bytes]] = []

    async def read_back(target, topic, wanted, **kw):
        reads.append({k for keys in wanted.values() for k in keys})
        return {}  # nothing published yet: fresh cars

    monkeypatch.setattr(restore, "read_last_events", read_back)
    sim = Simulation(warsaw(), seed=1, fleet_size=1, rate_hz=5.0, first_vehicle_id="TESTCAR01",
                     run_key="r")
    fleet = ShardedFleet(sim, "unused:9092", "t", n_shards=3, fleet_size=30,
                         first_vehicle_id="TESTCAR01", heartbeat_s=60.0)
    assert sim.size == 0

    def shards_of_cars() -> set[int]:
        return {shard_of(k, 3) for k in sim.encoder.keys}

    async def scenario() -> None:
        await fleet.assign({0, 1, 2}, 1)
        assert sim.size == 30 and sorted(fleet.gids.tolist()) == list(range(30))
        assert sim.ids == [vehicle_id("TESTCAR01", int(g)) for g in fleet.gids]
        sim.encode(datetime.fromisoformat("2026-01-01T08:00:00+00:00"))
        sim.advance()
        seq = dict(zip(sim.ids, sim.state.seq.tolist(), strict=True))
        fleet.revoke({0, 1, 2})
        assert sim.size == 0 and fleet.shards == set()
        reads.clear()
        await fleet.assign({0, 2}, 2)  # the next generation: kept as they were
        assert reads == [] and shards_of_cars() == {0, 2}
        assert all(seq[v] == q == 1 for v, q in zip(sim.ids, sim.state.seq.tolist(),
                                                      strict=True))
        fleet.revoke({0, 2})
        await fleet.assign({0, 2}, 5)  # dropped meanwhile: someone else may have driven them
        assert reads and reads[-1] == set(sim.encoder.keys) and shards_of_cars() == {0, 2}
        n = sim.size
        await fleet.resize(60)
        assert shards_of_cars() == {0, 2} and sim.size > n
        assert all(int(g) < 60 for g in fleet.gids)
        await fleet.resize(10)
        assert sorted(fleet.gids.tolist()) == [g for g in range(10)
                                               if shard_of(vehicle_id("TESTCAR01", g).encode(),
                                                           3) in {0, 2}]

    await scenario()


@pytest.mark.kafka
async def test_read_back_goes_as_far_back_as_a_car_s_last_event(kafka_bootstrap: str,
                                                                  topic: str) -> None:
    """A car last heard from long ago is found behind thousands of newer records (chunks
    that double); a malformed record under a car's key is passed over; a car never
    published is missing from the answer, after the whole partition was read. So is an event
    stamped in the future (year 9999): continued from, a parked car would keep silent; and
    so are values the contract refuses but pydantic's lax mode would take."""
    from producer.restore import read_last_events
    from tests.support.webapi import make_event

    def event(vid: str, seq: int) -> bytes:
        return make_event(vid, seq=seq).model_dump_json().encode()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i in range(3):
            await producer.send(topic, event("OLD", i), key=b"OLD", partition=0)
        future = make_event("OLD", seq=3, timestamp=datetime(9999, 12, 31, tzinfo=UTC))
        await producer.send(topic, future.model_dump_json().encode(), key=b"OLD", partition=0)
        for change in LAX_ONLY:  # values of other types, after it
            await producer.send(topic, orjson.dumps({**orjson.loads(event("OLD", 4)), **change}),
                                key=b"OLD", partition=0)
        for i in range(5000):
            await producer.send(topic, event("BUSY", i), key=b"BUSY", partition=0)
        await producer.send(topic, b'{"seq": 1e99}', key=b"BUSY", partition=0)  # poison
        await producer.send(topic, event("OLD", 9), key=b"OLD", partition=1)  # not its shard
        await producer.flush()
    finally:
        await producer.stop()
    found = await read_last_events(kafka_bootstrap, topic, {0: {b"OLD", b"BUSY", b"NEW"}},
                                   first_chunk=100)
    assert set(found) == {b"OLD", b"BUSY"}
    assert found[b"OLD"].seq == 2 and found[b"BUSY"].seq == 4999


# ---- processes -------------------------------------------------------------------------------

class Fleet:
    """Topics and settings of one sharded fleet, and its producer processes."""

    def __init__(self, bootstrap: str, tmp: Path) -> None:
        tag = uuid.uuid4().hex[:10]
        self.bootstrap, self.tmp = bootstrap, tmp
        self.topic, self.control, self.status = (f"telemetry-{tag}", f"control-{tag}",
                                                 f"status-{tag}")
        self.env = {
            **os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPIC": self.topic,
            "KAFKA_CONTROL_TOPIC": self.control, "KAFKA_STATUS_TOPIC": self.status,
            "KAFKA_NETWORK_TOPIC": f"network-{tag}", "KAFKA_SHARDS_TOPIC": f"shards-{tag}",
            "PRODUCER_GROUP": f"producers-{tag}", "PRODUCER_SESSION_TIMEOUT_S": str(SESSION_S),
            "KAFKA_PARTITIONS": str(SHARDS), "FLEET_SIZE": str(FLEET),
            "SIM_RATE_HZ": str(RATE), "SIM_AUTOSTART": "true", "SIM_TRIPS": "false",
            "STATUS_INTERVAL_S": "0.5"}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        with open(self.tmp / f"{name}.log", "wb") as log:  # the child keeps its own copy
            proc = subprocess.Popen([sys.executable, "-m", "producer"], cwd=ROOT,
                                    env={**self.env, "PRODUCER_ID": name}, stdout=log,
                                    stderr=log)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()[-3000:]

    def stop_all(self) -> None:
        for proc in self.procs.values():
            stop_process(proc)


def latest(watch: StatusWatcher, names: set[str]) -> dict[str, ProducerStatus]:
    out: dict[str, ProducerStatus] = {}
    for st in watch.seen:
        if st.producer_id in names and st.reply_to is None:
            out[st.producer_id] = st
    return out


async def wait_split(watch: StatusWatcher, names: set[str], fleet: int,
                     timeout: float = 90.0) -> dict[str, ProducerStatus]:
    """Until the latest statuses of ``names`` split all shards between them (disjoint, each
    instance some) and their cars add up to ``fleet``; returns those statuses."""
    found: dict[str, ProducerStatus] = {}

    def split(_: ProducerStatus) -> bool:
        nonlocal found
        found = latest(watch, names)
        if set(found) != names or not all(st.shards for st in found.values()):
            return False
        shards = [p for st in found.values() for p in st.shards or []]
        return (sorted(shards) == list(range(SHARDS))
                and sum(st.vehicles for st in found.values()) == fleet
                and all(st.vehicles > 0 for st in found.values()))

    await watch.wait_for(split, timeout=timeout)
    return found


async def command(fleet: Fleet, watch: StatusWatcher, names: set[str],
                  **body: object) -> dict[str, ProducerStatus]:
    """Send one command; every instance of ``names`` answers it."""
    cmd = ControlCommand(command_id=uuid.uuid4().hex, **body)  # type: ignore[arg-type]
    producer = AIOKafkaProducer(bootstrap_servers=fleet.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(fleet.control, cmd.model_dump_json().encode())
    finally:
        await producer.stop()
    replies: dict[str, ProducerStatus] = {}

    def all_replied(_: ProducerStatus) -> bool:
        replies.update({st.producer_id: st for st in watch.seen
                        if st.reply_to == cmd.command_id})
        return set(replies) >= names

    await watch.wait_for(all_replied, timeout=30)
    return replies


def check_continuity(records: list) -> dict[str, list[dict]]:
    """Per car: seq 0, 1, 2, ... (no gap, no duplicate), one trip id, odometer never back."""
    cars: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        doc = orjson.loads(rec.value)
        assert rec.key.decode() == doc["vehicle_id"]
        cars[doc["vehicle_id"]].append(doc)
    for vid, docs in cars.items():
        seqs = [d["seq"] for d in docs]
        assert seqs == list(range(len(seqs))), f"{vid}: seq not contiguous: {seqs}"
        assert len({d["trip_id"] for d in docs}) == 1, f"{vid}: trip id changed"
        odo = [d["odometer_km"] for d in docs]
        assert all(b >= a for a, b in zip(odo, odo[1:], strict=False)), f"{vid}: odometer"
    return cars


@pytest.mark.kafka
async def test_two_instances_share_one_fleet_and_hand_it_over(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    fleet = Fleet(kafka_bootstrap, tmp_path)
    try:
        fleet.start("a")
        async with StatusWatcher(kafka_bootstrap, fleet.status) as watch:
            await wait_split(watch, {"a"}, FLEET)
            fleet.start("b")
            split = await wait_split(watch, {"a", "b"}, FLEET)
            b_shards = set(split["b"].shards or [])
            await watch.wait_for(lambda st: st.producer_id == "b" and st.events_sent >= 200)
            # kill -9: b's shards go to a after the session timeout
            fleet.procs["b"].kill()
            fleet.procs["b"].wait()
            killed_at = datetime.now(UTC)
            await wait_split(watch, {"a"}, FLEET)
            # a third instance joins, then the fleet is configured, stopped, started as one
            fleet.start("c")
            await wait_split(watch, {"a", "c"}, FLEET)
            replies = await command(fleet, watch, {"a", "c"}, command="configure",
                                    fleet_size=50, rate_hz=4.0)
            assert all(r.ok and r.fleet_size == 50 for r in replies.values())
            await wait_split(watch, {"a", "c"}, 50)
            replies = await command(fleet, watch, {"a", "c"}, command="stop")
            assert all(r.ok and not r.running for r in replies.values())
            replies = await command(fleet, watch, {"a", "c"}, command="start")
            assert all(r.ok and r.running for r in replies.values())
            sent = {n: st.events_sent for n, st in latest(watch, {"a", "c"}).items()}
            await watch.wait_for(lambda _: all(
                latest(watch, {"a", "c"})[n].events_sent > sent[n] + 40 for n in sent))
            # SIGTERM: c flushes and leaves; a takes its shards at once
            assert stop_process(fleet.procs["c"], timeout=60) == 0, fleet.log("c")
            await wait_split(watch, {"a"}, 50)
            a_sent = latest(watch, {"a"})["a"].events_sent
            await watch.wait_for(lambda st: st.producer_id == "a"
                                 and st.events_sent > a_sent + 100)
        assert stop_process(fleet.procs["a"], timeout=60) == 0, fleet.log("a")
    finally:
        fleet.stop_all()
    records = await _read_all(kafka_bootstrap, fleet.topic)
    cars = check_continuity(records)
    assert set(cars) == {vehicle_id("TESTCAR01", i) for i in range(50)}
    # b's cars went on after the kill, on a, once the session timeout was over: their longest
    # silence is the timeout plus the rebalance (a learns of it at its next heartbeat, a
    # third of the timeout) and the read-back; measured here: 6.8 s for a 6 s timeout.
    # (Timestamps are the producers', not this test's clock.)
    b_cars = [v for v in (vehicle_id("TESTCAR01", i) for i in range(FLEET))
              if shard_of(v.encode(), SHARDS) in b_shards]
    assert b_cars
    for vid in b_cars:
        stamps = [datetime.fromisoformat(d["timestamp"]) for d in cars[vid]]
        # the first event after the kill (b stamped its last tick's events up to 1/RATE ahead)
        first = next(i for i, t in enumerate(stamps) if t > killed_at + timedelta(seconds=0.5))
        silence = (stamps[first] - stamps[first - 1]).total_seconds()
        assert SESSION_S / 2 < silence < SESSION_S + 8, (vid, silence)


@pytest.mark.kafka
async def test_the_web_api_sees_one_fleet_and_a_joining_instance_follows_it(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    """/status sums the instances and lists them; /start-sim and /stop-sim act on both; an
    instance that joins a running fleet runs too (it takes the group's state from the status
    topic), at the fleet's rate and size."""
    from tests.support.webapi import running_app, wait_for
    from webapi.settings import Settings as ApiSettings

    fleet = Fleet(kafka_bootstrap, tmp_path)
    fleet.env["SIM_AUTOSTART"] = "false"
    api = ApiSettings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=fleet.topic,
                      kafka_control_topic=fleet.control, kafka_status_topic=fleet.status,
                      kafka_network_topic=fleet.env["KAFKA_NETWORK_TOPIC"], cors_origins=(),
                      analytics_output_dir=tmp_path, map_tile_url="", control_timeout_s=10.0,
                      status_stale_s=5.0)
    try:
        fleet.start("a")
        async with running_app(api) as client:
            async def status(pred):
                resp = await client.get("/status")
                body = await resp.json() if resp.status == 200 else None
                return body if body is not None and pred(body) else None

            await wait_for(lambda: status(lambda b: [i["producer_id"] for i in b["instances"]]
                                          == ["a"] and b["vehicles"] == FLEET), timeout=60)
            resp = await client.post("/start-sim?rate_hz=2&fleet_size=30")
            assert resp.status == 200, await resp.text()
            fleet.start("b")  # not told to start: it follows the fleet

            def split(body: dict) -> bool:
                inst = body["instances"]
                shards = sorted(p for i in inst for p in i["shards"] or [])
                return ([i["producer_id"] for i in inst] == ["a", "b"]
                        and shards == list(range(SHARDS)) and body["vehicles"] == 30
                        and all(i["running"] and i["rate_hz"] == 2.0 and i["vehicles"] > 0
                                and i["fleet_size"] == 30 for i in inst))

            body = await wait_for(lambda: status(split), timeout=90)
            assert body["running"] is True and body["rate_hz"] == 2.0
            assert body["vehicles"] == sum(i["vehicles"] for i in body["instances"])
            assert body["events_sent"] == sum(i["events_sent"] for i in body["instances"])
            assert set(body["instances"][0]) == {
                "producer_id", "running", "rate_hz", "vehicles", "fleet_size", "shards",
                "group", "events_sent", "send_errors", "lag_s", "updated_at"}
            resp = await client.post("/stop-sim")
            assert resp.status == 200
            await wait_for(lambda: status(lambda b: len(b["instances"]) == 2 and not any(
                i["running"] for i in b["instances"]) and b["running"] is False), timeout=30)
        for name in ("b", "a"):
            assert stop_process(fleet.procs[name], timeout=60) == 0, fleet.log(name)
    finally:
        fleet.stop_all()
    cars = check_continuity(await _read_all(kafka_bootstrap, fleet.topic))
    assert set(cars) == {vehicle_id("TESTCAR01", i) for i in range(30)}
