"""Benchmark: the analytics job in once mode over a backlog of telemetry events.

    python -m bench.analytics [--events 1000000] [--reps 3] [--bootstrap HOST:PORT]

Publishes N events (``python -m producer --stdout`` if the producer has that command, else
events generated here with orjson; 0.01 % malformed) to a fresh topic, then, per repetition:

* baseline: the same Kafka connector reads the whole backlog in one availableNow query with
  a no-op sink and counts it (a streaming read, the job's code path minus the work);
* stages: the baseline plus the job's per-record work step by step, each counted: the value
  cast to a string; ``from_json`` of one field (Jackson's tokenizer, the floor of any parse
  with Spark's JSON reader); Spark 4's ``try_parse_json`` into a VARIANT (another parser,
  before any field is read); ``from_json`` with the full schema; the same struct from the
  record's bytes by Jackson's byte parser (``bench/jvm/ByteJsonParser.java``, a Java UDF
  compiled here with javac: what a parser outside ``from_json`` would save; its per-field
  counts must equal ``from_json``'s); the job's whole parse (``from_json``, the validity
  check, the slim rows the job caches);
* job: ``analytics.job.run`` in once mode (one query, the batch parsed once, windows,
  malformed records, parquet), from a fresh checkpoint and output folder;
* one pass: the ceiling of any job design (``bench/jvm/OnePass.java``): each partition read
  once in the JVM into partial aggregates per window, car and road type, with none of the
  job's checks, then merged into the job's two datasets and written to parquet. Once with
  the fuel used merged exactly (the samples travel with the partials), once with it summed
  per partition (exact only when a car's window is in one partition). Its counts must match
  the job's (records, malformed, vehicle windows up to the few the job leaves open).

Prints events/s for each, medians over the repetitions, and each one's ratio to the baseline. One
SparkSession (local[2] unless --master) serves every run. Starts its own broker on free ports
in a temp folder unless --bootstrap or KAFKA_BOOTSTRAP_SERVERS names one. The machine is
shared and has 2 cores: numbers are noisy, compare medians of the same run only.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson

from analytics.settings import Settings
from bench.broker import bench_broker
from tools.kafka import create_topic

START = dt.datetime(2026, 1, 1, 8, 0, tzinfo=dt.UTC)
ROADS = ("urban", "rural", "highway")


def synthetic_events(n: int, vehicles: int) -> Iterator[bytes]:
    """Deterministic, schema-valid JSON events: ``vehicles`` cars at 1 Hz."""
    for i in range(n):
        car, step = i % vehicles, i // vehicles
        speed = float((step * 7 + car * 13) % 140)
        yield orjson.dumps({
            "vehicle_id": f"CAR{car:05d}",
            "timestamp": (START + dt.timedelta(seconds=step)).isoformat(timespec="microseconds"),
            "location": {"lat": 48.1 + car * 1e-4, "lon": 11.5 + step * 1e-5},
            "speed_kmh": speed, "engine_rpm": 800 + int(speed * 40), "gear": 1 + int(speed) // 30,
            "fuel_level_pct": 100.0 - (step % 5000) * 0.01, "fault_codes": [],
            "road_type": ROADS[(car + step // 300) % 3], "speed_limit_kmh": 100,
            "speeding": speed > 105, "rpm_over_redline": speed > 135, "seq": step,
            "heading_deg": 90.0, "odometer_km": step * speed / 3600, "trip_id": f"t{car}",
            "schema_version": 1})


def producer_events(n: int, vehicles: int) -> list[bytes] | None:
    """The producer's own simulated events, when ``python -m producer --stdout`` exists.

    A parked car reports once per SIM_HEARTBEAT_S, not every step, so a run of n / vehicles
    steps has fewer than n events: the run is repeated, longer, until it has n."""
    if importlib.util.find_spec("producer.__main__") is None:
        return None
    steps = -(-n // vehicles)
    for _ in range(4):
        cmd = [sys.executable, "-m", "producer", "--stdout", "--seed", "42", "--vehicles",
               str(vehicles), "--rate-hz", "1", "--steps", str(steps), "--start-time",
               START.isoformat()]
        proc = subprocess.run(cmd, capture_output=True, check=False)
        lines = proc.stdout.splitlines()
        if proc.returncode != 0 or not lines:
            break
        if len(lines) >= n:
            return lines[:n]
        steps = int(steps * n / len(lines) * 1.1) + 1
    print(f"producer --stdout unusable (rc {proc.returncode}, {len(lines)} of {n:,} lines); "
          "generating events here", file=sys.stderr)
    return None


def events(n: int, vehicles: int) -> tuple[list[bytes], str]:
    lines = producer_events(n, vehicles)
    source = "python -m producer --stdout"
    if lines is None:
        lines, source = list(synthetic_events(n, vehicles)), "bench.analytics synthetic (orjson)"
    for i in range(0, n, 10_000):  # 0.01 % malformed, to keep that path honest
        lines[i] = b"not json" if i % 20_000 else b'{"vehicle_id": "BROKEN"}'
    return lines, source


async def publish(bootstrap: str, topic: str, lines: list[bytes], partitions: int) -> None:
    """aiokafka's batch API: one record batch per partition at a time, ~1 MiB each."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5,
                                max_batch_size=1 << 20, max_request_size=2 << 20)
    await producer.start()
    try:
        batches = {p: producer.create_batch() for p in range(partitions)}
        pending = []
        for line in lines:
            try:
                key = str(orjson.loads(line).get("vehicle_id", "")).encode()
            except (orjson.JSONDecodeError, AttributeError):
                key = b"malformed"
            p = zlib.crc32(key) % partitions
            if batches[p].append(key=key, value=line, timestamp=None) is None:
                batches[p].close()
                pending.append(await producer.send_batch(batches[p], topic, partition=p))
                batches[p] = producer.create_batch()
                batches[p].append(key=key, value=line, timestamp=None)
            if len(pending) >= 16:
                await asyncio.gather(*pending)
                pending.clear()
        for p, batch in batches.items():
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def baseline(spark, bootstrap: str, topic: str, work: Path) -> tuple[float, int]:
    """Read the whole backlog with the same connector (availableNow, no-op sink), count it."""
    from pyspark.sql import functions as F

    raw = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", bootstrap)
           .option("subscribe", topic).option("startingOffsets", "earliest").load())
    counted = raw.observe("count", F.count(F.lit(1)).alias("records"))
    t0 = time.perf_counter()
    query = (counted.writeStream.format("noop").queryName(f"baseline_{uuid.uuid4().hex[:6]}")
             .option("checkpointLocation", str(work / "baseline-ckpt"))
             .trigger(availableNow=True).start())
    query.awaitTermination()
    elapsed = time.perf_counter() - t0
    reports = [json.loads(p.json) for p in query.recentProgress]
    records = sum(r.get("observedMetrics", {}).get("count", {}).get("records", 0)
                  for r in reports)
    return elapsed, records


def _text():
    from pyspark.sql import functions as F

    return F.col("value").cast("string")


def _cast(raw):
    from pyspark.sql import functions as F

    return raw.select(_text().alias("text")), [F.sum(F.length("text")).alias("chars")]


def _from_json(raw):
    from pyspark.sql import functions as F

    from analytics.transforms import CORRUPT

    parsed = raw.select(F.from_json(_text(), _full_schema(), {
        "mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}).alias("e")).select("e.*")
    return parsed, _present(parsed)


def _present(parsed):
    """Per field, the records where it is not null (so no field is pruned from the parse)."""
    from pyspark.sql import functions as F

    return [F.count_if(F.col(f).isNotNull()).alias(f) for f in parsed.columns]


def _tokenize(raw):
    """``from_json`` keeping one field: Jackson still reads every token of the record, so this
    is the floor of any job that parses the JSON with Spark's reader."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    schema = T.StructType([T.StructField("vehicle_id", T.StringType())])
    parsed = raw.select(F.from_json(_text(), schema).alias("e")).select("e.vehicle_id")
    return parsed, [F.count_if(F.col("vehicle_id").isNotNull()).alias("ids")]


def _variant(raw):
    """Spark 4's ``try_parse_json`` into a VARIANT, before any field is read from it."""
    from pyspark.sql import functions as F

    parsed = raw.select(F.try_parse_json(_text()).alias("v"))
    return parsed, [F.count_if(F.col("v").isNotNull()).alias("objects")]


BYTES_UDF = "fleetstream_bench_bytes_json"


def _bytes(raw):
    """The value's bytes straight to Jackson's byte parser (a Java UDF of our own,
    ``bench/jvm/ByteJsonParser.java``), the same struct as :func:`_from_json`."""
    from pyspark.sql import functions as F

    parsed = raw.select(F.call_function(BYTES_UDF, F.col("value")).alias("e")).select("e.*")
    return parsed, _present(parsed)


def _full_schema():
    from pyspark.sql import types as T

    from analytics.schema import EVENT_SCHEMA
    from analytics.transforms import CORRUPT

    return T.StructType([*EVENT_SCHEMA.fields, T.StructField(CORRUPT, T.StringType())])


def parser_jar(work: Path) -> Path:
    """``bench/jvm/*.java`` compiled with the JDK's javac against pyspark's jars."""
    import shutil
    import zipfile

    import pyspark

    from tools.kafka import java_bin

    beside = Path(java_bin()).parent / "javac"
    javac = str(beside) if beside.exists() else shutil.which("javac")
    if javac is None:
        raise SystemExit("bench.analytics: the bytes stage compiles a Java UDF and needs javac "
                         "(a JDK: JAVA_HOME/bin/javac or javac on PATH)")
    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("*.jar"))
    classes = work / "jvm-classes"
    sources = sorted((Path(__file__).parent / "jvm").glob("*.java"))
    subprocess.run([javac, "-d", str(classes), "-cp", os.pathsep.join(map(str, jars)),
                    *map(str, sources)], check=True)
    jar = work / "fleetstream-bench-jvm.jar"
    with zipfile.ZipFile(jar, "w") as z:
        for f in sorted(classes.rglob("*.class")):
            z.write(f, f.relative_to(classes).as_posix())
    return jar


def register_parser(spark) -> None:
    """Register :data:`BYTES_UDF` (binary -> the full schema's struct) in ``spark``."""
    from analytics.transforms import CORRUPT

    jvm = spark.sparkContext._jvm
    schema = _full_schema().json()
    udf = jvm.fleetstream.bench.ByteJsonParser(schema, CORRUPT)
    spark._jsparkSession.udf().register(
        BYTES_UDF, udf, jvm.org.apache.spark.sql.types.DataType.fromJson(schema))


def _parse(raw):
    from pyspark.sql import functions as F

    from analytics.transforms import parse, slim

    rows = slim(parse(raw), "1 minute")
    return rows, [F.count_if(F.col("reason").isNull()).alias("valid"),
                  F.max("window_end").alias("last_window")]


STAGES = {
    "cast": ("read + cast(value as string)", _cast),
    "tokenize": ("read + from_json of one field (the tokenizer)", _tokenize),
    "variant": ("read + try_parse_json (VARIANT)", _variant),
    "from_json": ("read + from_json (the full schema)", _from_json),
    "bytes": ("read + Jackson's byte parser, full schema (Java UDF)", _bytes),
    "parse": ("read + the job's parse (from_json, validity, slim rows)", _parse),
}
"""Rows between the baseline and the job: what reading and parsing alone cost (each
counted, every column it produces used by an observed metric so nothing is pruned)."""


def stage(spark, bootstrap: str, topic: str, work: Path,
          name: str) -> tuple[float, dict[str, object]]:
    """The baseline's read plus one step of the job's per-record work, counted: the time
    and the observed metrics summed over the query's batches (``records`` and the stage's)."""
    from pyspark.sql import functions as F

    raw = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", bootstrap)
           .option("subscribe", topic).option("startingOffsets", "earliest").load())
    frame, metrics = STAGES[name][1](raw)
    counted = frame.observe("count", F.count(F.lit(1)).alias("records"), *metrics)
    t0 = time.perf_counter()
    query = (counted.writeStream.format("noop").queryName(f"{name}_{uuid.uuid4().hex[:6]}")
             .option("checkpointLocation", str(work / f"{name}-ckpt"))
             .trigger(availableNow=True).start())
    query.awaitTermination()
    elapsed = time.perf_counter() - t0
    totals: dict[str, object] = {}
    for report in (json.loads(p.json) for p in query.recentProgress):
        for k, v in report.get("observedMetrics", {}).get("count", {}).items():
            before = totals.get(k)
            totals[k] = before + v if isinstance(before, int) and isinstance(v, int) else v
    return elapsed, totals


def one_pass(spark, bootstrap: str, topic: str, work: Path,
             finish: bool) -> tuple[float, dict[str, int]]:
    """The ceiling of any job (``bench/jvm/OnePass.java``): each partition read once into
    partial aggregates in the JVM, no contract checks, then merged into the job's two
    datasets in one ``foreachBatch`` and written to parquet as the job writes them. With
    ``finish`` each partial's fuel used is summed in the JVM, which is exact only when a
    car's events of a window are all in one partition. Returns the time and what it counted."""
    import pyarrow.parquet as pq
    from pyspark import StorageLevel
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    from analytics.transforms import duration_us, fuel_drops

    window_us = duration_us("1 minute")
    counted = {"records": 0, "malformed": 0, "vehicle_windows": 0, "road_windows": 0}

    def batch(df: DataFrame, batch_id: int) -> None:
        jdf = spark._jvm.fleetstream.bench.OnePass.partials(df._jdf, window_us, finish)
        rows = DataFrame(jdf, df.sparkSession).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            stats = rows.where("kind = 's'").agg(F.sum("n").alias("records"),
                                                 F.sum("speeding").alias("malformed")).first()
            parts = rows.where("kind = 'p'")
            if finish:
                fuel = F.sum("fuel_used")
            else:  # the job's own sum over the samples, sorted by time and seq
                fuel = fuel_drops(F.array_sort(F.flatten(F.collect_list(
                    F.arrays_zip("ts", "seq", "fuel")))), "fuel")
            vehicles = parts.groupBy("window_end", "vehicle_id").agg(
                F.sum("n").alias("samples"), (F.sum("speed_sum") / F.sum("n")).alias("avg"),
                F.max("speed_max").alias("max"), F.sum("speeding").alias("speeding"),
                F.sum("redline").alias("redline"),
                (F.max("odo_max") - F.min("odo_min")).alias("distance_km"),
                fuel.alias("fuel_used_pct")).toArrow()
            per_vehicle = parts.groupBy("window_end", "road_type", "vehicle_id").agg(
                F.sum("n").alias("n"), F.sum("speed_sum").alias("speed_sum"),
                F.max("speed_max").alias("speed_max"), F.sum("speeding").alias("speeding"),
                F.sum("redline").alias("redline"))
            roads = per_vehicle.groupBy("window_end", "road_type").agg(
                F.sum("n").alias("samples"), F.count(F.lit(1)).alias("vehicles"),
                (F.sum("speed_sum") / F.sum("n")).alias("avg"), F.max("speed_max").alias("max"),
                F.sum("speeding").alias("speeding"), F.sum("redline").alias("redline")).toArrow()
            pq.write_table(vehicles, str(work / f"vehicle_windows-{batch_id}.parquet"))
            pq.write_table(roads, str(work / f"road_windows-{batch_id}.parquet"))
        finally:
            rows.unpersist()
        counted["records"] += stats["records"] or 0
        counted["malformed"] += stats["malformed"] or 0
        counted["vehicle_windows"] += vehicles.num_rows
        counted["road_windows"] += roads.num_rows

    work.mkdir(parents=True, exist_ok=True)
    raw = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", bootstrap)
           .option("subscribe", topic).option("startingOffsets", "earliest").load())
    t0 = time.perf_counter()
    query = (raw.writeStream.foreachBatch(batch).queryName(f"one_pass_{uuid.uuid4().hex[:6]}")
             .option("checkpointLocation", str(work / "ckpt")).trigger(availableNow=True)
             .start())
    query.awaitTermination()
    return time.perf_counter() - t0, counted


ONE_PASS = {
    "one_pass": ("JVM one pass, exact merge (no checks: ceiling)", False),
    "one_pass_finished": ("JVM one pass, fuel summed per partition", True),
}
"""Rows after the job: what a job with none of its checks, written in the JVM, would cost."""


def job(spark, settings: Settings) -> tuple[float, dict]:
    from analytics.job import run

    t0 = time.perf_counter()
    totals = run(settings, spark=spark)
    return time.perf_counter() - t0, totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.analytics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--vehicles", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1,
                        help="unrecorded runs of both first (JIT, caches); default 1")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="1536m")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench-analytics-") as tmp:
        work = Path(tmp)
        with bench_broker(args.bootstrap, work) as bootstrap:
            return _bench(args, work, bootstrap)


def _bench(args: argparse.Namespace, work: Path, bootstrap: str) -> int:
    from analytics.job import build_session, connector_jars

    t0 = time.perf_counter()
    lines, source = events(args.events, args.vehicles)
    gen_s = time.perf_counter() - t0
    topic = f"bench-analytics-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, args.partitions)
    t0 = time.perf_counter()
    asyncio.run(publish(bootstrap, topic, lines, args.partitions))
    pub_s = time.perf_counter() - t0
    n = len(lines)
    del lines
    print(f"{n:,} events from {source} (generated in {gen_s:.1f}s), published to {topic} "
          f"({args.partitions} partitions) at {bootstrap} in {pub_s:.1f}s")

    base = Settings(kafka_bootstrap_servers=bootstrap, kafka_topic=topic, once=True,
                    master=args.master, local_dir=work / "spark-local", log_level="WARNING",
                    spark_conf={"spark.ui.enabled": "false",
                                "spark.driver.memory": args.driver_memory})
    jars = [*connector_jars(base.spark_jars_dir), parser_jar(work)]
    spark = build_session(base.model_copy(update={"spark_conf": {
        **base.spark_conf, "spark.jars": ",".join(str(j.resolve()) for j in jars)}}))
    register_parser(spark)
    results: dict[str, list[float]] = {"baseline": [], **{k: [] for k in STAGES}, "job": [],
                                       **{k: [] for k in ONE_PASS}}
    load = [os.getloadavg()[0]]
    try:
        for rep in range(-args.warmup, args.reps):
            b_s, counted = baseline(spark, bootstrap, topic, work / f"b{rep}")
            if counted != n:
                print(f"baseline counted {counted:,} records, expected {n:,}", file=sys.stderr)
                return 1
            times = {"baseline": b_s}
            seen = {}
            for name in STAGES:
                times[name], seen[name] = stage(spark, bootstrap, topic, work / f"s{rep}", name)
                if seen[name].get("records") != n:
                    print(f"{name} counted {seen[name].get('records')} records, expected {n:,}",
                          file=sys.stderr)
                    return 1
            if seen["bytes"] != seen["from_json"]:
                print(f"the byte parser disagrees with from_json on the fields present: "
                      f"{seen['bytes']} against {seen['from_json']}", file=sys.stderr)
                return 1
            settings = base.model_copy(update={"output_dir": str(work / f"out{rep}")})
            times["job"], totals = job(spark, settings)
            written = totals["vehicle_windows"]["observed"].get("rows_written", 0)
            malformed = totals["malformed"]["observed"].get("malformed", 0)
            for name, (_, finish) in ONE_PASS.items():
                times[name], did = one_pass(spark, bootstrap, topic, work / f"{name}{rep}",
                                            finish)
                # the job writes only closed windows: the last few stay open in once mode
                if did["records"] != n or did["malformed"] != malformed or not (
                        written <= did["vehicle_windows"] <= written * 1.01 + 1000):
                    print(f"{name} counted {did}, the job {n:,} records, {malformed} "
                          f"malformed, {written:,} vehicle windows", file=sys.stderr)
                    return 1
            line = " | ".join(f"{k} {v:.1f}s" for k, v in times.items())
            if rep < 0:
                print(f"warm-up: {line} (not counted)")
                continue
            for k, v in times.items():
                results[k].append(v)
            print(f"rep {rep + 1}: {line}; {written:,} vehicle windows, {malformed} malformed, "
                  f"load average {os.getloadavg()[0]:.1f}")
    finally:
        spark.stop()
    load.append(os.getloadavg()[0])
    med = {k: statistics.median(v) for k, v in results.items()}
    b_med = med["baseline"]
    print(f"median over {args.reps} reps, {n:,} events from {source}, {args.master} (load average "
          f"{load[0]:.1f} at the start, {load[1]:.1f} at the end):")
    rows = [("baseline (same connector, read + count)", "baseline"),
            *[(label, k) for k, (label, _) in STAGES.items()],
            ("analytics job, once mode", "job"),
            *[(label, k) for k, (label, _) in ONE_PASS.items()]]
    for label, k in rows:
        print(f"  {label + ':':57s} {med[k]:6.1f}s {n / med[k]:10,.0f} ev/s "
              f"{b_med / med[k]:5.2f} of the baseline")
    print(f"  ratio job/baseline throughput: {b_med / med['job']:.2f}; job/(read + parse): "
          f"{med['parse'] / med['job']:.2f} (read + parse is the most a job that parses and "
          "checks every record can reach)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
