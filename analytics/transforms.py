"""Pure DataFrame -> DataFrame functions: parse the Kafka records, aggregate the windows.

Nothing here starts a SparkSession or a query; the same functions run on a batch DataFrame
(the unit tests) and on the Kafka stream (the job). Column names of the two outputs are the
contract with the web API (see ``VEHICLE_WINDOW_COLUMNS`` and ``ROAD_WINDOW_COLUMNS``).

Definitions, per event-time window:

* ``samples``: valid events in the window.
* ``avg_speed_kmh`` / ``max_speed_kmh``: over ``speed_kmh``.
* ``speeding_count`` / ``redline_count``: events with ``speeding`` / ``rpm_over_redline`` true.
* ``distance_km`` (per vehicle): ``max(odometer_km) - min(odometer_km)``; the odometer only
  rises, so this is robust to reordering, duplicates and gaps. Distance driven between the
  last sample of one window and the first of the next is in neither window.
* ``fuel_used_pct`` (per vehicle): the sum of the positive drops of ``fuel_level_pct`` between
  consecutive samples, ordered by (timestamp, seq). A refuel (a rise) adds nothing and does
  not hide the fuel burnt before or after it, which ``first - last`` would.
* ``vehicles`` (per road type): the distinct vehicles with samples on that road type in the
  window, counted exactly (the job aggregates batches, not a streaming state).
"""

from __future__ import annotations

import operator
import re
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from analytics.schema import (
    EVENT_SCHEMA,
    Bounds,
    allowed_values,
    default_values,
    field_bounds,
    leaf_fields,
    null_refused,
    required_fields,
)
from common.contract import MAX_CLOCK_SKEW_S

CORRUPT = "_corrupt_record"
VEHICLE_WINDOW_COLUMNS = (
    "window_start", "window_end", "vehicle_id", "samples", "avg_speed_kmh", "max_speed_kmh",
    "speeding_count", "redline_count", "distance_km", "fuel_used_pct",
)
ROAD_WINDOW_COLUMNS = (
    "window_start", "window_end", "road_type", "samples", "vehicles", "avg_speed_kmh",
    "max_speed_kmh", "speeding_count", "redline_count",
)
MALFORMED_COLUMNS = ("key", "value", "topic", "partition", "offset", "kafka_timestamp", "reason")
USED_EVENT_FIELDS = ("vehicle_id", "timestamp", "speed_kmh", "fuel_level_pct", "road_type",
                     "speeding", "rpm_over_redline", "seq", "odometer_km")
"""Event fields the aggregates read (a test checks they exist in the model)."""


def _field(struct: Column, path: str) -> Column:
    for part in path.split("."):
        struct = struct.getField(part)
    return struct


def _names_where(checks: list[tuple[Column, str]]) -> Column:
    """Comma-separated names whose condition holds, or null when none does.

    The names are only assembled when some condition holds: valid rows cost a few null checks.
    """
    if not checks:
        return F.lit(None).cast("string")
    names = F.array_compact(F.array(*[F.when(cond, F.lit(name)) for cond, name in checks]))
    return F.when(reduce(operator.or_, [cond for cond, _ in checks]), F.array_join(names, ", "))


UNPRINTABLE = r"[\p{C}\p{Z}&&[^ ]]"
"""Java regex of what ``str.isprintable`` refuses: the Unicode categories Other (controls,
formats, surrogates, private use, unassigned) and Separator, except the ASCII space."""


def _outside(value: Column, b: Bounds) -> Column:
    """True where a non-null ``value`` breaks ``b``. NaN and infinities break every range (in
    Spark SQL NaN is larger than any number, so ``> le`` alone would catch only +NaN's side)."""
    conds = []
    if b.ge is not None or b.gt is not None or b.le is not None or b.lt is not None:
        conds.append(F.isnan(value.cast("double"))
                     | value.cast("double").isin(float("inf"), float("-inf")))
    if b.ge is not None:
        conds.append(value < b.ge)
    if b.gt is not None:
        conds.append(value <= b.gt)
    if b.le is not None:
        conds.append(value > b.le)
    if b.lt is not None:
        conds.append(value >= b.lt)
    size = F.size(value) if b.items is not None else F.length(value)
    if b.min_len is not None:
        conds.append(size < b.min_len)
    if b.max_len is not None:
        conds.append(size > b.max_len)
    if b.printable:
        conds.append(value.rlike(UNPRINTABLE))
    if b.items is not None:
        item = b.items
        conds.append(F.exists(value, lambda x: x.isNull() | _outside(x, item)))
    return reduce(operator.or_, conds) if conds else F.lit(False)


ISO_TIME = r"^(?!0000)\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})$"
"""A timestamp as the producer writes it and Spark's cast rules read it: ISO 8601 with
seconds and an explicit UTC offset (``Z``, ``+01:00`` or ``+0100``), from year 1 (Python's
first, so the contract's) on."""
ISO_TIME_LOOSE = (r"^((?!0000)\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2})(:\d{2})?(?:[.,](\d{1,9}))?"
                  r"([Zz]|[+-]\d{2}:?\d{2})$")
"""The other spellings the contract accepts (pydantic, strict, as the web API validates):
lower-case ``t``/``z``, a comma before the fraction, no seconds. Rewritten to
:data:`ISO_TIME` before the cast."""


def _event_time(text: Column) -> Column:
    """A JSON string read as a timestamp the way the contract reads it: ISO 8601 with an
    explicit offset, else null. A time without an offset (which Spark would take as UTC), a
    date alone, a number, or a date that does not exist are null."""
    canonical = F.when(text.rlike(ISO_TIME), text).when(text.rlike(ISO_TIME_LOOSE), F.concat(
        F.regexp_extract(text, ISO_TIME_LOOSE, 1), F.lit("T"),
        F.regexp_extract(text, ISO_TIME_LOOSE, 2),
        F.coalesce(F.nullif(F.regexp_extract(text, ISO_TIME_LOOSE, 3), F.lit("")),
                   F.lit(":00")),
        F.coalesce(F.concat(F.lit("."), F.nullif(F.regexp_extract(text, ISO_TIME_LOOSE, 4),
                                                 F.lit(""))), F.lit("")),
        F.upper(F.regexp_extract(text, ISO_TIME_LOOSE, 5))))
    return F.try_to_timestamp(canonical)


NOT_A_STRING = (r"(?s)^(-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?|true|false|\[.*|\{.*)$")
"""What ``from_json`` makes of a number, a boolean, an array or an object in a string field:
their JSON text. A string field whose value looks like this is checked against the record."""
_JSON_STRING = r'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
"""A JSON string in the record's text, possessive throughout: Java's regex engine recurses
once per repetition of an alternation, so ``(?:[^"\\]|\\.)*`` overflowed the executor's stack
(a fatal error that ends the JVM) on one 900 KB string."""


def _may_not_be_a_string(value: Column) -> Column:
    """:data:`NOT_A_STRING`, its first character checked first (no pattern is matched for an
    id that starts with a letter other than t or f, as most do)."""
    return F.ascii(value).isin(*b"-0123456789tf[{") & value.rlike(NOT_A_STRING)


def _key(name: str) -> str:
    """A pattern for the record's text: key ``name`` and its colon, up to its value. In JSON
    text a quote inside a string is always escaped, so ``"name"`` followed by a colon is a
    key (one spelled with escapes, ``"vehicle\\u005fid"``, is not seen)."""
    return rf'"{re.escape(name)}"\s*:\s*'


def _key_holds_other(name: str) -> str:
    """Key ``name`` followed by something other than a JSON string."""
    return _key(name) + r'[^"\s]'


def _key_holds_others(name: str) -> str:
    """Key ``name`` followed by an array with an item other than a JSON string."""
    return _key(name) + rf'\[\s*+(?:{_JSON_STRING}\s*+,\s*+)*+[^"\s\]]'


def _not_strings(text: Column, wire: Column, schema: T.StructType) -> list[tuple[Column, str]]:
    """(condition, field) for each string field (or array of strings) whose JSON value was
    not a string: ``from_json`` keeps any value's text in a string field, so ``"vehicle_id":
    123`` would be the vehicle "123", which the contract refuses. Only a value that looks
    like such text (:data:`NOT_A_STRING`) costs a look at the record."""
    checks = []
    for f in schema.fields:
        value = wire.getField(f.name)
        if isinstance(f.dataType, T.StringType):
            checks.append((_may_not_be_a_string(value)
                           & text.rlike(_key_holds_other(f.name)), f.name))
        elif isinstance(f.dataType, T.ArrayType) and isinstance(f.dataType.elementType,
                                                                T.StringType):
            checks.append(((F.size(value) > 0)
                           & F.exists(value, _may_not_be_a_string)
                           & text.rlike(_key_holds_others(f.name)), f.name))
    return checks


def _nulls(text: Column, wire: Column) -> list[tuple[Column, str]]:
    """(condition, field) for each field the contract lets a record omit but not set to
    ``null`` (:func:`analytics.schema.null_refused`): ``from_json`` reads both as null, and the
    default would be filled in. Only a record missing such a field costs a look at its text."""
    return [(wire.getField(n).isNull() & text.rlike(_key(n) + r"null\b"), n)
            for n in null_refused()]


def _reason(text: Column, event: Column, schema: T.StructType, kafka_time: Column,
            max_future_s: float, bad_type: Column) -> Column:
    """Why a record is not a valid event (null when it is one).

    An event stamped more than ``max_future_s`` after its Kafka record's time is ``in the
    future``: one such record (a year-9999 timestamp) would move a job's watermark past every
    real event and have them all dropped as late. The record time is the producer's send time
    or the broker's append time, and the broker refuses a send time more than
    ``log.message.timestamp.after.max.ms`` (one hour by default since Kafka 4.0) ahead of its
    clock."""
    wrong_type = _names_where([
        (F.get_json_object(text, f"$.{path}").isNotNull() & _field(event, path).isNull(), path)
        for path in leaf_fields(schema)
    ])
    missing = _names_where([
        ((_field(event, path.rpartition(".")[0]).isNotNull() if "." in path else F.lit(True))
         & _field(event, path).isNull(), path)
        for path in required_fields()
    ])
    invalid = _names_where([
        (_field(event, name).isNotNull() & ~_field(event, name).isin(*values), name)
        for name, values in allowed_values().items()
    ])
    outside = _names_where([
        (_field(event, b.path).isNotNull() & _outside(_field(event, b.path), b), b.path)
        for b in field_bounds()
    ])
    return (
        F.when(text.isNull(), F.lit("null value"))
        .when(event.isNull(), F.lit("empty value"))
        .when(event.getField(CORRUPT).isNotNull(),
              F.when(F.json_object_keys(text).isNull(), F.lit("not a JSON object"))
              .otherwise(F.coalesce(F.concat(F.lit("wrong type: "), wrong_type),
                                    F.lit("malformed JSON"))))
        .when(bad_type.isNotNull(), F.concat(F.lit("wrong type: "), bad_type))
        .when(missing.isNotNull(), F.concat(F.lit("missing required field: "), missing))
        .when(invalid.isNotNull(), F.concat(F.lit("value not allowed: "), invalid))
        .when(outside.isNotNull(), F.concat(F.lit("out of range: "), outside))
        .when(F.unix_micros(event.getField("timestamp"))
              > F.unix_micros(kafka_time) + F.lit(round(max_future_s * 1_000_000)),
              F.lit("in the future: timestamp"))
    )


def parse(raw: DataFrame, schema: T.StructType = EVENT_SCHEMA,
          max_future_s: float = MAX_CLOCK_SKEW_S) -> DataFrame:
    """Kafka records (key, value, topic, partition, offset, timestamp) -> the raw metadata,
    ``event`` (the parsed struct) and ``reason`` (null for a valid event; an event more than
    ``max_future_s`` seconds past its record's time is not one).

    Timestamps are read as JSON strings and converted by :func:`_event_time`, not by
    ``from_json``, which would take a time without an offset as UTC and a bare number as
    seconds since the epoch: the contract refuses both."""
    text = F.col("value").cast("string")
    times = [f.name for f in schema.fields if isinstance(f.dataType, T.TimestampType)]
    wire = T.StructType([
        T.StructField(f.name, T.StringType()) if f.name in times else f for f in schema.fields
    ] + [T.StructField(CORRUPT, T.StringType())])
    parsed = raw.select(
        F.col("key").cast("string").alias("key"),
        text.alias("value"),
        F.col("topic"),
        F.col("partition"),
        F.col("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.from_json(text, wire,
                    {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}).alias("wire"),
    )
    event = F.col("wire")
    for name in times:
        event = event.withField(name, _event_time(F.col(f"wire.{name}")))
    bad_type = _names_where(sorted(
        [(F.col(f"wire.{name}").isNotNull() & _field(F.col("event"), name).isNull(), name)
         for name in times] + _not_strings(F.col("value"), F.col("wire"), schema)
        + _nulls(F.col("value"), F.col("wire")),
        key=lambda check: schema.names.index(check[1])))
    return parsed.withColumn("event", event).withColumn(
        "reason", _reason(F.col("value"), F.col("event"), schema, F.col("kafka_timestamp"),
                          max_future_s, bad_type)).drop("wire")


def valid_events(parsed: DataFrame, schema: T.StructType = EVENT_SCHEMA) -> DataFrame:
    """The valid events, one column per model field, omitted fields set to their defaults."""
    defaults = default_values()
    cols = []
    for f in schema.fields:
        col = F.col(f"event.{f.name}")
        if f.name in defaults:
            col = F.coalesce(col, F.lit(defaults[f.name]).cast(f.dataType))
        cols.append(col.alias(f.name))
    return parsed.where(F.col("reason").isNull()).select(*cols)


def duration_us(text: str) -> int:
    """A normalised duration ('2 minutes', see analytics.settings) in microseconds."""
    count, unit = text.split()
    seconds = {"millisecond": 0.001, "second": 1, "minute": 60, "hour": 3600,
               "day": 86400}[unit.removesuffix("s")]
    return int(int(count) * seconds * 1_000_000)


def slim(parsed: DataFrame, window: str) -> DataFrame:
    """One row per record with only what the job's outputs read: ``reason``, the event
    fields the aggregates use (null for a malformed record), ``window_end`` (the end of the
    event's window) and the raw record's metadata (null for a valid event). Small enough to
    cache for the whole micro-batch."""
    valid = F.col("reason").isNull()
    defaults = default_values()
    fields = {f.name: f for f in EVENT_SCHEMA.fields}
    used = []
    for name in USED_EVENT_FIELDS:
        col = F.col(f"event.{name}")
        if name in defaults:
            col = F.coalesce(col, F.lit(defaults[name]).cast(fields[name].dataType))
        used.append(F.when(valid, col).alias(name))
    length = F.lit(duration_us(window))
    start_us = F.unix_micros(F.col("event.timestamp"))
    # F.window's end (windows aligned to the epoch) without F.window, which drops the rows
    # whose timestamp is null (the malformed ones) from the whole frame
    end = F.timestamp_micros((F.floor(start_us / length) + 1) * length)
    raw = [F.when(~valid, F.col(c)).alias(c) for c in MALFORMED_COLUMNS if c != "reason"]
    return parsed.select("reason", *used, F.when(valid, end).alias("window_end"), *raw)


def malformed_records(parsed: DataFrame) -> DataFrame:
    """The records that are not valid events, with where they came from and why."""
    return parsed.where(F.col("reason").isNotNull()).select(*MALFORMED_COLUMNS)


def fuel_drops(ordered: Column, fuel: str = "fuel_level_pct") -> Column:
    """Sum of the positive drops of field ``fuel`` between consecutive structs of the array
    ``ordered`` (samples sorted by time and seq)."""
    start = F.struct(F.lit(0.0).alias("used"), F.lit(None).cast("double").alias("prev"))
    return F.aggregate(
        ordered, start,
        lambda acc, x: F.struct(
            (acc["used"] + F.greatest(acc["prev"] - x[fuel], F.lit(0.0))).alias("used"),
            x[fuel].alias("prev")),
        lambda acc: acc["used"],
    )


def _fuel_used() -> Column:
    """Sum of the positive drops of fuel_level_pct between consecutive samples."""
    return fuel_drops(F.array_sort(F.collect_list(F.struct("timestamp", "seq",
                                                           "fuel_level_pct"))))


def _windowed(events: DataFrame, window: str, watermark: str | None) -> DataFrame:
    if watermark is not None:
        events = events.withWatermark("timestamp", watermark)
    return events.withColumn("window", F.window("timestamp", window))


def _common() -> list[Column]:
    return [
        F.avg("speed_kmh").alias("avg_speed_kmh"),
        F.max("speed_kmh").alias("max_speed_kmh"),
        F.count_if(F.col("speeding")).alias("speeding_count"),
        F.count_if(F.col("rpm_over_redline")).alias("redline_count"),
    ]


def vehicle_windows(events: DataFrame, window: str = "1 minute",
                    watermark: str | None = None) -> DataFrame:
    """Per vehicle per event-time window (see the module docstring for the definitions)."""
    agg = _windowed(events, window, watermark).groupBy("window", "vehicle_id").agg(
        F.count(F.lit(1)).alias("samples"),
        *_common(),
        (F.max("odometer_km") - F.min("odometer_km")).alias("distance_km"),
        _fuel_used().alias("fuel_used_pct"),
    )
    return agg.select(F.col("window.start").alias("window_start"),
                      F.col("window.end").alias("window_end"),
                      *VEHICLE_WINDOW_COLUMNS[2:])


def road_windows(events: DataFrame, window: str = "1 minute",
                 watermark: str | None = None) -> DataFrame:
    """Per road type per event-time window: first per vehicle too (plain sums, counts and
    maxima, which Spark aggregates in generated code), then summed per road type, where
    ``vehicles`` is the number of those per-vehicle rows: exact, and cheaper per event than
    a HyperLogLog sketch."""
    per_vehicle = _windowed(events, window, watermark).groupBy(
        "window", "road_type", "vehicle_id").agg(
        F.count(F.lit(1)).alias("n"),
        F.sum("speed_kmh").alias("speed_sum"),
        F.max("speed_kmh").alias("speed_max"),
        F.count_if(F.col("speeding")).alias("speeding"),
        F.count_if(F.col("rpm_over_redline")).alias("redline"),
    )
    agg = per_vehicle.groupBy("window", "road_type").agg(
        F.sum("n").alias("samples"),
        F.count(F.lit(1)).alias("vehicles"),
        (F.sum("speed_sum") / F.sum("n")).alias("avg_speed_kmh"),
        F.max("speed_max").alias("max_speed_kmh"),
        F.sum("speeding").alias("speeding_count"),
        F.sum("redline").alias("redline_count"),
    )
    return agg.select(F.col("window.start").alias("window_start"),
                      F.col("window.end").alias("window_end"),
                      *ROAD_WINDOW_COLUMNS[2:])


def transform(events: DataFrame, window: str = "1 minute",
              watermark: str | None = None) -> tuple[DataFrame, DataFrame]:
    """Valid events -> (vehicle_windows, road_windows)."""
    return (vehicle_windows(events, window, watermark),
            road_windows(events, window, watermark))
