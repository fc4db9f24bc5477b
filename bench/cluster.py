"""The cost of replication: the 3-broker cluster next to the single broker, in the same run.

    .venv/bin/python -m bench.cluster [--reps 3] [--events 200000] [--rate 5000]

Both are started here, on free loopback ports, each broker with the same heap
(``-Xmx384m``): the single broker as ``make run`` has it (replication 1), the cluster as
``make cluster`` has it (3 combined KRaft nodes, replication 3, ``min.insync.replicas=2``).
For each, alternating, ``--reps`` times:

- **throughput**: ``python -m producer --unpaced --steps N`` (1,000 cars, acks=all,
  idempotent) as a process; events/s from the topic's end offsets between 10 % and 90 %
  of its events (bench.producer's ``daemon_process``);
- **end-to-end latency**: the producer paced at ``--rate`` events/s (1,000 cars); a consumer
  reads every event and takes its receipt time minus the event's ``timestamp``; p50 and p99
  over ``--seconds`` after a warm-up.

Prints medians, the cluster / single ratios, and each side's memory (RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import orjson

from bench.producer import PARTITIONS, daemon_process
from common.kafka import make_consumer
from tools.cluster import KafkaCluster, mib, rss_bytes
from tools.kafka import LocalKafka, create_topic, free_port

FLEET = 1000
HEAP = "384m"


def fresh_topic(bootstrap: str) -> str:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, name, PARTITIONS)
    return name


async def latency(bootstrap: str, topic: str, rate: float, seconds: float,
                  warmup: float) -> list[float]:
    """Milliseconds from each event's timestamp to its receipt by a consumer."""
    from aiokafka import TopicPartition

    tag = uuid.uuid4().hex[:8]
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPIC": topic,
           "KAFKA_CONTROL_TOPIC": f"bench-ctl-{tag}", "KAFKA_STATUS_TOPIC": f"bench-st-{tag}",
           "KAFKA_NETWORK_TOPIC": f"bench-net-{tag}", "FLEET_SIZE": str(FLEET),
           "SIM_RATE_HZ": str(rate / FLEET), "SIM_SEED": "1", "SIM_AUTOSTART": "true",
           # every car reports at the tick it is stamped with (with phase jitter, events are
           # stamped ahead within their tick and latencies come out negative)
           "SIM_TRIPS": "false", "SIM_PHASE_JITTER": "false"}
    consumer = make_consumer(bootstrap, client_id="bench-latency", group_id=None,
                             fetch_max_wait_ms=50)
    await consumer.start()
    proc = subprocess.Popen([sys.executable, "-m", "producer", "--log-level", "WARNING"],  # noqa: S603
                            env=env, stdout=subprocess.DEVNULL)
    out: list[float] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        start: float | None = None  # the first event: the producer is up
        deadline = time.monotonic() + 120
        while start is None or time.monotonic() - start < warmup + seconds:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.time()
            if start is None:
                if time.monotonic() > deadline:
                    break
                start = time.monotonic() if batch else None
            if start is None or time.monotonic() - start < warmup:
                continue
            for recs in batch.values():
                for rec in recs:
                    ts = datetime.fromisoformat(orjson.loads(rec.value)["timestamp"])
                    out.append((now - ts.timestamp()) * 1000)
    finally:
        proc.terminate()
        proc.wait(60)
        await consumer.stop()
    if not out:
        raise RuntimeError(f"no events reached the consumer at {bootstrap}")
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--events", type=int, default=200_000, help="events per throughput run")
    ap.add_argument("--rate", type=float, default=5000.0, help="events/s of the latency runs")
    ap.add_argument("--seconds", type=float, default=15.0, help="latency sampling time")
    ap.add_argument("--warmup", type=float, default=5.0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        single = LocalKafka(data_dir=Path(tmp) / "single", port=free_port(),
                            controller_port=free_port(), heap=HEAP)
        cluster = KafkaCluster.on_free_ports(Path(tmp) / "cluster", heap=HEAP)
        single.start()
        try:
            single.wait_ready()
            cluster.start()
            sides = {"single": single.bootstrap, "cluster": cluster.bootstrap}
            print(f"single broker: {sides['single']} (replication 1)")
            print(f"cluster:       {sides['cluster']} (replication 3, min.insync.replicas 2)")
            print("2-core machine shared with other work: numbers are noisy; medians of "
                  f"{args.reps}")
            thr: dict[str, list[float]] = {k: [] for k in sides}
            p50: dict[str, list[float]] = {k: [] for k in sides}
            p99: dict[str, list[float]] = {k: [] for k in sides}
            for rep in range(args.reps):
                for name, bootstrap in sides.items():
                    thr[name].append(asyncio.run(daemon_process(
                        bootstrap, fresh_topic(bootstrap), FLEET, args.events)))
                    lat = asyncio.run(latency(bootstrap, fresh_topic(bootstrap), args.rate,
                                              args.seconds, args.warmup))
                    p50[name].append(pct(lat, 50))
                    p99[name].append(pct(lat, 99))
                    print(f"  rep {rep + 1} {name:<7}: {thr[name][-1]:>9,.0f} events/s   "
                          f"latency p50 {p50[name][-1]:7.1f} ms  p99 {p99[name][-1]:7.1f} ms",
                          flush=True)
            med = {k: (statistics.median(thr[k]), statistics.median(p50[k]),
                       statistics.median(p99[k])) for k in sides}
            print(f"\n{'':<10}{'events/s':>12}{'p50 ms':>10}{'p99 ms':>10}")
            for k, (t, a, b) in med.items():
                print(f"{k:<10}{t:>12,.0f}{a:>10.1f}{b:>10.1f}")
            (ts, a1, b1), (tc, a3, b3) = med["single"], med["cluster"]
            print(f"cluster / single: throughput x{tc / ts:.2f}, latency p50 x{a3 / a1:.2f}, "
                  f"p99 x{b3 / b1:.2f}  (the cost of replication factor 3, acks=all)")
            single_rss = rss_bytes(single.proc.pid) if single.proc else 0
            cluster_rss = sum(rss_bytes(pid) for pid in cluster.pids().values())
            print(f"memory (RSS): single broker {mib(single_rss)}, 3-broker cluster "
                  f"{mib(cluster_rss)}  (each -Xmx{HEAP})")
        finally:
            cluster.stop()
            single.stop()


if __name__ == "__main__":
    main()
