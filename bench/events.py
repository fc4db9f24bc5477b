"""Benchmark: alert latency of the events job at a steady telemetry rate (local mode).

    python -m bench.events [--rate 5000] [--vehicles 1000] [--windows 4] [--window-s 20]
                           [--warmup-s 60] [--trigger-s 1] [--bootstrap HOST:PORT]

A publisher (aiokafka, orjson, paced every 10 ms) sends ``--rate`` events/s of ``--vehicles``
cars to a fresh telemetry topic; each car's engine goes over the redline for one event every
10 s, which the default ``over_redline`` rule turns into one alert (the other default rules
and three geofences do their usual work on every event, without firing). The job
(analytics.events_job, local[2] unless --master, a micro-batch every --trigger-s) runs all
along; a consumer of the events topic notes when each alert arrives.

Latency = the alert's arrival on ``fleetstream.events`` minus the publish of the telemetry
event that triggered it (matched by vehicle and ``source_seq``), both on this machine's clock.
After a warm-up, it reports per window: alerts seen, latency p50 / p99 / max, the events/s
actually published and the job's own micro-batch duration (p50 / max of
``durationMs.triggerExecution`` of the batches that ended in the window); then the median
over the windows and the ratio of p50 and p99 to the 5 s target. Starts its own broker on
free ports unless --bootstrap or KAFKA_BOOTSTRAP_SERVERS names one. The machine is shared and
has 2 cores: compare numbers of the same run only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from analytics.settings import EventsSettings
from bench.broker import bench_broker
from common.fleet_events import Geofence
from tools.kafka import create_topic

TARGET_S = 5.0
ALERT_EVERY_S = 10.0


def telemetry(car: int, seq: int, now: dt.datetime, redline: bool) -> bytes:
    return orjson.dumps({
        "vehicle_id": f"CAR{car:05d}", "timestamp": now.isoformat(timespec="microseconds"),
        "location": {"lat": 52.2 + (car % 100) * 1e-3, "lon": 21.0 + seq * 1e-5},
        "speed_kmh": 40.0, "engine_rpm": 6500 if redline else 2500, "gear": 3,
        "fuel_level_pct": 50.0, "fault_codes": [], "road_type": "urban",
        "speed_limit_kmh": 50, "speeding": False, "rpm_over_redline": redline, "seq": seq,
        "heading_deg": 90.0, "odometer_km": 1000 + seq * 0.01, "trip_id": f"trip-{car}",
        "schema_version": 1})


def fences() -> list[Geofence]:
    out = []
    for i in range(3):
        lat0 = 52.2 + i * 0.03
        ring = [[21.0, lat0], [21.2, lat0], [21.2, lat0 + 0.02], [21.0, lat0 + 0.02], [21.0, lat0]]
        out.append(Geofence.model_validate({"id": f"zone-{i}", "name": f"Zone {i}",
                                            "geometry": {"type": "Polygon",
                                                         "coordinates": [ring]}}))
    return out


class Load:
    """Publishes the paced telemetry and consumes the alerts, in one asyncio thread."""

    def __init__(self, bootstrap: str, telemetry_topic: str, events_topic: str, rate: float,
                 vehicles: int) -> None:
        self.bootstrap, self.telemetry_topic, self.events_topic = (
            bootstrap, telemetry_topic, events_topic)
        self.rate, self.vehicles = rate, vehicles
        self.sent_at: dict[tuple[str, int], float] = {}  # (vehicle, seq) of triggers -> time
        self.latencies: list[tuple[float, float]] = []  # (arrival time, latency s)
        self.published: list[tuple[float, int]] = []  # (time, events so far)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5,
                                    max_batch_size=256 * 1024, acks=1)
        consumer = AIOKafkaConsumer(self.events_topic, bootstrap_servers=self.bootstrap,
                                    group_id=None, auto_offset_reset="earliest")
        await producer.start()
        await consumer.start()
        try:
            await asyncio.gather(self._publish(producer), self._consume(consumer))
        finally:
            await producer.stop()
            await consumer.stop()

    async def _publish(self, producer: Any) -> None:
        period = self.vehicles / self.rate  # seconds between two events of one car
        steps_per_alert = max(2, round(ALERT_EVERY_S / period))
        start = time.monotonic()
        sent = 0
        while not self.stop.is_set():
            now_m = time.monotonic()
            due = int((now_m - start) * self.rate)
            now = dt.datetime.now(dt.UTC)
            while sent < due:
                car, seq = sent % self.vehicles, sent // self.vehicles
                redline = seq % steps_per_alert == car % steps_per_alert and seq > 0
                vid = f"CAR{car:05d}"
                if redline:
                    self.sent_at[(vid, seq)] = time.time()
                # send() only queues the record (it is delivered in batches, linger 5 ms)
                await producer.send(self.telemetry_topic, key=vid.encode(),
                                    value=telemetry(car, seq, now, redline))
                sent += 1
            self.published.append((time.time(), sent))
            await asyncio.sleep(0.01)
        await producer.flush()

    async def _consume(self, consumer: Any) -> None:
        while not self.stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            arrived = time.time()
            for records in batches.values():
                for rec in records:
                    doc = orjson.loads(rec.value)
                    if doc.get("kind") != "alert" or doc.get("rule_kind") != "over_redline":
                        continue
                    sent = self.sent_at.get((doc["vehicle_id"], doc["source_seq"]))
                    if sent is not None:
                        self.latencies.append((arrived, arrived - sent))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def batches(query: Any, since: float, until: float) -> list[float]:
    """Durations (s) of the batches with data that ended in [since, until)."""
    out = []
    for p in query.recentProgress:
        took = p["durationMs"].get("triggerExecution", 0) / 1000
        ended = dt.datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).timestamp() \
            + took
        if since <= ended < until and p["numInputRows"] > 0:
            out.append(took)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=5000.0, help="events/s in total")
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=60.0,
                        help="JVM and worker start, first batches (not measured)")
    parser.add_argument("--trigger-s", type=float, default=1.0)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        work = Path(tmp)
        with bench_broker(args.bootstrap, work) as bootstrap:
            return _bench(args, work, bootstrap)


async def publish_fences(bootstrap: str, topic: str) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for fence in fences():
            await producer.send_and_wait(topic, key=fence.id.encode(),
                                         value=fence.model_dump_json().encode())
    finally:
        await producer.stop()


def _bench(args: argparse.Namespace, work: Path, bootstrap: str) -> int:
    from analytics.events_job import build_session, start, stop_gracefully

    run = uuid.uuid4().hex[:8]
    names = {k: f"bench-{k}-{run}" for k in ("telemetry", "events", "geofences", "rules")}
    create_topic(bootstrap, names["telemetry"], 3)
    settings = EventsSettings(
        kafka_bootstrap_servers=bootstrap, kafka_topic=names["telemetry"],
        events_topic=names["events"], geofences_topic=names["geofences"],
        alert_rules_topic=names["rules"], checkpoint_dir=work / "checkpoint",
        local_dir=work / "local", trigger_seconds=args.trigger_s, starting_offsets="latest",
        master=args.master, shuffle_partitions=2,
        spark_conf={"spark.ui.enabled": "false", "spark.driver.memory": "1g"})
    spark = build_session(settings)
    query = start(settings, spark)  # creates the events and definition topics
    asyncio.run(publish_fences(bootstrap, names["geofences"]))
    load = Load(bootstrap, names["telemetry"], names["events"], args.rate, args.vehicles)
    load.thread.start()
    print(f"events job at {args.rate:.0f} events/s ({args.vehicles} cars, an alert per car "
          f"every {ALERT_EVERY_S:.0f} s), trigger {args.trigger_s:g} s, {args.master}; "
          f"warm-up {args.warmup_s:.0f} s", flush=True)
    rows = []
    try:
        time.sleep(args.warmup_s)
        for w in range(args.windows):
            since = time.time()
            time.sleep(args.window_s)
            until = time.time()
            if query.exception() is not None:
                raise SystemExit(f"the job failed: {query.exception()}")
            lat = [x for t, x in load.latencies if since <= t < until]
            pub = [(t, n) for t, n in load.published if since <= t < until]
            rate = (pub[-1][1] - pub[0][1]) / (pub[-1][0] - pub[0][0]) if len(pub) > 1 else 0
            took = batches(query, since, until)
            row = {"window": w + 1, "alerts": len(lat), "p50": pct(lat, 0.5),
                   "p99": pct(lat, 0.99), "max": max(lat, default=float("nan")),
                   "rate": rate, "batch_p50": pct(took, 0.5),
                   "batch_max": max(took, default=float("nan")), "batches": len(took)}
            rows.append(row)
            print(f"window {row['window']}: {row['alerts']} alerts, latency p50 "
                  f"{row['p50']:.2f} s, p99 {row['p99']:.2f} s, max {row['max']:.2f} s; "
                  f"published {row['rate']:.0f} events/s; micro-batch p50 "
                  f"{row['batch_p50']:.2f} s, max {row['batch_max']:.2f} s "
                  f"({row['batches']} batches)", flush=True)
    finally:
        load.stop.set()
        load.thread.join(30)
        stop_gracefully(query, 10)
        spark.stop()
    med = {k: statistics.median(r[k] for r in rows)
           for k in ("p50", "p99", "batch_p50", "rate")}
    print(f"median of {len(rows)} windows: alert latency p50 {med['p50']:.2f} s, p99 "
          f"{med['p99']:.2f} s; micro-batch p50 {med['batch_p50']:.2f} s; published "
          f"{med['rate']:.0f} events/s")
    print(f"ratio to the {TARGET_S:g} s target: p50 {med['p50'] / TARGET_S:.2f}, "
          f"p99 {med['p99'] / TARGET_S:.2f} (below 1 meets it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
