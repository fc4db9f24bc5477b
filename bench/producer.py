"""Producer throughput: the daemon's publishing path vs baselines on the same broker.

    .venv/bin/python -m bench.producer [--reps 3] [--fleets 1,1000,10000]

For fleets of 1, 1,000 and 10,000 vehicles: the daemon as users run it, a
``python -m producer --unpaced`` process, measured from outside by the topic's end offsets
(events/s between 10 % and 90 % of its run, so start-up and the final flush are left out);
the daemon's own path in this process (Simulation + Publisher
driven by ``Daemon.sim_loop`` in unpaced "max" mode: simulation, JSON encoding and Kafka
included) is timed until every event is acknowledged, beside three baselines measured in
the same run, against the same broker, with the same record size, acks=all + idempotence:

- Kafka's ProducerPerformance (Java client, linger.ms=5, batch.size=256 KiB),
- a bare aiokafka ``send()`` loop of pre-serialised bytes (linger 5 ms, 256 KiB batches),
- a bare aiokafka ``create_batch()``/``send_batch()`` loop of the same bytes.

Also prints the cost of one simulation step and of encoding, per vehicle. Several runs,
medians. Uses KAFKA_BOOTSTRAP_SERVERS if set, else starts its own LocalKafka in a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2

from common.kafka import TopicSpec, ensure_topics
from producer.builtin import warsaw
from producer.control import ControlChannel
from producer.daemon import Daemon
from producer.fleet import init_fleet, step
from producer.publisher import Publisher
from producer.settings import Settings
from producer.sim import Simulation
from tools.kafka import TOOLS, LocalKafka, create_topic, free_port, run_class

PARTITIONS = 6
LINGER_MS = 5
BATCH_BYTES = 256 * 1024


def step_costs(fleets: list[int]) -> dict[int, tuple[float, float]]:
    """Microseconds per vehicle for one step and for encoding one tick (medians)."""
    out = {}
    net = warsaw()
    for n in fleets:
        sim = Simulation(net, seed=1, fleet_size=n, rate_hz=1.0, first_vehicle_id="TESTCAR01",
                         run_key="bench")
        reps = max(5, min(200, 200_000 // n))
        st, en = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            sim.state = step(sim.state, 1.0, sim.rng, net)
            t1 = time.perf_counter()
            sim.encode(datetime.now(UTC))
            en.append(time.perf_counter() - t1)
            st.append(t1 - t0)
        out[n] = (statistics.median(st) / n * 1e6, statistics.median(en) / n * 1e6)
    return out


def record_size() -> int:
    net = warsaw()
    s = init_fleet(100, np.random.default_rng(0), net)
    sim = Simulation(net, seed=0, fleet_size=100, rate_hz=1.0, first_vehicle_id="TESTCAR01",
                     run_key="bench")
    sim.state = s
    return int(np.mean([len(b) for b in sim.encode(datetime.now(UTC))]))


def java_perf(bootstrap: str, topic: str, n: int, size: int) -> float:
    proc = run_class(TOOLS["producer-perf-test"], [
        "--topic", topic, "--num-records", str(n), "--record-size", str(size),
        "--throughput", "-1", "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all",
        "enable.idempotence=true", f"linger.ms={LINGER_MS}", f"batch.size={BATCH_BYTES}",
    ], heap="512m", capture_output=True)
    m = None
    for line in proc.stdout.splitlines():  # the summary is the last "records sent" line
        m = re.search(r"(\d+) records sent, ([\d.]+) records/sec", line) or m
    if proc.returncode != 0 or m is None:
        raise RuntimeError(
            f"ProducerPerformance failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return float(m.group(2))


def _payloads(size: int, n_keys: int) -> tuple[list[bytes], bytes]:
    keys = [f"TESTCAR{i + 1:02d}".encode() for i in range(n_keys)]
    return keys, (b'{"x":"' + b"a" * (size - 8) + b'"}')


async def bare_send(bootstrap: str, topic: str, n: int, size: int, n_keys: int) -> float:
    keys, value = _payloads(size, n_keys)
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                         linger_ms=LINGER_MS, max_batch_size=BATCH_BYTES)
    await p.start()
    try:
        t0 = time.perf_counter()
        for i in range(n):
            await p.send(topic, value=value, key=keys[i % n_keys])
        await p.flush()
        return n / (time.perf_counter() - t0)
    finally:
        await p.stop()


async def bare_batch(bootstrap: str, topic: str, n: int, size: int, n_keys: int) -> float:
    keys, value = _payloads(size, n_keys)
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                         linger_ms=LINGER_MS, max_batch_size=BATCH_BYTES)
    await p.start()
    try:
        parts = sorted(await p.partitions_for(topic))
        by_part: dict[int, list[bytes]] = {}
        for k in keys:
            by_part.setdefault(parts[(murmur2(k) & 0x7FFFFFFF) % len(parts)], []).append(k)
        futs = []
        t0 = time.perf_counter()
        sent = 0
        while sent < n:  # fill whole batches, one partition after the other
            for part, pkeys in by_part.items():
                b = p.create_batch()
                i = 0
                while sent < n and b.append(key=pkeys[i % len(pkeys)], value=value,
                                            timestamp=None) is not None:
                    i += 1
                    sent += 1
                futs.append(await p.send_batch(b, topic, partition=part))
            if len(futs) > 64:
                await asyncio.gather(*futs[:-32])
                del futs[:-32]
        await asyncio.gather(*futs)
        return sent / (time.perf_counter() - t0)
    finally:
        await p.stop()


async def daemon_path(bootstrap: str, topic: str, fleet: int, events: int) -> float:
    tag = uuid.uuid4().hex[:8]
    s = Settings(kafka_bootstrap_servers=bootstrap, kafka_topic=topic,
                 kafka_control_topic=f"bench-ctl-{tag}", kafka_status_topic=f"bench-st-{tag}",
                 fleet_size=fleet, sim_rate_hz=1.0, sim_seed=1, sim_autostart=True,
                 producer_id=f"bench-{tag}")
    sim = Simulation(warsaw(), seed=1, fleet_size=fleet, rate_hz=1.0,
                     first_vehicle_id="TESTCAR01", run_key=tag)
    pub = Publisher(bootstrap, topic, linger_ms=s.kafka_linger_ms,
                    batch_bytes=s.kafka_batch_bytes, max_in_flight=s.kafka_max_in_flight_events)
    channel = ControlChannel(bootstrap, s.kafka_control_topic, s.kafka_status_topic)
    await ensure_topics(bootstrap, [TopicSpec(s.kafka_control_topic),
                                    TopicSpec(s.kafka_status_topic)])
    await pub.start()
    await channel.start()
    steps = max(1, events // fleet)
    daemon = Daemon(s, sim, pub, channel, producer_id=s.producer_id or "bench", unpaced=True,
                    steps=steps)
    try:
        t0 = time.perf_counter()
        await daemon.sim_loop()
        await pub.flush()
        el = time.perf_counter() - t0
        assert pub.stats.sent == steps * fleet and pub.stats.errors == 0
        return steps * fleet / el
    finally:
        await channel.stop()
        await pub.stop()


async def _end_offsets_total(consumer: AIOKafkaConsumer, partitions: list) -> int:
    return sum((await consumer.end_offsets(partitions)).values())


async def daemon_process(bootstrap: str, topic: str, fleet: int, events: int) -> float:
    """``python -m producer --unpaced --steps N`` as a process; its events/s from the topic's
    end offsets, polled every 50 ms, between 10 % and 90 % of the events it sends."""
    from aiokafka import TopicPartition

    tag = uuid.uuid4().hex[:8]
    steps = max(1, events // fleet)
    total = steps * fleet
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPIC": topic,
           "KAFKA_CONTROL_TOPIC": f"bench-ctl-{tag}", "KAFKA_STATUS_TOPIC": f"bench-st-{tag}",
           "KAFKA_NETWORK_TOPIC": f"bench-net-{tag}", "FLEET_SIZE": str(fleet),
           "SIM_SEED": "1", "SIM_AUTOSTART": "true",
           "SIM_TRIPS": "false"}  # every car drives: one event per car per step
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        proc = subprocess.Popen([sys.executable, "-m", "producer", "--unpaced", "--steps",
                                 str(steps), "--log-level", "WARNING"],
                                env=env, stdout=subprocess.DEVNULL)
        marks: dict[float, float] = {}
        while True:
            n = await _end_offsets_total(consumer, partitions)
            now = time.perf_counter()
            for frac in (0.1, 0.9):
                if frac not in marks and n >= frac * total:
                    marks[frac] = now
            if n >= total or proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        if proc.wait(60) != 0 or len(marks) < 2:
            raise RuntimeError(f"producer exited {proc.returncode} after {n} of {total} events")
        return 0.8 * total / (marks[0.9] - marks[0.1])
    finally:
        await consumer.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--fleets", default="1,1000,10000")
    ap.add_argument("--events", type=int, default=200_000, help="events per run (fleets >1)")
    args = ap.parse_args()
    fleets = [int(x) for x in args.fleets.split(",")]

    print("simulation cost per vehicle (median, no Kafka):")
    for n, (st, en) in step_costs(fleets).items():
        print(f"  fleet {n:>6}: step {st:8.3f} us/vehicle   encode {en:6.3f} us/vehicle")
    size = record_size()
    print(f"record size: {size} bytes (mean JSON event)")

    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None
    tmp = tempfile.TemporaryDirectory(prefix="bench-kafka-")
    if not bootstrap:
        broker = LocalKafka(data_dir=Path(tmp.name), port=free_port(),
                            controller_port=free_port(), heap="1g")
        broker.start()
        broker.wait_ready()
        bootstrap = broker.bootstrap
    print(f"broker: {bootstrap}  (2-core machine shared with other work: numbers are noisy)")
    try:
        rows = []
        for fleet in fleets:
            events = 10_000 if fleet == 1 else args.events
            res: dict[str, list[float]] = {"process": [], "daemon": [], "java": [], "send": [],
                                           "batch": []}
            load0 = os.getloadavg()[0]
            for _ in range(args.reps):
                def fresh() -> str:
                    t = f"bench-{uuid.uuid4().hex[:8]}"
                    create_topic(bootstrap, t, PARTITIONS)
                    return t
                res["process"].append(asyncio.run(
                    daemon_process(bootstrap, fresh(), fleet, events)))
                res["daemon"].append(asyncio.run(daemon_path(bootstrap, fresh(), fleet, events)))
                res["java"].append(java_perf(bootstrap, fresh(), args.events, size))
                res["send"].append(asyncio.run(
                    bare_send(bootstrap, fresh(), args.events, size, fleet)))
                res["batch"].append(asyncio.run(
                    bare_batch(bootstrap, fresh(), args.events, size, fleet)))
            med = {k: statistics.median(v) for k, v in res.items()}
            rows.append((fleet, med))
            print(f"  fleet {fleet}: " + ", ".join(
                f"{k} {[round(x) for x in v]}" for k, v in res.items())
                + f"; load average {load0:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
        print()
        print(f"medians of {args.reps} runs, events/s, acks=all, idempotent, {size} B records")
        print("| vehicles | `python -m producer` process, by topic offsets | Kafka "
              "ProducerPerformance | ratio | daemon path in-process | ratio "
              "| bare aiokafka send() | ratio | bare aiokafka send_batch() | ratio |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for fleet, m in rows:
            print(f"| {fleet:,} | {m['process']:,.0f} | {m['java']:,.0f} | "
                  f"{m['process'] / m['java']:.2f} | {m['daemon']:,.0f} | "
                  f"{m['daemon'] / m['java']:.2f} | {m['send']:,.0f} | "
                  f"{m['daemon'] / m['send']:.2f} | {m['batch']:,.0f} | "
                  f"{m['daemon'] / m['batch']:.2f} |")
    finally:
        if broker is not None:
            broker.stop()
        tmp.cleanup()


if __name__ == "__main__":
    main()
