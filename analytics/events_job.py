"""The events job: telemetry -> per-vehicle state (trips, geofences, alerts) -> fleetstream.events.

Extract (the Kafka telemetry topic) -> parse (analytics.transforms, the schema derived from
the contract) -> ``groupBy(vehicle_id).transformWithStateInPandas`` with
:class:`EventsProcessor` (the pure state machine of analytics.events_state, its state in the
RocksDB state store, checkpointed) -> the Kafka sink (key = vehicle id, value = the derived
event's JSON, common.fleet_events).

Delivery: at least once. A micro-batch whose output was written but not yet committed in the
checkpoint is written again after a restart, with the same ``event_id``s (they are uuid5 of
what the event is about, not random), so consumers deduplicate by ``event_id``. Stopping the
job on purpose (SIGTERM, Ctrl-C) lets the running batch finish first: no duplicates then.

Runs as ``python -m analytics.events`` or ``spark-submit ... analytics/events_job.py`` (same
flags); geofences and alert rules are read from their compacted topics (analytics.events_config).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException, StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StatefulProcessor, StatefulProcessorHandle, StreamingQuery
from pyspark.sql.streaming.stateful_processor import ExpiredTimerInfo, TimerValues

from analytics.events_config import DefinitionsSource, definitions
from analytics.events_state import (
    TELEMETRY_FIELDS,
    Params,
    VehicleState,
    next_silent_check,
    process,
    silent_due,
)
from analytics.gateway import open_session
from analytics.job import (
    JobError,
    _install_stop_handlers,
    _short,
    check_broker,
    extract,
    run_as_process,
    session_conf,
)
from analytics.progress import ProgressTracker
from analytics.settings import EventsSettings
from analytics.transforms import parse, valid_events
from common.kafka import TopicSpec, ensure_topics

log = logging.getLogger("analytics.events")

QUERY = "fleet_events"
STATE_STORE = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
OUTPUT_SCHEMA = "key string, value string"


def _input_columns() -> list[Any]:
    """valid_events -> the Telemetry fields, in their order (timestamp as UTC microseconds)."""
    cols = {"ts_us": F.unix_micros("timestamp"), "lat": F.col("location.lat"),
            "lon": F.col("location.lon")}
    return [F.col("vehicle_id"), *[cols.get(name, F.col(name)).alias(name)
                                   for name in TELEMETRY_FIELDS]]


class EventsProcessor(StatefulProcessor):
    """One vehicle's state (a JSON ValueState) and its ``silent`` timer, around
    analytics.events_state. Instantiated on the workers, per partition and batch."""

    def __init__(self, source: DefinitionsSource, params: Params) -> None:
        self.source = source
        self.params = params

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.handle = handle
        self.vehicle = handle.getValueState("vehicle", "json string")
        self.defs = definitions(self.source)

    def _load(self) -> VehicleState:
        stored = self.vehicle.get()  # None when there is none (one call, not two)
        return VehicleState.from_json(stored[0] if stored else None)

    def _save(self, state: VehicleState, due: int | None) -> None:
        if due is not None and (state.timer_ms is None or due < state.timer_ms):
            if state.timer_ms is not None:
                self.handle.deleteTimer(state.timer_ms)
            self.handle.registerTimer(due)
            state.timer_ms = due
        self.vehicle.update((state.to_json(),))

    @staticmethod
    def _frame(vid: str, out: list[Any]) -> pd.DataFrame:
        return pd.DataFrame({"key": [vid] * len(out), "value": [m.model_dump_json() for m in out]})

    def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame],  # noqa: N802 (Spark's)
                        timerValues: TimerValues) -> Iterator[pd.DataFrame]:  # noqa: N803
        vid = key[0]
        frames = list(rows)
        batch = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        state = self._load()
        now = timerValues.getCurrentProcessingTimeInMs()
        rows = zip(*(batch[name].tolist() for name in TELEMETRY_FIELDS), strict=True)
        out = process(vid, state, rows, self.params, self.defs, wall_ms=now)
        self._save(state, next_silent_check(state, self.defs))
        if out:
            yield self._frame(vid, out)

    def handleExpiredTimer(self, key: Any, timerValues: TimerValues,  # noqa: N802, N803
                           expiredTimerInfo: ExpiredTimerInfo) -> Iterator[pd.DataFrame]:  # noqa: N803
        vid = key[0]
        state = self._load()
        state.timer_ms = None  # this one fired (Spark removes it)
        out, due = silent_due(vid, state, timerValues.getCurrentProcessingTimeInMs(), self.defs)
        self._save(state, due)
        if out:
            yield self._frame(vid, out)

    def close(self) -> None:
        pass


def params_of(settings: EventsSettings) -> Params:
    return Params(trip_end_stop_s=settings.trip_end_stop_s, moving_kmh=settings.moving_kmh)


def source_of(settings: EventsSettings) -> DefinitionsSource:
    return DefinitionsSource(settings.kafka_bootstrap_servers, settings.geofences_topic,
                             settings.alert_rules_topic)


def events_session_conf(settings: EventsSettings) -> dict[str, str]:
    """The analytics job's session settings, plus the RocksDB state store (which
    transformWithStateInPandas needs); the user's ``--conf`` still wins."""
    conf = session_conf(settings)  # type: ignore[arg-type]  # same field names
    conf["spark.app.name"] = "fleetstream-events"
    conf["spark.sql.streaming.stateStore.providerClass"] = STATE_STORE
    conf.update(settings.spark_conf)
    return conf


def build_session(settings: EventsSettings) -> SparkSession:
    settings.local_dir.mkdir(parents=True, exist_ok=True)
    return open_session(events_session_conf(settings))


def topics(settings: EventsSettings) -> list[TopicSpec]:
    """The topics the job writes or reads as data (created if missing, existing ones kept)."""
    return [TopicSpec(settings.events_topic, partitions=settings.events_partitions),
            TopicSpec.compacted(settings.geofences_topic),
            TopicSpec.compacted(settings.alert_rules_topic)]


def derive(raw: DataFrame, settings: EventsSettings) -> DataFrame:
    """Kafka telemetry records -> derived events as Kafka records (key, value)."""
    parsed = parse(raw, max_future_s=settings.max_event_future_s).observe(
        "parse", F.count(F.lit(1)).alias("records"),
        F.count_if(F.col("reason").isNotNull()).alias("malformed"))
    events = valid_events(parsed).select(*_input_columns())
    derived = events.groupBy("vehicle_id").transformWithStateInPandas(
        statefulProcessor=EventsProcessor(source_of(settings), params_of(settings)),
        outputStructType=OUTPUT_SCHEMA, outputMode="Append", timeMode="ProcessingTime")
    return derived.observe("derived", F.count(F.lit(1)).alias("derived_events"))


def load(df: DataFrame, settings: EventsSettings) -> StreamingQuery:
    writer = (df.writeStream.queryName(QUERY).outputMode("append").format("kafka")
              .option("kafka.bootstrap.servers", settings.kafka_bootstrap_servers)
              .option("topic", settings.events_topic)
              .option("kafka.linger.ms", "0")
              .option("checkpointLocation", settings.checkpoint))
    # Never availableNow: with processing-time timers (the silent rule) Spark runs a batch at
    # every trigger even without data, so availableNow would not end; ``once`` stops the
    # query when it has caught up instead (see run).
    return writer.trigger(processingTime=f"{settings.trigger_seconds} seconds").start()


def start(settings: EventsSettings, spark: SparkSession) -> StreamingQuery:
    """Create the topics if missing and start the query (the caller stops it)."""
    check_broker(settings.kafka_bootstrap_servers)
    asyncio.run(ensure_topics(settings.kafka_bootstrap_servers, topics(settings)))
    if spark.conf.get("spark.sql.streaming.stateStore.providerClass", None) != STATE_STORE:
        spark.conf.set("spark.sql.streaming.stateStore.providerClass", STATE_STORE)
    try:
        return load(derive(extract(spark, settings), settings), settings)
    except (Py4JJavaError, PySparkException) as exc:
        raise JobError(f"query {QUERY} could not start: {_short(exc)}") from None


def run(settings: EventsSettings, spark: SparkSession | None = None,
        stop: threading.Event | None = None) -> dict[str, Any]:
    """Run until the backlog is done (``once``) or until ``stop``/SIGTERM/SIGINT; returns the
    progress totals (observed: records, malformed, derived_events); JobError on failure."""
    own_session = spark is None
    session = spark if spark is not None else build_session(settings)
    stop = stop or threading.Event()
    if own_session:
        _install_stop_handlers(stop)
    tracker = ProgressTracker(None, trigger_s=None if settings.once else settings.trigger_seconds)
    query: StreamingQuery | None = None
    try:
        query = start(settings, session)
        log.info("started %s from %s/%s (%s) -> %s, checkpoint %s", QUERY,
                 settings.kafka_bootstrap_servers, settings.kafka_topic,
                 "once" if settings.once else f"every {settings.trigger_seconds:g}s",
                 settings.events_topic, settings.checkpoint)
        while query.isActive and not stop.is_set() and not (settings.once and caught_up(query)):
            try:
                query.awaitTermination(1)
            except (StreamingQueryException, Py4JJavaError) as exc:
                raise JobError(f"query {QUERY} failed: {_short(exc)}") from None
            tracker.poll([query])
            failure = query.exception()
            if failure is not None:
                raise JobError(f"query {QUERY} failed: {_short(failure)}")
    finally:
        if query is not None:
            stop_gracefully(query)
            tracker.poll([query])
            tracker.flush()
        if own_session:
            session.stop()
    return tracker.totals.get(QUERY, {})


def run_main(settings: EventsSettings) -> int:
    return run_as_process(run, settings, log)


def _offsets(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def caught_up(query: StreamingQuery) -> bool:
    """The last batch read nothing and its sources had nothing newer (its latest offsets)."""
    last = query.lastProgress
    if last is None or last["numInputRows"] != 0:
        return False
    log.debug("caught up? %s", [(s["endOffset"], s["latestOffset"]) for s in last["sources"]])
    return all(_offsets(src["latestOffset"]) in (None, _offsets(src["endOffset"]))
               for src in last["sources"])


def stop_gracefully(query: StreamingQuery, wait_s: float = 60.0) -> None:
    """Stop ``query`` between batches, so no output is written twice after a restart.

    "Between batches" is when the query waits for its next trigger; a query whose batches
    take longer than the trigger interval never does, so a finished batch that left it
    caught up is taken as well (what follows reads no data). After ``wait_s`` it is stopped
    anyway: a batch cut short is run again after a restart, and what it had written already
    is written again with the same event ids (at least once).
    """
    deadline = time.monotonic() + wait_s
    seen = query.lastProgress["batchId"] if query.lastProgress is not None else None
    while query.isActive and time.monotonic() < deadline:
        if str(query.status.get("message", "")).startswith("Waiting"):  # for the next trigger
            break
        last = query.lastProgress
        if last is not None and last["batchId"] != seen and caught_up(query):
            break
        time.sleep(0.05)
    if query.isActive:
        query.stop()


def wait_idle(query: StreamingQuery, timeout_s: float = 120.0) -> None:
    """Until :func:`caught_up` (tests, benchmarks)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if caught_up(query):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{QUERY} still busy after {timeout_s:.0f}s")


if __name__ == "__main__":  # spark-submit analytics/events_job.py [flags]
    from analytics.cli import EVENTS_CLI

    sys.exit(run_main(EVENTS_CLI.parse()))
