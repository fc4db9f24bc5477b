"""The analytics package without a SparkSession: settings, CLI, schema, reader, progress."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel
from pyspark.sql import types as T

from analytics.cli import CLI, parse_settings
from analytics.progress import ProgressTracker
from analytics.reader import SCHEMAS, available, committed_files, read_windows
from analytics.schema import (
    EVENT_SCHEMA,
    allowed_values,
    default_values,
    required_fields,
    spark_schema,
)
from analytics.settings import Settings, env_name
from common.contract import EVENT_FIELDS, Location, TelemetryEvent

ROOT = Path(__file__).resolve().parent.parent
UTC = dt.UTC


# --- settings and the command line ------------------------------------------------------

def test_settings_defaults_and_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for field in Settings.model_fields:
        monkeypatch.delenv(env_name(field), raising=False)
    s = Settings()
    assert (s.output_dir, s.window, s.watermark, s.sink, s.once) == (
        "data/analytics", "1 minute", "2 minutes", "parquet", False)
    here = Path.cwd()
    assert s.location("vehicle_windows") == str(here / "data/analytics/vehicle_windows")
    assert s.location("road_windows", checkpoint=True) == str(
        here / "data/analytics/_checkpoints/road_windows")
    assert s.progress_dir == Path("data/analytics/_progress")
    remote = Settings(output_dir="s3a://bucket/fleet/", checkpoint_dir="hdfs://nn/ckpt")
    assert remote.location("malformed") == "s3a://bucket/fleet/malformed"
    assert remote.location("malformed", checkpoint=True) == "hdfs://nn/ckpt/malformed"
    assert remote.progress_dir is None
    assert Settings(output_dir=Path("/x/y")).output_dir == "/x/y"
    assert s.master is None and s.kafka_topic == "vehicle.telemetry.raw"
    assert {env_name(f) for f in ("output_dir", "window", "watermark", "master",
                                  "kafka_bootstrap_servers")} == {
        "ANALYTICS_OUTPUT_DIR", "ANALYTICS_WINDOW", "ANALYTICS_WATERMARK", "SPARK_MASTER",
        "KAFKA_BOOTSTRAP_SERVERS"}
    monkeypatch.setenv("ANALYTICS_WINDOW", "30s")
    monkeypatch.setenv("ANALYTICS_SPARK_CONF", "spark.a=1, spark.b = x=y")
    monkeypatch.setenv("SPARK_MASTER", "spark://h:7077")
    s = Settings()
    assert s.window == "30 seconds"
    assert s.spark_conf == {"spark.a": "1", "spark.b": "x=y"}
    assert s.master == "spark://h:7077"


@pytest.mark.parametrize(("field", "value", "var"), [
    ("window", "soon", "ANALYTICS_WINDOW"),
    ("window", "0 seconds", "ANALYTICS_WINDOW"),
    ("watermark", "2 fortnights", "ANALYTICS_WATERMARK"),
    ("starting_offsets", "yesterday", "ANALYTICS_STARTING_OFFSETS"),
    ("log_level", "LOUD", "ANALYTICS_LOG_LEVEL"),
    ("spark_conf", "novalue", "ANALYTICS_SPARK_CONF"),
])
def test_bad_values_name_the_variable(field: str, value: str, var: str) -> None:
    with pytest.raises(ValueError, match=var):
        Settings(**{field: value})


def test_every_setting_is_a_flag_and_flags_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    flags = [f for name in Settings.model_fields for f in CLI.flags[name]]
    assert len(flags) == len(set(flags)) == len(Settings.model_fields)  # one flag per setting
    monkeypatch.setenv("ANALYTICS_WATERMARK", "5 minutes")
    monkeypatch.setenv("ANALYTICS_OUTPUT_DIR", "/env/out")
    s = parse_settings(["--once", "--watermark", "90s", "--conf", "a=1", "--conf", "b=2",
                        "--sink", "console", "--master", "local[2]", "--trigger-seconds", "3"])
    assert (s.once, s.watermark, s.sink, s.master, s.trigger_seconds) == (
        True, "90 seconds", "console", "local[2]", 3.0)
    assert s.spark_conf == {"a": "1", "b": "2"}
    assert s.output_dir == "/env/out"


def test_a_bad_flag_exits_2_naming_variable_and_flag() -> None:
    proc = subprocess.run([sys.executable, "-m", "analytics", "--shuffle-partitions", "0",
                           "--window", "x"], capture_output=True, text=True, cwd=ROOT,
                          check=False)
    assert proc.returncode == 2
    assert "ANALYTICS_SHUFFLE_PARTITIONS / --shuffle-partitions" in proc.stderr
    assert "ANALYTICS_WINDOW must be a duration" in proc.stderr


# --- the schema derived from the model ----------------------------------------------------

def test_spark_schema_follows_the_model() -> None:
    assert tuple(EVENT_SCHEMA.fieldNames()) == EVENT_FIELDS
    types = {f.name: f.dataType for f in EVENT_SCHEMA.fields}
    assert types["timestamp"] == T.TimestampType()
    assert types["location"] == T.StructType([T.StructField("lat", T.DoubleType()),
                                              T.StructField("lon", T.DoubleType())])
    assert types["fault_codes"] == T.ArrayType(T.StringType())
    assert (types["speed_kmh"], types["engine_rpm"], types["speeding"], types["road_type"]) == (
        T.DoubleType(), T.LongType(), T.BooleanType(), T.StringType())
    assert tuple(EVENT_SCHEMA["location"].dataType.fieldNames()) == tuple(Location.model_fields)
    # every field's Spark type matches its Python type in the model
    python_type = {T.DoubleType(): float, T.LongType(): int, T.BooleanType(): bool,
                   T.StringType(): str}
    sample = TelemetryEvent(vehicle_id="X", timestamp=dt.datetime(2026, 1, 1, tzinfo=UTC),
                            location=Location(lat=0, lon=0), speed_kmh=1.5, engine_rpm=900,
                            gear=1, fuel_level_pct=50.0, road_type="urban", speed_limit_kmh=50,
                            speeding=False, rpm_over_redline=False)
    for name, spark in types.items():
        if spark in python_type:
            assert type(getattr(sample, name)) is python_type[spark], name


def test_schema_helpers() -> None:
    assert required_fields()[:5] == ["vehicle_id", "timestamp", "location", "location.lat",
                                     "location.lon"]
    assert "seq" not in required_fields() and "speeding" in required_fields()
    assert default_values()["fault_codes"] == [] and default_values()["odometer_km"] == 0.0
    allowed = allowed_values()
    assert allowed["road_type"] == ("urban", "rural", "highway")
    literals = {name: typing.get_args(f.annotation) for name, f in
                TelemetryEvent.model_fields.items() if typing.get_origin(f.annotation) is Literal}
    assert allowed == literals and len(literals) >= 1  # every enumerated field, no other


def test_a_field_without_a_spark_type_is_an_error() -> None:
    class Odd(BaseModel):
        blob: bytes | int

    with pytest.raises(TypeError, match="Odd.blob"):
        spark_schema(Odd)

    class Fine(BaseModel):
        when: dt.datetime | None = None
        tags: dict[str, float] = {}
        nested: list[Location] = []

    schema = spark_schema(Fine)
    assert schema["tags"].dataType == T.MapType(T.StringType(), T.DoubleType())
    assert isinstance(schema["nested"].dataType.elementType, T.StructType)


def test_the_aggregates_use_fields_of_the_model_and_the_reader_knows_the_columns() -> None:
    from analytics.transforms import (
        ROAD_WINDOW_COLUMNS,
        USED_EVENT_FIELDS,
        VEHICLE_WINDOW_COLUMNS,
    )

    assert set(USED_EVENT_FIELDS) <= set(EVENT_FIELDS)
    assert tuple(SCHEMAS["vehicle_windows"].names) == VEHICLE_WINDOW_COLUMNS
    assert tuple(SCHEMAS["road_windows"].names) == ROAD_WINDOW_COLUMNS


# --- the session settings ------------------------------------------------------------------

def test_session_conf_local_and_under_spark_submit(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    from analytics.job import CONNECTOR, JobError, session_conf

    jars = tmp_path / "jars"
    jars.mkdir()
    (jars / CONNECTOR).touch()
    (jars / "kafka-clients-3.9.2.jar").touch()
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    s = Settings(spark_jars_dir=jars, local_dir=tmp_path / "l",
                 spark_conf={"spark.sql.shuffle.partitions": "2"})
    conf = session_conf(s)
    assert conf["spark.master"] == "local[*]"
    assert sorted(Path(p).name for p in conf["spark.jars"].split(",")) == [
        "kafka-clients-3.9.2.jar", CONNECTOR]
    assert conf["spark.sql.shuffle.partitions"] == "2"  # --conf wins
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert "spark.jars.packages" not in conf
    # spark-submit already chose the master and the jars (--master, --jars)
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "1")
    conf = session_conf(s)
    assert "spark.master" not in conf and "spark.jars" not in conf
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT")
    with pytest.raises(JobError, match="ANALYTICS_SPARK_JARS_DIR"):
        session_conf(Settings(spark_jars_dir=tmp_path / "none"))


def test_the_connector_jars_are_fetched_at_the_pyspark_version() -> None:
    import pyspark

    from analytics.job import CONNECTOR, connector_jars

    names = {p.name for p in connector_jars(Settings().spark_jars_dir)}
    assert f"spark-sql-kafka-0-10_2.13-{pyspark.__version__}.jar" == CONNECTOR
    assert CONNECTOR in names


# --- the reader (pyarrow only) ------------------------------------------------------------

def _vehicle_table(rows: list[tuple]) -> pa.Table:
    cols = list(zip(*rows, strict=True)) if rows else [[] for _ in SCHEMAS["vehicle_windows"]]
    return pa.table(cols, schema=SCHEMAS["vehicle_windows"])


def _row(minute: int, vehicle: str, samples: int = 1) -> tuple:
    start = dt.datetime(2026, 1, 1, 8, minute, tzinfo=UTC)
    return (start, start + dt.timedelta(minutes=1), vehicle, samples, 10.0, 20.0, 0, 0, 1.0, 0.5)


def _sink_log(path: Path, entries: list[tuple[str, str]]) -> None:
    path.write_text("v1\n" + "\n".join(json.dumps(
        {"path": f"file:///elsewhere/run/vehicle_windows/{name}", "size": 1, "isDir": False,
         "modificationTime": 1, "blockReplication": 1, "blockSize": 1, "action": action})
        for name, action in entries))


def test_reader_reads_only_committed_files(tmp_path: Path) -> None:
    out = tmp_path / "analytics"
    ds = out / "vehicle_windows"
    meta = ds / "_spark_metadata"
    meta.mkdir(parents=True)
    assert read_windows(out, "vehicle_windows").num_rows == 0
    assert not available(out, "vehicle_windows")
    files = {n: f"part-0000{n}-x.c000.snappy.parquet" for n in range(5)}
    pq.write_table(_vehicle_table([_row(0, "A"), _row(0, "B")]), ds / files[0])
    pq.write_table(_vehicle_table([]), ds / files[1])  # an empty batch: schema only
    pq.write_table(_vehicle_table([_row(1, "A", 3)]), ds / files[2])
    pq.write_table(_vehicle_table([_row(2, "B")]), ds / files[3])
    pq.write_table(_vehicle_table([_row(9, "GHOST")]), ds / files[4])  # never committed
    # batches 0..1 compacted into 1.compact, then batch 2; an old batch file left over
    _sink_log(meta / "0", [(files[0], "add")])
    _sink_log(meta / "1.compact", [(files[0], "add"), (files[1], "add")])
    _sink_log(meta / "2", [(files[2], "add"), (files[3], "add")])
    (meta / ".3.tmp").write_text("v1\n")  # a batch being written

    assert [p.name for p in committed_files(ds)] == [files[i] for i in range(4)]
    table = read_windows(out, "vehicle_windows")
    assert table.schema == SCHEMAS["vehicle_windows"]
    assert [(r["window_start"].minute, r["vehicle_id"]) for r in table.to_pylist()] == [
        (2, "B"), (1, "A"), (0, "A"), (0, "B")]
    assert read_windows(out, "vehicle_windows", vehicle_ids=["A"], limit=1).to_pylist()[0][
        "samples"] == 3
    since = dt.datetime(2026, 1, 1, 8, 1, tzinfo=UTC)
    assert read_windows(out, "vehicle_windows", since=since).num_rows == 2
    _sink_log(meta / "3", [(files[3], "delete")])
    assert [p.name for p in committed_files(ds)] == [files[i] for i in range(3)]
    assert available(out, "vehicle_windows")


def test_reader_without_sink_log_reads_part_files(tmp_path: Path) -> None:
    ds = tmp_path / "vehicle_windows"
    ds.mkdir()
    pq.write_table(_vehicle_table([_row(0, "A")]), ds / "part-00000-a.parquet")
    (ds / "_SUCCESS").touch()
    assert read_windows(tmp_path, "vehicle_windows").num_rows == 1
    assert read_windows(tmp_path, "road_windows").schema == SCHEMAS["road_windows"]


def _day_row(day: int, minute: int, vehicle: str, samples: int = 1) -> tuple:
    start = dt.datetime(2026, 1, day, 23, minute, tzinfo=UTC)
    return (start, start + dt.timedelta(minutes=1), vehicle, samples, 10.0, 20.0, 0, 0, 1.0, 0.5)


def _rows(out: Path) -> list[tuple]:
    return sorted((r["window_start"], r["vehicle_id"], r["samples"])
                  for r in read_windows(out, "vehicle_windows").to_pylist())


def test_batches_commit_once_by_batch_id_and_the_reader_follows_the_log(tmp_path: Path) -> None:
    from analytics.compaction import Dataset

    ds = Dataset(str(tmp_path / "vehicle_windows"), "vehicle_windows", SCHEMAS["vehicle_windows"])
    ds.create()
    assert read_windows(tmp_path, "vehicle_windows").num_rows == 0
    assert not available(tmp_path, "vehicle_windows") and not ds.committed(0)
    # batch 0 holds windows of two days: one file per day
    names = ds.write_batch(0, _vehicle_table([_day_row(1, 58, "A"), _day_row(2, 1, "A")]))
    assert names == [f"part-b{0:020d}-d2026-01-01.parquet", f"part-b{0:020d}-d2026-01-02.parquet"]
    assert ds.committed(0) and len(_rows(tmp_path)) == 2
    # a file nobody committed (a batch being written, a crashed attempt) is not read
    pq.write_table(_vehicle_table([_day_row(2, 9, "GHOST")]),
                   tmp_path / "vehicle_windows" / f"part-b{1:020d}-d2026-01-02.parquet")
    (tmp_path / "vehicle_windows" / "_commits" / f".{1:020d}.json.x.tmp").write_text("{")
    assert [r[1] for r in _rows(tmp_path)] == ["A", "A"]
    # batch 0 written again (redone after a crash before the job's commit): no duplicate
    ds.write_batch(0, _vehicle_table([_day_row(1, 58, "A"), _day_row(2, 1, "A")]))
    assert len(_rows(tmp_path)) == 2
    ds.write_batch(1, _vehicle_table([]))  # a batch that closed no window
    assert ds.committed(1) and len(committed_files(tmp_path / "vehicle_windows")) == 2


def test_compaction_rewrites_each_day_into_one_file_and_readers_never_see_half(
        tmp_path: Path) -> None:
    from analytics.compaction import Dataset

    folder = tmp_path / "vehicle_windows"
    ds = Dataset(str(folder), "vehicle_windows", SCHEMAS["vehicle_windows"])
    ds.create()
    for batch in range(4):
        ds.write_batch(batch, _vehicle_table([_day_row(1, 50 + batch, "A", batch),
                                              _day_row(2, batch, "B", batch)]))
    before = _rows(tmp_path)
    assert len(before) == 8 and len(committed_files(folder)) == 8
    assert ds.compact(3, min_files=9) == 0  # not yet
    assert ds.compact(3, min_files=8) == 8
    live = [p.name for p in committed_files(folder)]
    assert live == [f"compact-c{3:020d}-d2026-01-01.parquet",
                    f"compact-c{3:020d}-d2026-01-02.parquet"]
    assert _rows(tmp_path) == before
    replaced = sorted(p.name for p in folder.glob("part-*.parquet"))
    assert len(replaced) == 8  # still there for a reader that listed the log just before
    # more batches, then a second compaction: today's new files join today's compacted one;
    # the files the first compaction replaced, and the log before it, are deleted now
    for batch in (4, 5):
        ds.write_batch(batch, _vehicle_table([_day_row(2, 10 + batch, "C")]))
    assert _rows(tmp_path) == sorted([*before, *[(r[0], r[2], r[3]) for r in (
        _day_row(2, 14, "C"), _day_row(2, 15, "C"))]])
    after = _rows(tmp_path)
    assert ds.compact(5, min_files=2) == 3
    assert [p.name for p in committed_files(folder)] == [
        f"compact-c{3:020d}-d2026-01-01.parquet", f"compact-c{5:020d}-d2026-01-02.parquet"]
    assert _rows(tmp_path) == after
    assert sorted(p.name for p in folder.glob("*.parquet")) == [  # this round's stay a while
        f"compact-c{3:020d}-d2026-01-01.parquet", f"compact-c{3:020d}-d2026-01-02.parquet",
        f"compact-c{5:020d}-d2026-01-02.parquet", f"part-b{4:020d}-d2026-01-02.parquet",
        f"part-b{5:020d}-d2026-01-02.parquet"]
    assert sorted(p.name for p in (folder / "_commits").iterdir()) == [
        f"{3:020d}.compact.json", f"{4:020d}.json", f"{5:020d}.compact.json", f"{5:020d}.json"]
    table = pq.read_table(folder / f"compact-c{5:020d}-d2026-01-02.parquet")
    assert table.schema == SCHEMAS["vehicle_windows"] and table.num_rows == 6


def test_the_reader_does_not_import_pyspark() -> None:
    code = ("import sys, analytics.reader; "
            "sys.exit(any(m.startswith('pyspark') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


# --- progress totals ----------------------------------------------------------------------

def _progress(batch: int, ts: str, rows: int, dropped: int, **observed: int) -> dict:
    return {"name": "vehicle_windows", "id": "q", "batchId": batch, "timestamp": ts,
            "numInputRows": rows, "durationMs": {"addBatch": 5, "triggerExecution": 9},
            "stateOperators": [{"numRowsDroppedByWatermark": dropped}],
            "eventTime": {"watermark": "2026-01-01T08:08:00.000Z"},
            "observedMetrics": {"written": observed} if observed else {}}


def test_progress_totals_are_summed_once_and_saved(tmp_path: Path) -> None:
    tracker = ProgressTracker(tmp_path / "_progress")
    assert tracker.consume(_progress(0, "2026-11-27T07:00:00.000Z", 10, 0, rows_written=2))
    assert not tracker.consume(_progress(0, "2026-11-27T07:00:00.000Z", 10, 0))  # seen
    idle = {**_progress(1, "2026-11-27T07:00:05.000Z", 0, 0), "durationMs": {}}
    assert tracker.consume(idle)
    assert tracker.consume(_progress(1, "2026-11-27T07:00:09.000Z", 4, 2, rows_written=1))
    totals = tracker.totals["vehicle_windows"]
    assert (totals["batches"], totals["input_rows"], totals["rows_dropped_by_watermark"]) == (
        2, 14, 2)
    assert totals["observed"] == {"rows_written": 3}
    tracker.save()
    again = ProgressTracker(tmp_path / "_progress")  # a restart continues the totals
    assert again.totals["vehicle_windows"]["input_rows"] == 14
    assert json.loads((tmp_path / "_progress" / "vehicle_windows.json").read_text())[
        "last"]["watermark"] == "2026-01-01T08:08:00.000Z"


def test_progress_is_logged_once_a_minute_not_per_batch(caplog) -> None:
    """At the events job's 1 s trigger a line per batch was most of `make run`'s output: the
    first batch is logged, then one line for the batches of each minute, then the rest at
    the end, saying how many took longer than the trigger."""
    tracker = ProgressTracker(None, summary_s=60.0, trigger_s=1.0)
    caplog.set_level(logging.INFO, logger="analytics")
    for i in range(5):
        tracker.consume(_progress(i, f"2026-11-27T07:00:0{i}.000Z", 10, 0, derived_events=1)
                        | {"durationMs": {"addBatch": 5, "triggerExecution": 900 + 300 * i}})
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert lines == ["vehicle_windows batch 0: 10 records in, 0 dropped late (total 0), "
                     "derived_events 1, longest 0.9s, watermark 2026-01-01T08:08:00.000Z"]
    tracker.flush()
    tracker.flush()  # nothing new: no line
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert lines[1:] == [
        "vehicle_windows batches 1-4: 40 records in, 0 dropped late (total 0), "
        "derived_events 4, longest 2.1s (4 of 4 longer than the 1s trigger: falling behind), "
        "watermark 2026-01-01T08:08:00.000Z"]
    assert tracker.totals["vehicle_windows"]["batches"] == 5


# --- spark-submit ---------------------------------------------------------------------------

@pytest.mark.spark
def test_job_py_runs_under_spark_submit(tmp_path: Path) -> None:
    """`spark-submit analytics/job.py` finds the package and parses the same flags."""
    spark_submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable}
    proc = subprocess.run([str(spark_submit), "--master", "local[1]",
                           "--conf", f"spark.local.dir={tmp_path}",
                           str(ROOT / "analytics" / "job.py"), "--help"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, check=False,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--watermark" in proc.stdout and "ANALYTICS_OUTPUT_DIR" in proc.stdout


def test_no_broker_is_a_clear_error_before_spark_starts() -> None:
    from analytics.job import JobError, check_broker

    with pytest.raises(JobError, match="KAFKA_BOOTSTRAP_SERVERS"):
        check_broker("127.0.0.1:1", timeout=1)
    proc = subprocess.run([sys.executable, "-m", "analytics", "--once",
                           "--bootstrap-servers", "127.0.0.1:1"], capture_output=True,
                          text=True, cwd=ROOT, check=False, timeout=60)
    assert proc.returncode == 1
    assert "no Kafka broker reachable at 127.0.0.1:1" in proc.stderr


def test_field_bounds_carry_every_limit_of_the_contract() -> None:
    from pydantic import WrapValidator

    from analytics.schema import field_bounds
    from common.contract import (
        MAX_FAULT_CODE_LEN,
        MAX_FAULT_CODES,
        MAX_VEHICLE_ID_LEN,
        TelemetryEvent,
        iso_8601,
    )

    b = {x.path: x for x in field_bounds()}
    assert (b["speed_kmh"].ge, b["speed_kmh"].le) == (0, 400)
    assert (b["heading_deg"].ge, b["heading_deg"].lt) == (0, 360)
    assert (b["location.lat"].ge, b["location.lat"].le) == (-90, 90)
    assert b["vehicle_id"].printable and b["trip_id"].printable
    assert (b["vehicle_id"].min_len, b["vehicle_id"].max_len) == (1, MAX_VEHICLE_ID_LEN)
    items = b["fault_codes"].items
    assert b["fault_codes"].max_len == MAX_FAULT_CODES
    assert items is not None and items.printable and items.max_len == MAX_FAULT_CODE_LEN
    constrained = {n for n, f in TelemetryEvent.model_fields.items() if f.metadata}
    # the timestamp's one rule (ISO 8601) is the job's _event_time (test_analytics_spark)
    [iso] = TelemetryEvent.model_fields["timestamp"].metadata
    assert isinstance(iso, WrapValidator) and iso.func is iso_8601
    assert constrained - {"timestamp"} | {"location.lat", "location.lon"} == set(b)
