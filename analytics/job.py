"""Extract (Kafka) -> transform (analytics.transforms) -> load (parquet or console).

One streaming query reads the topic; ``foreachBatch`` (:class:`Batches`) parses each
micro-batch once and writes every dataset from it: ``vehicle_windows`` and ``road_windows``
(event-time windows closed by the watermark) and ``malformed`` (records that are not valid
events). Batch ids make the output exactly once: a rerun from the same checkpoint adds
nothing it wrote before, and a batch redone after a crash writes nothing twice.

Runs as ``python -m analytics`` or ``spark-submit ... analytics/job.py`` (same flags).
"""

from __future__ import annotations

import datetime as dt
import json
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

import pyarrow as pa
import pyarrow.fs as pafs
import pyspark
from py4j.protocol import Py4JJavaError
from pyspark import StorageLevel
from pyspark.errors import PySparkException, StreamingQueryException
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from analytics.compaction import Dataset, filesystem, write_atomic
from analytics.gateway import open_session
from analytics.progress import ProgressTracker
from analytics.reader import MALFORMED_SCHEMA, SCHEMAS
from analytics.settings import Settings, SparkJobSettings
from analytics.transforms import (
    USED_EVENT_FIELDS,
    duration_us,
    malformed_records,
    parse,
    slim,
    transform,
)
from common.kafka import KafkaEdgeError, check_reachable

log = logging.getLogger("analytics")

QUERY = "analytics"
"""The one streaming query; its checkpoint is ``<checkpoints>/analytics``, the job's own
batch commits and open-window events ``<checkpoints>/analytics_batches``."""
DATASET_SCHEMAS: dict[str, pa.Schema] = {**SCHEMAS, "malformed": MALFORMED_SCHEMA}
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


class Batches:
    """``foreachBatch``: each micro-batch of Kafka records, read once, feeds every dataset.

    The batch is parsed once into :func:`analytics.transforms.slim` rows and cached. From
    it: the malformed records; the valid events of windows still open, which with the
    open-window events kept from earlier batches (``open/<batch>/`` in the job's state
    folder) make the windows the watermark closes now; and this batch's events of windows
    still open, saved for later batches. The watermark is Spark's rule: the latest event time
    seen minus ``watermark``, never moving back. A window closes once the watermark reaches
    its end, so each window is aggregated once, over all its events; an event whose window
    closed before its batch is dropped and counted.

    **Exactly once.** After writing the datasets (analytics.compaction, names derived from the
    batch id) the job commits ``commits/<batch>.json`` (watermark, open-event folders). A
    batch Spark runs again after a crash (its offsets are logged, its commit is not) is
    skipped when that commit exists, else redone from the previous commit's state with the
    same records: the same files are rewritten and a dataset whose log entry for the batch
    exists is not written again, so no window is written twice.
    """

    def __init__(self, settings: Settings, state_dir: str, output_dir: str | None,
                 tracker: ProgressTracker) -> None:
        self.settings = settings
        self.fs, self.state = filesystem(state_dir)
        self.state_uri = state_dir
        self.tracker = tracker
        self.delay_us = duration_us(settings.watermark)
        self.datasets = {} if output_dir is None else {
            name: Dataset(_join(output_dir, name), name, schema)
            for name, schema in DATASET_SCHEMAS.items()}

    def create(self) -> None:
        """The folders, before the query starts: a path that cannot be one is a JobError."""
        for name, dataset in self.datasets.items():
            legacy = Path(dataset.path) / "_spark_metadata"
            if isinstance(dataset.fs, pafs.LocalFileSystem) and legacy.is_dir() and not (
                    Path(dataset.path) / "_commits").is_dir():
                raise JobError(f"{dataset.path} was written by the job before it read the "
                               "topic once (Spark's file sink): move it aside or choose "
                               "another ANALYTICS_OUTPUT_DIR")
            try:
                dataset.create()
            except OSError as exc:
                raise JobError(f"dataset {name} cannot be written at {dataset.path}: "
                               f"{_short(exc)}") from None
        self.fs.create_dir(f"{self.state}/commits", recursive=True)

    def _commit_path(self, batch_id: int) -> str:
        return f"{self.state}/commits/{batch_id:020d}.json"

    def _previous(self, batch_id: int) -> dict:
        infos = self.fs.get_file_info(pafs.FileSelector(f"{self.state}/commits"))
        ids = sorted(int(i.base_name[:-5]) for i in infos
                     if i.base_name.endswith(".json") and i.base_name[:-5].isdigit())
        before = [i for i in ids if i < batch_id]
        if not before:
            return {"batch_id": None, "watermark_us": None, "open": []}
        with self.fs.open_input_stream(self._commit_path(before[-1])) as f:
            return dict(json.loads(f.read()))

    def __call__(self, df: DataFrame, batch_id: int) -> None:
        if self.fs.get_file_info(self._commit_path(batch_id)).type != pafs.FileType.NotFound:
            log.info("batch %s was committed before a restart: skipped", batch_id)
            return
        previous = self._previous(batch_id)
        rows = slim(parse(df, max_future_s=self.settings.max_event_future_s),
                    self.settings.window).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            self._process(rows, batch_id, previous)
        finally:
            rows.unpersist()

    def _process(self, rows: DataFrame, batch_id: int, previous: dict) -> None:
        spark = rows.sparkSession
        prev_wm: int | None = previous["watermark_us"]
        valid = F.col("reason").isNull()
        end_us = F.unix_micros(F.col("window_end"))
        late = (valid & (end_us <= F.lit(prev_wm))) if prev_wm is not None else F.lit(False)
        clock = _Clock()
        stats = rows.agg(
            F.count(F.lit(1)).alias("records"),
            F.count_if(~valid).alias("malformed"),
            F.count_if(late).alias("late"),
            F.unix_micros(F.max("timestamp")).alias("max_ts"),
            F.unix_micros(F.max("window_end")).alias("max_end")).first()
        assert stats is not None
        clock.mark("read+parse+cache+stats")
        watermark = prev_wm
        if stats["max_ts"] is not None:
            candidate = stats["max_ts"] - self.delay_us
            watermark = candidate if prev_wm is None else max(prev_wm, candidate)

        events = rows.where(valid)
        if prev_wm is not None:
            events = events.where(end_us > F.lit(prev_wm))
        events = events.select(*USED_EVENT_FIELDS, "window_end")
        open_sets = previous["open"]  # each holds events of a window open after its batch
        tables: dict[str, pa.Table] = {}
        if watermark is not None and (prev_wm is None or watermark > prev_wm):
            pool = events
            if open_sets:
                earlier = spark.read.parquet(*[o["path"] for o in open_sets])
                pool = pool.unionByName(earlier.where(end_us > F.lit(prev_wm))
                                        if prev_wm is not None else earlier)
            closed = pool.where(end_us <= F.lit(watermark)).drop("window_end")
            vehicles, roads = transform(closed, self.settings.window)
            tables["vehicle_windows"] = vehicles.toArrow()
            clock.mark("vehicle_windows")
            tables["road_windows"] = roads.toArrow()
            clock.mark("road_windows")
        else:
            tables["vehicle_windows"] = DATASET_SCHEMAS["vehicle_windows"].empty_table()
            tables["road_windows"] = DATASET_SCHEMAS["road_windows"].empty_table()
        tables["malformed"] = (malformed_records(rows).toArrow() if stats["malformed"]
                               else DATASET_SCHEMAS["malformed"].empty_table())
        clock.mark("malformed")

        still_open = [o for o in open_sets if watermark is None or o["max_end_us"] > watermark]
        if stats["max_end"] is not None and (watermark is None or stats["max_end"] > watermark):
            path = _join(self.state_uri, f"open/{batch_id:020d}")
            pending = events if watermark is None else events.where(end_us > F.lit(watermark))
            pending.write.mode("overwrite").parquet(path)
            still_open.append({"path": path, "max_end_us": stats["max_end"]})
        clock.mark("open events")

        self._write(batch_id, tables)
        clock.mark("write")
        kept = {o["path"] for o in still_open}
        commit = {"batch_id": batch_id, "watermark_us": watermark, "open": still_open,
                  "released": [o["path"] for o in previous["open"] if o["path"] not in kept],
                  "records": stats["records"]}
        write_atomic(self.fs, self._commit_path(batch_id), json.dumps(commit).encode())
        self._clean_up(previous)
        self._record(batch_id, stats, watermark, {k: t.num_rows for k, t in tables.items()},
                     clock.total_ms())
        clock.mark("commit")
        for dataset in self.datasets.values():
            replaced = dataset.compact(batch_id, self.settings.compact_files)
            if replaced:
                log.info("%s: compacted %d files after batch %s", dataset.name, replaced,
                         batch_id)
        clock.mark("compact")
        log.debug("batch %s took %s", batch_id, clock)

    def _write(self, batch_id: int, tables: dict[str, pa.Table]) -> None:
        if not self.datasets:  # the console sink
            for name, table in tables.items():
                if table.num_rows:
                    sys.stdout.write(f"-- batch {batch_id}: {name} ({table.num_rows} rows)\n"
                                     f"{table.to_pandas().to_string(max_rows=50)}\n")
                    sys.stdout.flush()
            return
        for name, dataset in self.datasets.items():
            if dataset.committed(batch_id):
                continue  # written before a crash, with the same rows
            dataset.write_batch(batch_id, tables[name])

    def _clean_up(self, previous: dict) -> None:
        """The open-event folders the previous batch released (kept one batch longer, so a
        batch redone after a crash still finds the state its previous commit names), and
        commits older than the previous one."""
        for path in previous.get("released", []):
            fs, local = filesystem(path)
            if fs.get_file_info(local).type == pafs.FileType.Directory:
                fs.delete_dir(local)
        if previous["batch_id"] is not None:
            for i in range(max(0, previous["batch_id"] - 100), previous["batch_id"]):
                stale = self._commit_path(i)
                if self.fs.get_file_info(stale).type == pafs.FileType.File:
                    self.fs.delete_file(stale)

    def _record(self, batch_id: int, stats: Row, watermark: int | None,
                written: dict[str, int], duration_ms: int) -> None:
        mark = _iso(watermark)
        for name in DATASET_SCHEMAS:
            observed = {"rows_written": written[name]}
            if name == "malformed":
                observed = {"records": stats["records"], "malformed": stats["malformed"],
                            **observed}
            dropped = 0 if name == "malformed" else stats["late"]
            self.tracker.record(name, batch_id, input_rows=stats["records"],
                                dropped=dropped, watermark=mark, observed=observed,
                                duration_ms=duration_ms)
        self.tracker.save()


class _Clock:
    """Seconds spent in each step of a batch, for the log (``batch N took ...``)."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.steps: list[tuple[str, float]] = []

    def total_ms(self) -> int:
        return round((time.perf_counter() - self.started) * 1000)

    def mark(self, step: str) -> None:
        now = time.perf_counter()
        self.steps.append((step, now - self.last))
        self.last = now

    def __str__(self) -> str:
        return ", ".join(f"{step} {s:.2f}s" for step, s in self.steps)


def _iso(us: int | None) -> str | None:
    """Microseconds since the epoch as Spark writes a watermark: 2026-01-01T08:08:00.000Z."""
    if us is None:
        return None
    t = dt.datetime.fromtimestamp(us / 1e6, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


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
    the progress totals per dataset; raises JobError if the query failed.
    """
    check_broker(settings.kafka_bootstrap_servers)
    own_session = spark is None
    session = spark if spark is not None else build_session(settings)
    stop = stop or threading.Event()
    if own_session:
        _install_stop_handlers(stop)
    parquet = settings.sink == "parquet"
    tracker = ProgressTracker(settings.progress_dir if parquet else None,
                              trigger_s=None if settings.once else settings.trigger_seconds)
    settings.local_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="console-", dir=settings.local_dir))
    query: StreamingQuery | None = None
    try:
        checkpoint = settings.location(QUERY, checkpoint=True) if parquet else \
            str(scratch / "checkpoint")
        state = settings.location(f"{QUERY}_batches", checkpoint=True) if parquet else \
            str(scratch / "batches")
        batches = Batches(settings, state, settings.output_dir if parquet else None, tracker)
        batches.create()
        writer = (extract(session, settings).writeStream.queryName(QUERY)
                  .foreachBatch(batches).option("checkpointLocation", checkpoint))
        if settings.once:
            writer = writer.trigger(availableNow=True)
        else:
            writer = writer.trigger(processingTime=f"{settings.trigger_seconds} seconds")
        try:
            query = writer.start()
        except (Py4JJavaError, PySparkException) as exc:
            raise JobError(f"query {QUERY} could not start: {_short(exc)}") from None
        log.info("started %s from %s/%s (%s, window %s, watermark %s) -> %s: %s",
                 QUERY, settings.kafka_bootstrap_servers, settings.kafka_topic,
                 "once" if settings.once else f"every {settings.trigger_seconds:g}s",
                 settings.window, settings.watermark,
                 settings.output_dir if parquet else "console", ", ".join(DATASET_SCHEMAS))
        while query.isActive and not stop.is_set():
            try:
                query.awaitTermination(1)
            except (StreamingQueryException, Py4JJavaError) as exc:
                raise JobError(f"query {QUERY} failed: {_short(exc)}") from None
            failure = query.exception()
            if failure is not None:
                raise JobError(f"query {QUERY} failed: {_short(failure)}")
    finally:
        if query is not None:
            _stop_after_batch(query)
        if own_session:
            session.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    tracker.flush()
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
