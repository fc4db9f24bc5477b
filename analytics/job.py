"""Extract (Kafka) -> transform (analytics.transforms) -> load (parquet or console).

Three streaming queries share one Kafka source definition: ``vehicle_windows`` and
``road_windows`` (windowed aggregates, append mode with a watermark) and ``malformed``
(records that are not valid events). Each has its own checkpoint, so the parquet sink writes
each window exactly once; a rerun from the same checkpoint adds nothing it wrote before.

Runs as ``python -m analytics`` or ``spark-submit ... analytics/job.py`` (same flags).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TypeVar

import pyspark
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException, StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from analytics.gateway import open_session
from analytics.progress import ProgressTracker
from analytics.settings import Settings, SparkJobSettings
from analytics.transforms import malformed_records, parse, transform, valid_events
from common.kafka import KafkaEdgeError, check_reachable

log = logging.getLogger("analytics")

QUERIES = ("vehicle_windows", "road_windows", "malformed")
CONNECTOR = f"spark-sql-kafka-0-10_2.13-{pyspark.__version__}.jar"
S = TypeVar("S", bound=SparkJobSettings)


class JobError(RuntimeError):
    """The job cannot start or a query failed; the message says what to do."""


def _launched_by_spark_submit() -> bool:
    # The way pyspark itself tells (java_gateway.launch_gateway): spark-submit started the JVM
    # first and handed its gateway port to this Python process.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def connector_jars(jars_dir: Path) -> list[Path]:
    """The connector jars in ``jars_dir``; the one matching this pyspark must be there."""
    jars = sorted(jars_dir.glob("*.jar")) if jars_dir.is_dir() else []
    if not any(j.name == CONNECTOR for j in jars):
        raise JobError(f"{CONNECTOR} not found in {jars_dir} (ANALYTICS_SPARK_JARS_DIR): run "
                       "`python -m tools.kafka fetch-spark` (make spark-jars) to fetch it")
    return jars


def session_conf(settings: Settings) -> dict[str, str]:
    """The Spark settings the job needs, user's ``--conf`` last (they win)."""
    conf = {
        "spark.app.name": "fleetstream-analytics",
        "spark.sql.session.timeZone": "UTC",
        # isAdjustedToUTC timestamps: pyarrow/pandas read them as timestamp[us, tz=UTC]
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.streaming.forceDeleteTempCheckpointLocation": "true",
        "spark.ui.showConsoleProgress": "false",
    }
    if not _launched_by_spark_submit():
        # The JVM is started from these settings: put the connector on it, keep temp inside.
        # (Under spark-submit its own --jars, --conf spark.local.dir etc. apply.)
        conf["spark.local.dir"] = str(settings.local_dir.resolve())
        conf["spark.master"] = settings.master or "local[*]"
        conf["spark.jars"] = ",".join(str(j.resolve())
                                      for j in connector_jars(settings.spark_jars_dir))
        conf["spark.driver.extraJavaOptions"] = f"-Djava.io.tmpdir={settings.local_dir.resolve()}"
    elif settings.master:
        conf["spark.master"] = settings.master
    conf.update(settings.spark_conf)
    return conf


def build_session(settings: Settings) -> SparkSession:
    """A SparkSession for the job (local[*] unless told otherwise), quiet logs."""
    settings.local_dir.mkdir(parents=True, exist_ok=True)
    return open_session(session_conf(settings))


def check_broker(bootstrap_servers: str, timeout: float = 5.0) -> None:
    """Fail fast, and clearly, when no bootstrap server accepts a connection (Spark's own
    Kafka client would retry for minutes and then fail with the whole query plan)."""
    try:
        check_reachable(bootstrap_servers, timeout_s=timeout)
    except KafkaEdgeError as exc:
        raise JobError(f"{exc} (KAFKA_BOOTSTRAP_SERVERS / --bootstrap-servers)") from None


def _short(failure: BaseException) -> str:
    """A failure without the query plan and Java stack Spark attaches to it."""
    text = str(failure).split("=== Streaming Query ===")[0].split("\n\tat ")[0].strip()
    text = text.removeprefix("An error occurred while calling").strip()
    text = re.sub(r"^o\d+\.\w+\.\s*:\s*", "", " ".join(text.split()))  # py4j's call id
    return text if len(text) <= 2000 else text[:2000] + " ..."


def extract(spark: SparkSession, settings: SparkJobSettings) -> DataFrame:
    """The telemetry topic as a stream of Kafka records."""
    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
              .option("subscribe", settings.kafka_topic)
              .option("startingOffsets", settings.starting_offsets)
              .option("failOnDataLoss", str(settings.fail_on_data_loss).lower()))
    if settings.max_offsets_per_trigger is not None:
        reader = reader.option("maxOffsetsPerTrigger", str(settings.max_offsets_per_trigger))
    return reader.load()


def outputs(raw: DataFrame, settings: Settings) -> dict[str, DataFrame]:
    """The three output streams, by query name."""
    parsed = parse(raw)
    vehicles, roads = transform(valid_events(parsed), settings.window, settings.watermark)
    counted = parsed.observe("parse", F.count(F.lit(1)).alias("records"),
                             F.count_if(F.col("reason").isNotNull()).alias("malformed"))
    streams = {"vehicle_windows": vehicles, "road_windows": roads,
               "malformed": malformed_records(counted)}
    return {name: df.observe("written", F.count(F.lit(1)).alias("rows_written"))
            for name, df in streams.items()}


def load(name: str, df: DataFrame, settings: Settings, scratch: Path) -> StreamingQuery:
    """Start one query: parquet (+ checkpoint) or console, continuous or once."""
    if settings.sink == "parquet":
        df = df.repartition(1)  # one file per batch and dataset, not one per shuffle partition
    writer: DataStreamWriter = df.writeStream.queryName(name).outputMode("append")
    if settings.sink == "parquet":
        writer = (writer.format("parquet")
                  .option("path", settings.location(name))
                  .option("checkpointLocation", settings.location(name, checkpoint=True)))
    else:
        writer = (writer.format("console").option("truncate", "false").option("numRows", 50)
                  .option("checkpointLocation", str(scratch / name)))
    if settings.once:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{settings.trigger_seconds} seconds")
    return writer.start()


def _install_stop_handlers(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping the queries after their current batch", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _stop_after_batch(query: StreamingQuery, wait_s: float = 60.0) -> None:
    """Let a running micro-batch finish (so its output is committed), then stop the query."""
    deadline = time.monotonic() + wait_s
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.2)
    if query.isActive:
        query.stop()


def run(settings: Settings, spark: SparkSession | None = None,
        stop: threading.Event | None = None) -> dict[str, dict[str, object]]:
    """Run the job until the backlog is done (``once``) or until ``stop``/SIGTERM/SIGINT.

    Uses ``spark`` if given (tests), else builds a session and stops it at the end. Returns
    the progress totals per query; raises JobError if a query failed.
    """
    check_broker(settings.kafka_bootstrap_servers)
    own_session = spark is None
    session = spark if spark is not None else build_session(settings)
    stop = stop or threading.Event()
    if own_session:
        _install_stop_handlers(stop)
    tracker = ProgressTracker(settings.progress_dir if settings.sink == "parquet" else None)
    settings.local_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="console-", dir=settings.local_dir))
    queries: list[StreamingQuery] = []
    try:
        raw = extract(session, settings)
        for name, df in outputs(raw, settings).items():
            try:
                queries.append(load(name, df, settings, scratch))
            except (Py4JJavaError, PySparkException) as exc:
                raise JobError(f"query {name} could not start: {_short(exc)}") from None
        log.info("started %s from %s/%s (%s, window %s, watermark %s) -> %s",
                 ", ".join(QUERIES), settings.kafka_bootstrap_servers, settings.kafka_topic,
                 "once" if settings.once else f"every {settings.trigger_seconds:g}s",
                 settings.window, settings.watermark,
                 settings.output_dir if settings.sink == "parquet" else "console")
        while any(q.isActive for q in queries) and not stop.is_set():
            for q in queries:
                try:
                    q.awaitTermination(1)
                except (StreamingQueryException, Py4JJavaError) as exc:
                    raise JobError(f"query {q.name} failed: {_short(exc)}") from None
                tracker.poll(queries)
                failure = q.exception()
                if failure is not None:
                    raise JobError(f"query {q.name} failed: {_short(failure)}")
    finally:
        for q in queries:
            _stop_after_batch(q)
        tracker.poll(queries)
        if own_session:
            session.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    for name, totals in tracker.totals.items():
        log.info("%s totals: %s", name, {k: v for k, v in totals.items()
                                          if k not in ("last", "query", "updated_at")})
    return tracker.totals


def run_as_process(job: Callable[[S], object], settings: S,
                   logger: logging.Logger = log) -> int:
    """A Spark job as a process: log to stderr at ``settings.log_level``; exit 1 on a
    JobError (both jobs of analytics/ run this way)."""
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def stopped_while_starting(signum: int, _frame: FrameType | None) -> None:
        # until the job installs its own handlers (stop after the current batch), a stop
        # request is simply honoured; the detached driver JVM follows when Python exits
        logger.info("signal %s before the query started: exiting", signum)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stopped_while_starting)
    signal.signal(signal.SIGINT, stopped_while_starting)
    try:
        job(settings)
    except JobError as exc:
        logger.error("%s", exc)
        return 1
    return 0


def run_main(settings: Settings) -> int:
    """The job as a process: log to stderr at ``settings.log_level``; exit 1 on a JobError."""
    return run_as_process(run, settings)


if __name__ == "__main__":  # spark-submit analytics/job.py [flags]: the installed package
    from analytics.cli import parse_settings

    sys.exit(run_main(parse_settings()))
