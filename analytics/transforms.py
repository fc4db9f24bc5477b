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
from functools import reduce

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from analytics.schema import (
    EVENT_SCHEMA,
    allowed_values,
    default_values,
    leaf_fields,
    required_fields,
)

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
ROAD_TYPES: tuple[str, ...] = allowed_values()["road_type"]
"""The contract's road types: the per-vehicle partials hold one set of figures per type."""


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


def _reason(text: Column, event: Column, schema: T.StructType) -> Column:
    """Why a record is not a valid event (null when it is one)."""
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
    return (
        F.when(text.isNull(), F.lit("null value"))
        .when(event.isNull(), F.lit("empty value"))
        .when(event.getField(CORRUPT).isNotNull(),
              F.when(F.json_object_keys(text).isNull(), F.lit("not a JSON object"))
              .otherwise(F.coalesce(F.concat(F.lit("wrong type: "), wrong_type),
                                    F.lit("malformed JSON"))))
        .when(missing.isNotNull(), F.concat(F.lit("missing required field: "), missing))
        .when(invalid.isNotNull(), F.concat(F.lit("value not allowed: "), invalid))
    )


def parse(raw: DataFrame, schema: T.StructType = EVENT_SCHEMA) -> DataFrame:
    """Kafka records (key, value, topic, partition, offset, timestamp) -> the raw metadata,
    ``event`` (the parsed struct) and ``reason`` (null for a valid event)."""
    text = F.col("value").cast("string")
    with_corrupt = T.StructType([*schema.fields, T.StructField(CORRUPT, T.StringType())])
    parsed = raw.select(
        F.col("key").cast("string").alias("key"),
        text.alias("value"),
        F.col("topic"),
        F.col("partition"),
        F.col("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.from_json(text, with_corrupt,
                    {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}).alias("event"),
    )
    return parsed.withColumn("reason", _reason(F.col("value"), F.col("event"), schema))


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
    end = window_end(F.col("event.timestamp"), window)
    raw = [F.when(~valid, F.col(c)).alias(c) for c in MALFORMED_COLUMNS if c != "reason"]
    return parsed.select("reason", *used, F.when(valid, end).alias("window_end"), *raw)


def malformed_records(parsed: DataFrame) -> DataFrame:
    """The records that are not valid events, with where they came from and why."""
    return parsed.where(F.col("reason").isNotNull()).select(*MALFORMED_COLUMNS)


def window_end(timestamp: Column, window: str) -> Column:
    """The end of ``timestamp``'s event-time window: F.window's end (windows aligned to the
    epoch) without F.window, which drops the rows whose timestamp is null from the frame."""
    length = F.lit(duration_us(window))
    return F.timestamp_micros((F.floor(F.unix_micros(timestamp) / length) + 1) * length)


def _road(name: str, road: str) -> str:
    return f"{road}_{name}"


def window_partials(events: DataFrame) -> DataFrame:
    """Valid events (``USED_EVENT_FIELDS`` and ``window_end``) -> one row per window and
    vehicle holding everything both outputs need: the vehicle's own figures, the same per
    road type (``<road>_samples``, ``<road>_speed_sum``, ...: ``road_type`` is one of the
    contract's few values) and ``max_ts``, its latest event time.

    One shuffle and one aggregation for both datasets. Fuel used: each sample's drop from
    the one before it, ordered by (timestamp, seq, fuel_level_pct) within the window (a
    window function over that sort; the aggregation then sums the drops in that order).
    """
    key = ("window_end", "vehicle_id")
    before = F.lag("fuel_level_pct").over(
        Window.partitionBy(*key).orderBy("timestamp", "seq", "fuel_level_pct"))
    drop = F.greatest(before - F.col("fuel_level_pct"), F.lit(0.0))  # 0 for the first
    speed, speeding, redline = (F.col(c) for c in ("speed_kmh", "speeding", "rpm_over_redline"))
    per_road: list[Column] = []
    for road in ROAD_TYPES:
        on = F.col("road_type") == F.lit(road)
        per_road += [
            F.count_if(on).alias(_road("samples", road)),
            F.sum(F.when(on, speed)).alias(_road("speed_sum", road)),
            F.max(F.when(on, speed)).alias(_road("speed_max", road)),
            F.count_if(on & speeding).alias(_road("speeding", road)),
            F.count_if(on & redline).alias(_road("redline", road)),
        ]
    return events.withColumn("fuel_drop", drop).groupBy(*key).agg(
        F.count(F.lit(1)).alias("samples"),
        F.sum(speed).alias("speed_sum"),
        F.max(speed).alias("max_speed_kmh"),
        F.count_if(speeding).alias("speeding_count"),
        F.count_if(redline).alias("redline_count"),
        (F.max("odometer_km") - F.min("odometer_km")).alias("distance_km"),
        F.sum("fuel_drop").alias("fuel_used_pct"),
        F.max("timestamp").alias("max_ts"),
        *per_road,
    )


def _window_start(window: str) -> Column:
    return F.timestamp_micros(F.unix_micros(F.col("window_end")) - F.lit(duration_us(window)))


def vehicle_rows(partials: DataFrame, window: str) -> DataFrame:
    """:func:`window_partials` -> the vehicle windows (``VEHICLE_WINDOW_COLUMNS``)."""
    return partials.select(
        _window_start(window).alias("window_start"), "window_end", "vehicle_id", "samples",
        (F.col("speed_sum") / F.col("samples")).alias("avg_speed_kmh"), "max_speed_kmh",
        "speeding_count", "redline_count", "distance_km", "fuel_used_pct")


def road_rows(partials: DataFrame, window: str) -> DataFrame:
    """:func:`window_partials` -> the road windows (``ROAD_WINDOW_COLUMNS``): per road type,
    the per-vehicle figures summed over the vehicles with samples on it (so ``vehicles`` is
    exact)."""
    names = ("samples", "speed_sum", "speed_max", "speeding", "redline")
    per_road = partials.select("window_end", F.inline(F.array(*[
        F.struct(F.lit(road).alias("road_type"), *[F.col(_road(n, road)).alias(n) for n in names])
        for road in ROAD_TYPES]))).where(F.col("samples") > 0)
    agg = per_road.groupBy("window_end", "road_type").agg(
        F.sum("samples").alias("samples"),
        F.count(F.lit(1)).alias("vehicles"),
        (F.sum("speed_sum") / F.sum("samples")).alias("avg_speed_kmh"),
        F.max("speed_max").alias("max_speed_kmh"),
        F.sum("speeding").alias("speeding_count"),
        F.sum("redline").alias("redline_count"),
    )
    return agg.select(_window_start(window).alias("window_start"), "window_end",
                      *ROAD_WINDOW_COLUMNS[2:])


def _partials(events: DataFrame, window: str) -> DataFrame:
    return window_partials(
        events.withColumn("window_end", window_end(F.col("timestamp"), window)))


def vehicle_windows(events: DataFrame, window: str = "1 minute") -> DataFrame:
    """Per vehicle per event-time window (see the module docstring for the definitions)."""
    return vehicle_rows(_partials(events, window), window)


def road_windows(events: DataFrame, window: str = "1 minute") -> DataFrame:
    """Per road type per event-time window: exact distinct vehicles, from per-vehicle
    partial sums (plain sums, counts and maxima, no HyperLogLog per event)."""
    return road_rows(_partials(events, window), window)


def transform(events: DataFrame, window: str = "1 minute") -> tuple[DataFrame, DataFrame]:
    """Valid events -> (vehicle_windows, road_windows), from one aggregation."""
    partials = _partials(events, window)
    return vehicle_rows(partials, window), road_rows(partials, window)
