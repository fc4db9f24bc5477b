"""The Spark job: transforms on batch DataFrames, the schema against the model, and the job
end to end over the real broker (one SparkSession, local[2], for the whole module)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from analytics.reader import committed_files, read_windows
from analytics.settings import Settings
from common.contract import Location, TelemetryEvent, read_event

pytestmark = pytest.mark.spark

UTC = dt.UTC


def at(minute: int, second: int = 0) -> dt.datetime:
    return dt.datetime(2026, 1, 1, 8, minute, second, tzinfo=UTC)


def event(vehicle: str, ts: dt.datetime, speed: float, fuel: float, odo: float, seq: int, *,
          road: str = "urban", speeding: bool = False, redline: bool = False) -> TelemetryEvent:
    return TelemetryEvent(
        vehicle_id=vehicle, timestamp=ts, location=Location(lat=48.1, lon=11.5),
        speed_kmh=speed, engine_rpm=6500 if redline else 2500, gear=3, fuel_level_pct=fuel,
        road_type=road, speed_limit_kmh=50, speeding=speeding, rpm_over_redline=redline,
        seq=seq, odometer_km=odo)


# Two cars over two 1-minute windows; CAR-A refuels at 08:00:35 (49.5 -> 80).
EVENTS = [
    event("CAR-A", at(0, 5), 30.0, 50.0, 100.0, 0),
    event("CAR-A", at(0, 20), 60.0, 49.5, 100.25, 1, speeding=True),
    event("CAR-A", at(0, 35), 90.0, 80.0, 100.5, 2, redline=True),
    event("CAR-A", at(0, 50), 20.0, 79.0, 100.75, 3),
    event("CAR-A", at(1, 10), 40.0, 78.5, 101.0, 4),
    event("CAR-B", at(0, 45), 130.0, 29.75, 10.5, 1, road="highway", speeding=True),
    event("CAR-B", at(0, 30), 100.0, 30.0, 10.0, 0, road="highway"),  # out of order
    event("CAR-B", at(1, 30), 120.0, 29.5, 11.0, 2, road="rural"),
]
# window_start, vehicle, samples, avg, max, speeding, redline, distance_km, fuel_used_pct
VEHICLE_ROWS = [
    (at(0), "CAR-A", 4, 50.0, 90.0, 1, 1, 0.75, 1.5),  # fuel: 0.5 + (refuel) + 1.0
    (at(1), "CAR-A", 1, 40.0, 40.0, 0, 0, 0.0, 0.0),
    (at(0), "CAR-B", 2, 115.0, 130.0, 1, 0, 0.5, 0.25),
    (at(1), "CAR-B", 1, 120.0, 120.0, 0, 0, 0.0, 0.0),
]
# window_start, road_type, samples, vehicles, avg, max, speeding, redline
ROAD_ROWS = [
    (at(0), "urban", 4, 1, 50.0, 90.0, 1, 1),
    (at(0), "highway", 2, 1, 115.0, 130.0, 1, 0),
    (at(1), "urban", 1, 1, 40.0, 40.0, 0, 0),
    (at(1), "rural", 1, 1, 120.0, 120.0, 0, 0),
]
MALFORMED = [
    (b"not json", "not a JSON object"),
    (b"[1, 2]", "not a JSON object"),
    (b"", "empty value"),
    (b'{"vehicle_id": "CAR-X"}', "missing required field: timestamp, location, speed_kmh, "
     "engine_rpm, gear, fuel_level_pct, road_type, speed_limit_kmh, speeding, rpm_over_redline"),
]


def malformed_json() -> list[tuple[bytes, str]]:
    good = EVENTS[0].model_dump(mode="json")
    wrong = orjson.dumps({**good, "speed_kmh": "fast", "location": {"lat": "x", "lon": 1}})
    no_lat = orjson.dumps({**good, "location": {"lon": 1.0}})
    bad_road = orjson.dumps({**good, "road_type": "offroad"})
    nan = orjson.dumps(good).replace(b'"speed_kmh":30.0', b'"speed_kmh":NaN')
    inf = orjson.dumps(good).replace(b'"odometer_km":100.0', b'"odometer_km":-Infinity')
    assert nan != orjson.dumps(good) and inf != orjson.dumps(good)
    far = orjson.dumps({**good, "location": {"lat": 91.0, "lon": 11.5}, "heading_deg": 360.0})
    bell = orjson.dumps({**good, "vehicle_id": "CAR\u0007A", "trip_id": "t" * 65})
    faults = orjson.dumps({**good, "fault_codes": ["P0300"] * 33})
    fault_text = orjson.dumps({**good, "fault_codes": ["P0300", "P\u200b1"]})
    # one such event would move the watermark to 9999 and drop every later one as late
    future = orjson.dumps({**good, "timestamp": "9999-12-31T23:59:59.999999Z"})
    # from_json would take the first as UTC and the second as seconds since the epoch
    naive = orjson.dumps({**good, "timestamp": "2026-01-01T08:00:00"})
    number = orjson.dumps({**good, "timestamp": 1767254400})
    return [*MALFORMED,
            (wrong, "wrong type: location.lat, speed_kmh"),
            (no_lat, "missing required field: location.lat"),
            (bad_road, "value not allowed: road_type"),
            (nan, "out of range: speed_kmh"),
            (inf, "out of range: odometer_km"),
            (far, "out of range: location.lat, heading_deg"),
            (bell, "out of range: vehicle_id, trip_id"),
            (faults, "out of range: fault_codes"),
            (fault_text, "out of range: fault_codes"),
            (future, "in the future: timestamp"),
            (naive, "wrong type: timestamp"),
            (number, "wrong type: timestamp")]


def with_window(rows: list[tuple]) -> list[tuple]:
    return [(r[0], r[0] + dt.timedelta(minutes=1), *r[1:]) for r in rows]


VEHICLE_DDL = ("window_start timestamp, window_end timestamp, vehicle_id string, samples long, "
               "avg_speed_kmh double, max_speed_kmh double, speeding_count long, "
               "redline_count long, distance_km double, fuel_used_pct double")
ROAD_DDL = ("window_start timestamp, window_end timestamp, road_type string, samples long, "
            "vehicles long, avg_speed_kmh double, max_speed_kmh double, speeding_count long, "
            "redline_count long")


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    from analytics.job import build_session

    settings = Settings(master="local[2]", shuffle_partitions=4,
                        local_dir=tmp_path_factory.mktemp("spark-local"),
                        spark_conf={"spark.ui.enabled": "false", "spark.driver.memory": "1g"})
    session = build_session(settings)
    yield session
    session.stop()


def kafka_frame(spark: SparkSession, values: list[bytes],
                record_time: dt.datetime = dt.datetime(2026, 6, 1, tzinfo=UTC)) -> DataFrame:
    """A batch DataFrame shaped like the Kafka source's rows, each sent at ``record_time``
    (after every event of this file, none of which is then in the future)."""
    rows = [(b"k", v, "t", 0, i, record_time) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, "key binary, value binary, topic string, partition int, "
                                       "offset long, timestamp timestamp")


def test_transform_aggregates_exactly(spark: SparkSession) -> None:
    from analytics.transforms import parse, transform, valid_events

    raw = kafka_frame(spark, [e.model_dump_json().encode() for e in EVENTS])
    vehicles, roads = transform(valid_events(parse(raw)), "1 minute")
    assertDataFrameEqual(vehicles, spark.createDataFrame(with_window(VEHICLE_ROWS), VEHICLE_DDL))
    assertDataFrameEqual(roads, spark.createDataFrame(with_window(ROAD_ROWS), ROAD_DDL))


def test_watermark_is_a_no_op_on_a_batch_and_windows_are_configurable(spark) -> None:
    from analytics.transforms import parse, transform, valid_events

    events = valid_events(parse(kafka_frame(spark, [e.model_dump_json().encode()
                                                    for e in EVENTS])))
    vehicles, roads = transform(events, "2 minutes", "1 minute")
    got = {(r.vehicle_id, r.samples, r.distance_km, r.fuel_used_pct) for r in vehicles.collect()}
    assert got == {("CAR-A", 5, 1.0, 2.0), ("CAR-B", 3, 1.0, 0.5)}
    assert {(r.road_type, r.samples) for r in roads.collect()} == {
        ("urban", 5), ("highway", 2), ("rural", 1)}


def test_malformed_records_are_set_aside_with_a_reason(spark: SparkSession) -> None:
    from analytics.transforms import MALFORMED_COLUMNS, malformed_records, parse, valid_events

    cases = malformed_json()
    parsed = parse(kafka_frame(spark, [EVENTS[0].model_dump_json().encode()]
                               + [v for v, _ in cases]))
    bad = malformed_records(parsed)
    assert tuple(bad.columns) == MALFORMED_COLUMNS
    got = sorted((r.offset, r.value, r.reason) for r in bad.collect())
    assert got == [(i + 1, v.decode(), why) for i, (v, why) in enumerate(cases)]
    assert valid_events(parsed).count() == 1


EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
TIMESTAMPS = [
    "2026-01-01T08:00:00+00:00", "2026-01-01T08:00:00.123456+00:00", "2026-01-01 08:00:00Z",
    "2026-01-01T08:00:00.123456789+00:00", "2026-01-01T08:00Z", "2026-01-01t08:00:00z",
    "2026-01-01T08:00:00+0100", "2026-01-01T08:00:00,5Z", "2026-01-01T08:00+05:30",
    "2026-01-01T08:00:00-00:00",
    # refused by the contract: no offset, a date alone, a short offset, no such time or date,
    # spaces, unpadded fields, a signed year, numbers (strings of digits too), other JSON types
    "2026-01-01T08:00:00", "2026-01-01", "2026-01-01T08:00:00+01", "2026-01-01T24:00:00Z",
    "2026-02-30T08:00:00Z", "2026-01-01T08:00:60Z", "2026-01-01T08:00:00 +00:00",
    " 2026-01-01T08:00:00Z", "2026-1-1T8:0:0Z", "+2026-01-01T08:00:00Z", 1767254400,
    "0000-01-01T00:00:00+00:00", "0000-01-01t00:00z", "0001-01-01T00:00:00+00:00",
    1767254400.5, True, {"a": 1}, [1], "1767254400", "1767254400.5", "20000000001", "-5",
]


def test_the_job_reads_a_timestamp_as_the_contract_does(spark: SparkSession) -> None:
    """Every spelling is read to the same instant as the contract's model reads it (strict, as
    the web API validates), or refused by both. Spark's own reader would have taken a time
    without an offset as UTC, and a number as seconds since the epoch."""
    from pyspark.sql import functions as F

    from analytics.transforms import parse

    good = EVENTS[0].model_dump(mode="json")
    values = [orjson.dumps({**good, "timestamp": t}) for t in TIMESTAMPS]
    contract: list[object] = []
    for v in values:
        try:
            ts = read_event(v).timestamp
            contract.append((ts - EPOCH) // dt.timedelta(microseconds=1))
        except ValueError:
            contract.append("refused")
    got = parse(kafka_frame(spark, values)).orderBy("offset").select(
        F.unix_micros("event.timestamp").alias("us"), "reason").collect()
    job = [r["us"] if r["reason"] is None else "refused" for r in got]
    assert list(zip(TIMESTAMPS, job, strict=True)) == list(zip(TIMESTAMPS, contract, strict=True))
    assert "refused" in job and job.count("refused") < len(job)
    assert {r["reason"] for r in got} - {None} == {"wrong type: timestamp"}


STRING_FIELDS = [
    ("vehicle_id", [123, 1.5, -2e3, True, ["A"], {"a": 1}, "123", "true", "[A]", "{a}", "-1"]),
    ("trip_id", [1, False, "0", "f56892c1-5a31-52da", ' "x": 1 ']),
    ("road_type", [1, ["urban"]]),
    ("vehicle_type", [True, {"car": 1}]),
    ("fault_codes", [[1, 2], [True], ["P0300", 7], [["P0300"]], ["1"], ["P0300", "[x]"], [],
                     # a long string before a number: the record's pattern must not recurse
                     ["\\\"" * 100_000, 7], ["x" * 900_000, 7]]),
    # fields the contract lets a record omit, but not set to null (the default would be used)
    *[(name, [None]) for name in ("fault_codes", "seq", "heading_deg", "odometer_km",
                                  "trip_id", "schema_version", "ignition", "vehicle_type")],
]


def test_the_job_refuses_a_value_of_another_json_type_as_the_contract_does(
        spark: SparkSession) -> None:
    """``from_json`` keeps the text of any JSON value in a string field, so ``"vehicle_id":
    123`` would have been the vehicle "123", and reads ``null`` as an omitted field, whose
    default would be used. The contract (strict, as the web API validates) refuses both; so
    does the job, and strings that merely look like numbers stay valid."""
    from analytics.transforms import parse

    good = EVENTS[0].model_dump(mode="json")
    cases = [(name, v) for name, values in STRING_FIELDS for v in values]
    values = [orjson.dumps({**good, name: v}) for name, v in cases]
    values.append(orjson.dumps(good)[:-1] + b',"vehicle_id":5}')  # the last key wins
    contract = []
    for v in values:
        try:
            read_event(v)
            contract.append(None)
        except ValueError:
            contract.append("refused")
    got = [r["reason"] for r in
           parse(kafka_frame(spark, values)).orderBy("offset").select("reason").collect()]
    assert [("refused" if r else None) for r in got] == contract
    assert contract.count(None) >= 8 and contract.count("refused") >= 20
    for (name, _), reason, verdict in zip([*cases, ("vehicle_id", 5)], got, contract,
                                          strict=True):
        if verdict:
            assert reason in (f"wrong type: {name}", f"value not allowed: {name}"), reason


def test_an_event_stamped_after_its_record_time_is_in_the_future(spark: SparkSession) -> None:
    """Up to max_future_s past the Kafka record's time is clock skew; beyond, the event is set
    aside, so a stray timestamp cannot move the watermark past every real event."""
    from analytics.transforms import parse

    sent = EVENTS[0].timestamp
    values = [EVENTS[0].model_dump_json().encode()]
    reasons = {}
    for ahead_s, max_future_s in ((299, 300.0), (301, 300.0), (301, 600.0), (-86_400, 300.0)):
        frame = kafka_frame(spark, values, sent - dt.timedelta(seconds=ahead_s))
        [row] = parse(frame, max_future_s=max_future_s).collect()
        reasons[ahead_s, max_future_s] = row.reason
    assert reasons == {(299, 300.0): None, (301, 300.0): "in the future: timestamp",
                       (301, 600.0): None, (-86_400, 300.0): None}


def test_spark_schema_parses_what_the_model_serialises(spark: SparkSession) -> None:
    """The schema-drift test: a full event (every field set) through from_json equals the model."""
    from analytics.transforms import parse, valid_events

    full = TelemetryEvent(
        vehicle_id="CAR-Z", timestamp=dt.datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC),
        location=Location(lat=-33.868820, lon=151.209296), speed_kmh=87.25, engine_rpm=3100,
        gear=4, fuel_level_pct=61.5, fault_codes=["P0300", "P0171"], road_type="rural",
        speed_limit_kmh=80, speeding=True, rpm_over_redline=False, seq=17, heading_deg=271.5,
        odometer_km=1234.5, trip_id="trip-9", schema_version=1)
    minimal = json.loads(full.model_dump_json())
    for optional in ("fault_codes", "seq", "heading_deg", "odometer_km", "trip_id",
                     "schema_version"):
        del minimal[optional]
    rows = valid_events(parse(kafka_frame(
        spark, [full.model_dump_json().encode(), orjson.dumps(minimal)]))).collect()
    assert len(rows) == 2
    by_trip = {r.trip_id: r.asDict(recursive=True) for r in rows}
    for got in by_trip.values():  # collect() gives naive local datetimes
        got["timestamp"] = got["timestamp"].astimezone(UTC)
    assert list(by_trip["trip-9"]) == list(TelemetryEvent.model_fields)
    assert TelemetryEvent.model_validate(by_trip["trip-9"]) == full
    # omitted optional fields get the model's defaults, as pydantic would fill them in
    assert by_trip[""]["fault_codes"] == [] and by_trip[""]["schema_version"] == 1
    assert TelemetryEvent.model_validate(by_trip[""]) == TelemetryEvent.model_validate(minimal)


# ---------------------------------------------------------------------------------------
# End to end: the real broker, the job in once mode, parquet read back with pyarrow.
# ---------------------------------------------------------------------------------------

def publish(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for key, value in records:
                await producer.send(topic, key=key, value=value)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(go())


def as_records(events: list[TelemetryEvent]) -> list[tuple[bytes, bytes]]:
    return [(e.vehicle_id.encode(), e.model_dump_json().encode()) for e in events]


def vehicle_rows(out: Path) -> list[tuple]:
    return sorted(tuple(r.values()) for r in read_windows(out, "vehicle_windows").to_pylist())


def road_rows(out: Path) -> list[tuple]:
    return sorted(tuple(r.values()) for r in read_windows(out, "road_windows").to_pylist())


@pytest.mark.kafka
def test_job_once_end_to_end(spark: SparkSession, kafka_bootstrap: str, topic: str,
                             tmp_path: Path) -> None:
    from analytics.job import run

    # With append mode a window is written only once the watermark (max event time seen
    # minus 2 minutes) passes its end. The FLUSH car's event at 08:10 moves the watermark
    # to 08:08 so that every 08:00 and 08:01 window is final and written; its own 08:10
    # window stays open (in the checkpointed state) and is not in the output yet.
    flush = event("FLUSH", at(10), 0.0, 50.0, 0.0, 0)
    bad = malformed_json()
    publish(kafka_bootstrap, topic, as_records(EVENTS) + [(b"bad", v) for v, _ in bad]
            + as_records([flush]))
    out = tmp_path / "analytics"
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                        output_dir=out, once=True, window="1 minute", watermark="2 minutes",
                        local_dir=tmp_path / "local")
    totals = run(settings, spark=spark)

    expected_vehicles = sorted(with_window(VEHICLE_ROWS))
    expected_roads = sorted(with_window(ROAD_ROWS))
    assert vehicle_rows(out) == expected_vehicles
    assert road_rows(out) == expected_roads
    malformed = read_windows_malformed(out)
    assert sorted((v, why) for v, why, _ in malformed) == sorted(
        (v.decode(), why) for v, why in bad)
    assert all(t == topic for _, _, t in malformed)
    assert totals["malformed"]["observed"] == {
        "records": len(EVENTS) + len(bad) + 1, "malformed": len(bad), "rows_written": len(bad)}
    assert totals["vehicle_windows"]["observed"]["rows_written"] == len(VEHICLE_ROWS)
    saved = json.loads((out / "_progress" / "vehicle_windows.json").read_text())
    assert saved["last"]["watermark"] == "2026-01-01T08:08:00.000Z"

    # what Spark wrote is the contract's schema, as pyarrow sees it
    import pandas as pd
    import pyarrow.parquet as pq

    from analytics.reader import SCHEMAS

    for kind, schema in SCHEMAS.items():
        for f in committed_files(out / kind):
            written = pq.read_schema(f)
            assert [(x.name, x.type) for x in written] == [(x.name, x.type) for x in schema]
    # pandas straight from the folder (part files; _commits ignored) agrees

    assert len(pd.read_parquet(out / "vehicle_windows")) == len(VEHICLE_ROWS)

    # A second run from the same checkpoint, nothing new on the topic: nothing is added.
    files_before = {k: committed_files(out / k) for k in ("vehicle_windows", "road_windows")}
    run(settings, spark=spark)
    assert vehicle_rows(out) == expected_vehicles
    assert road_rows(out) == expected_roads
    assert len(read_windows_malformed(out)) == len(bad)
    assert {k: committed_files(out / k) for k in files_before} == files_before

    # Late data. The watermark is 08:08: an event at 08:05 is dropped (and counted); one at
    # 08:09:30 is late too (older than 08:10) but within the watermark, so it is aggregated.
    # FLUSH's 08:20 event moves the watermark to 08:18, writing the 08:09 and 08:10 windows.
    late = event("CAR-A", at(5), 70.0, 75.0, 110.0, 5)
    in_time = event("CAR-A", at(9, 30), 50.0, 70.0, 120.0, 6)
    publish(kafka_bootstrap, topic, as_records([late, in_time,
                                                event("FLUSH", at(20), 0.0, 50.0, 0.0, 1)]))
    totals = run(settings, spark=spark)
    assert vehicle_rows(out) == sorted(expected_vehicles + with_window([
        (at(9), "CAR-A", 1, 50.0, 50.0, 0, 0, 0.0, 0.0),
        (at(10), "FLUSH", 1, 0.0, 0.0, 0, 0, 0.0, 0.0)]))
    assert road_rows(out) == sorted(expected_roads + with_window([
        (at(9), "urban", 1, 1, 50.0, 50.0, 0, 0),
        (at(10), "urban", 1, 1, 0.0, 0.0, 0, 0)]))
    for name in ("vehicle_windows", "road_windows"):
        assert totals[name]["rows_dropped_by_watermark"] == 1, totals[name]
        saved = json.loads((out / "_progress" / f"{name}.json").read_text())
        assert saved["rows_dropped_by_watermark"] == 1


@pytest.mark.kafka
def test_small_batches_give_the_same_windows_and_a_batch_redone_adds_nothing(
        spark: SparkSession, kafka_bootstrap: str, topic_factory, tmp_path: Path) -> None:
    """Two records per micro-batch: every window's events span several batches (kept as
    open-window events in the checkpoint until the watermark closes it), CAR-B's
    out-of-order sample lands in a later batch than its successor, and the malformed files
    are compacted. Then a crash in the middle of the last batch is replayed."""
    from analytics.job import run

    one = topic_factory("telemetry", 1)
    bad = malformed_json()
    flush = event("FLUSH", at(10), 0.0, 50.0, 0.0, 0)
    publish(kafka_bootstrap, one, as_records(EVENTS) + [(b"bad", v) for v, _ in bad]
            + as_records([flush]))
    out = tmp_path / "analytics"
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=one,
                        output_dir=out, once=True, max_offsets_per_trigger=2,
                        compact_files=3, local_dir=tmp_path / "local")
    totals = run(settings, spark=spark)
    batches = len(EVENTS) // 2 + -(-(len(bad) + 1) // 2)
    assert totals["malformed"]["batches"] == batches
    assert vehicle_rows(out) == sorted(with_window(VEHICLE_ROWS))
    assert road_rows(out) == sorted(with_window(ROAD_ROWS))
    assert sorted(v for v, _, _ in read_windows_malformed(out)) == sorted(
        v.decode() for v, _ in bad)
    malformed_files = [f.name for f in committed_files(out / "malformed")]
    parts = [name for name in malformed_files if name.startswith("part-")]
    assert len(parts) < 3 and malformed_files[0].startswith("compact-")  # compact_files=3
    state = out / "_checkpoints" / "analytics_batches"
    commit = json.loads((state / "commits" / f"{batches - 1:020d}.json").read_text())
    assert [Path(o["path"]).name for o in commit["open"]] == [f"{batches - 1:020d}"]  # FLUSH
    assert len(commit["released"]) == 4  # the four batches of EVENTS, deleted after the next

    # A crash in the middle of the last batch: its offsets are logged; Spark's commit, the
    # job's commit and road_windows' log entry are not. Spark runs that batch again.
    last = batches - 1
    for path in [out / "_checkpoints" / "analytics" / "commits" / name
                 for name in (str(last), f".{last}.crc")] + [
            state / "commits" / f"{last:020d}.json",
            out / "road_windows" / "_commits" / f"{last:020d}.json"]:
        path.unlink()
    assert road_rows(out) == []
    totals = run(settings, spark=spark)
    assert totals["road_windows"]["batches"] == batches + 1  # the batch ran again
    assert vehicle_rows(out) == sorted(with_window(VEHICLE_ROWS))
    assert road_rows(out) == sorted(with_window(ROAD_ROWS))
    assert len(read_windows_malformed(out)) == len(bad)


def read_windows_malformed(out: Path) -> list[tuple[str, str, str]]:
    import pyarrow.parquet as pq

    rows = []
    for f in committed_files(out / "malformed"):
        for r in pq.read_table(f).to_pylist():
            assert r["partition"] is not None and r["offset"] is not None
            rows.append((r["value"], r["reason"], r["topic"]))
    return rows


@pytest.mark.kafka
def test_console_sink_runs_once(spark: SparkSession, kafka_bootstrap: str, topic: str,
                                tmp_path: Path) -> None:
    from analytics.job import run

    publish(kafka_bootstrap, topic, as_records(EVENTS[:2]) + [(b"bad", b"nope")])
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                        output_dir=tmp_path / "out", sink="console", once=True,
                        local_dir=tmp_path / "local")
    totals = run(settings, spark=spark)
    assert totals["malformed"]["observed"]["malformed"] == 1
    assert not (tmp_path / "out").exists()  # the console sink writes no files, no checkpoint
    assert list((tmp_path / "local").iterdir()) == []  # its temporary checkpoint is gone


@pytest.mark.kafka
def test_a_failing_query_is_a_short_job_error(spark: SparkSession, kafka_bootstrap: str,
                                              topic: str, tmp_path: Path) -> None:
    from analytics.job import JobError, run

    publish(kafka_bootstrap, topic, as_records(EVENTS[:1]))
    blocked = tmp_path / "out"
    blocked.mkdir()
    (blocked / "vehicle_windows").write_text("a file where the dataset folder should be")
    settings = Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                        output_dir=blocked, once=True, local_dir=tmp_path / "local")
    with pytest.raises(JobError, match="dataset vehicle_windows cannot be written") as failed:
        run(settings, spark=spark)
    assert "\tat " not in str(failed.value) and len(str(failed.value)) < 2100
    assert not [q for q in spark.streams.active]  # no query was left running
