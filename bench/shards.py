"""Scale-out benchmark: one fleet over 1, 2 and 4 ``python -m producer`` processes.

    python -m bench.shards [--instances 1,2,4] [--fleet 10000] [--window 10] [--reps 3]

Each run starts N instances in one producer group (PRODUCER_GROUP) on a fresh telemetry
topic, unpaced (ticks back to back, as fast as each can), waits until the group has split
the shards between all N (their statuses on the status topic cover every shard and add up
to the fleet), lets them warm up, then counts the events written over a fixed window by the
topic's end offsets (from outside the processes). One producer without a group (``solo``,
as ``python -m producer`` runs by default) is measured alike, in the same rounds. Prints each
run, then the medians and the ratios to one instance and to the solo producer, with the
machine's core count: N instances can only go faster while there are free cores for them
(and for the broker, on a one-machine setup).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.broker import bench_broker
from common.contract import ProducerStatus
from tools.kafka import create_topic

SHARDS = 12  # divisible by 1, 2, 3, 4 and 6: an even split for every instance count here


async def _settled(bootstrap: str, status_topic: str, n: int, fleet: int,
                   timeout_s: float = 120.0) -> None:
    """Until the latest statuses of ``n`` instances split every shard and the fleet."""
    consumer = AIOKafkaConsumer(status_topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest")
    await consumer.start()
    latest: dict[str, ProducerStatus] = {}
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for recs in batch.values():
                    for r in recs:
                        st = ProducerStatus.model_validate_json(r.value)
                        if st.reply_to is None:
                            latest[st.producer_id] = st
                if n == 0:  # solo: no group, no shards
                    if any(st.running and st.vehicles == fleet for st in latest.values()):
                        return
                    continue
                live = [st for st in latest.values() if st.shards and st.running]
                shards = sorted(p for st in live for p in st.shards or [])
                if (len(live) == n and shards == list(range(SHARDS))
                        and sum(st.vehicles for st in live) == fleet):
                    return
    finally:
        await consumer.stop()


async def _written(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(SHARDS)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


def run_once(bootstrap: str, n: int, fleet: int, warmup_s: float, window_s: float,
             logs: Path) -> float:
    """Events/s of ``n`` instances sharing a fleet of ``fleet`` cars (0: one producer
    without a group)."""
    tag = uuid.uuid4().hex[:8]
    topic = f"bench-shards-{tag}"
    create_topic(bootstrap, topic, SHARDS)
    create_topic(bootstrap, f"bench-st-{tag}", 1)  # read below before a producer makes it
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPIC": topic,
           "KAFKA_CONTROL_TOPIC": f"bench-ctl-{tag}", "KAFKA_STATUS_TOPIC": f"bench-st-{tag}",
           "KAFKA_NETWORK_TOPIC": f"bench-net-{tag}", "KAFKA_SHARDS_TOPIC": f"bench-sh-{tag}",
           "PRODUCER_GROUP": f"bench-{tag}", "FLEET_SIZE": str(fleet), "SIM_SEED": "1",
           "SIM_AUTOSTART": "true", "SIM_TRIPS": "false",  # every car reports every tick
           "PRODUCER_SESSION_TIMEOUT_S": "10"}
    procs = []
    try:
        if n == 0:
            del env["PRODUCER_GROUP"]
        for i in range(max(n, 1)):
            with open(logs / f"{tag}-{i}.log", "wb") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "producer", "--unpaced", "--log-level", "WARNING"],
                    env={**env, "PRODUCER_ID": f"bench-{i}"}, stdout=log, stderr=log))
        asyncio.run(_settled(bootstrap, f"bench-st-{tag}", n, fleet))
        time.sleep(warmup_s)
        n0, t0 = asyncio.run(_written(bootstrap, topic)), time.perf_counter()
        time.sleep(window_s)
        n1, t1 = asyncio.run(_written(bootstrap, topic)), time.perf_counter()
        return (n1 - n0) / (t1 - t0)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", default="1,2,4")
    ap.add_argument("--fleet", type=int, default=10_000)
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds after the split")
    ap.add_argument("--window", type=float, default=10.0, help="seconds measured")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    counts = [int(x) for x in args.instances.split(",")]
    cores = os.cpu_count()
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp, \
            bench_broker(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"), Path(tmp)) as bootstrap:
        print(f"broker {bootstrap}; {cores} cores on this machine (shared by the broker, the "
              f"instances and whatever else runs); fleet {args.fleet:,}, {SHARDS} shards, "
              f"unpaced, {args.window:g} s windows", flush=True)
        res: dict[int, list[float]] = {n: [] for n in [0, *counts]}
        for rep in range(args.reps):  # alternate the counts: drift hits them all alike
            for n in res:
                res[n].append(run_once(bootstrap, n, args.fleet, args.warmup, args.window,
                                       Path(tmp)))
                name = "solo (no group)" if n == 0 else f"{n} instance(s)"
                print(f"  run {rep + 1}: {name}: {res[n][-1]:,.0f} events/s", flush=True)
        med = {n: statistics.median(v) for n, v in res.items()}
        base = med[counts[0]]
        print()
        print(f"medians of {args.reps} runs, {cores} cores, events/s by the topic's end offsets")
        print(f"| instances | events/s | ratio to {counts[0]} | ratio to solo |")
        print("|---|---:|---:|---:|")
        for n in res:
            print(f"| {'solo, no group' if n == 0 else n} | {med[n]:,.0f} | "
                  f"{med[n] / base:.2f} | {med[n] / med[0]:.2f} |")


if __name__ == "__main__":
    main()
