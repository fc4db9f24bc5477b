"""The analytics job's configuration: one frozen object, read once at the entry point."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ValidationInfo, field_validator
from pydantic_settings import NoDecode

from common.contract import MAX_CLOCK_SKEW_S
from common.paths import CACHE, SPARK_JARS
from common.settings import ServiceSettings, kafka_topics, locations, not_blank, setting
from common.settings import env_name as settings_env_name

_DURATION = re.compile(
    r"^\s*(\d+)\s*(milliseconds?|ms|seconds?|s|minutes?|min|m|hours?|h|days?|d)\s*$", re.I)
_UNIT = {"ms": "milliseconds", "s": "seconds", "min": "minutes", "m": "minutes",
         "h": "hours", "d": "days"}


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return settings_env_name(Settings, field)


def normalize_duration(value: str) -> str:
    """'90s' -> '90 seconds', '1 minutes' -> '1 minute': an interval Spark accepts."""
    m = _DURATION.match(value)
    if not m:
        raise ValueError(value)
    count, unit = int(m.group(1)), m.group(2).lower()
    unit = _UNIT.get(unit, unit).removesuffix("s")
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def parse_pairs(value: object) -> object:
    """ANALYTICS_SPARK_CONF / --conf: 'k=v,k2=v2' or a list of 'k=v' -> dict."""
    if isinstance(value, str):
        value = [p for p in value.split(",") if p.strip()]
    if isinstance(value, list | tuple):
        pairs: dict[str, str] = {}
        for item in value:
            key, sep, val = str(item).partition("=")
            if not sep or not key.strip():
                raise ValueError(f"ANALYTICS_SPARK_CONF / --conf wants key=value, got {item!r}")
            pairs[key.strip()] = val.strip()
        return pairs
    return value


def check_offsets(value: str) -> str:
    if value not in ("earliest", "latest") and not value.lstrip().startswith("{"):
        raise ValueError("ANALYTICS_STARTING_OFFSETS must be earliest, latest or a JSON "
                         f"object of offsets, got {value!r}")
    return value


def check_level(value: str) -> str:
    if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"ANALYTICS_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, "
                         f"got {value!r}")
    return value.upper()


class SparkJobSettings(ServiceSettings):
    """What the Spark jobs of analytics/ share: the telemetry source, Spark and logging.
    Each field is an env var (its ``validation_alias``) and a flag of the job's command line."""

    kafka_bootstrap_servers: str = setting(
        "localhost:9092", "KAFKA_BOOTSTRAP_SERVERS", "Kafka bootstrap.servers")
    kafka_topic: str = setting("vehicle.telemetry.raw", "KAFKA_TOPIC", "telemetry topic to read")
    starting_offsets: str = setting(
        "earliest", "ANALYTICS_STARTING_OFFSETS",
        "where a fresh checkpoint starts: earliest, latest or Spark JSON")
    max_offsets_per_trigger: int | None = setting(
        None, "ANALYTICS_MAX_OFFSETS_PER_TRIGGER",
        "cap on records per micro-batch (none: no cap)", gt=0)
    fail_on_data_loss: bool = setting(
        False, "ANALYTICS_FAIL_ON_DATA_LOSS",
        "fail when Kafka deleted records the job had not read yet")
    master: str | None = setting(
        None, "SPARK_MASTER", "Spark master (default: spark-submit's --master, else local[*])")
    spark_conf: Annotated[dict[str, str], NoDecode] = setting(
        {}, "ANALYTICS_SPARK_CONF", "extra Spark settings, comma-separated key=value pairs")
    spark_jars_dir: Path = setting(
        SPARK_JARS, "ANALYTICS_SPARK_JARS_DIR", "folder holding the spark-sql-kafka connector jars")
    shuffle_partitions: int = setting(
        8, "ANALYTICS_SHUFFLE_PARTITIONS",
        "spark.sql.shuffle.partitions (fixed once a checkpoint exists)", ge=1, le=10_000)
    local_dir: Path = setting(
        CACHE / "spark" / "local", "ANALYTICS_LOCAL_DIR",
        "Spark scratch space and the JVM's temp folder")
    log_level: str = setting("INFO", "ANALYTICS_LOG_LEVEL", "the job's log level (Spark's is WARN)")
    max_event_future_s: float = setting(
        MAX_CLOCK_SKEW_S, "ANALYTICS_MAX_EVENT_FUTURE_S",
        "events stamped more than this many seconds after their Kafka record's time are set "
        "aside as 'in the future' (allows for clock skew)", gt=0, le=31_536_000)

    _servers = not_blank("kafka_bootstrap_servers")
    _topic = kafka_topics("kafka_topic")
    _folders = locations("spark_jars_dir", "local_dir")

    @field_validator("spark_conf", mode="before")
    @classmethod
    def _pairs(cls, value: object) -> object:
        return parse_pairs(value)

    @field_validator("starting_offsets")
    @classmethod
    def _offsets(cls, value: str) -> str:
        return check_offsets(value)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        return check_level(value)


class Settings(SparkJobSettings):
    """Each field is an env var (its ``validation_alias``) and a flag of ``python -m analytics``."""


    output_dir: str = setting(
        "data/analytics", "ANALYTICS_OUTPUT_DIR",
        "parquet output: vehicle_windows/, road_windows/, malformed/, "
        "_progress/ (a folder, or a URI such as s3a://bucket/path)")
    checkpoint_dir: str | None = setting(
        None, "ANALYTICS_CHECKPOINT_DIR", "streaming checkpoints (default: <output>/_checkpoints)")
    window: str = setting(
        "1 minute", "ANALYTICS_WINDOW", "event-time window length, e.g. '1 minute'")
    watermark: str = setting(
        "2 minutes", "ANALYTICS_WATERMARK", "how late an event may arrive and still be counted")
    sink: Literal["parquet", "console"] = setting(
        "parquet", "ANALYTICS_SINK", "parquet files, or the console for debugging")
    once: bool = setting(
        False, "ANALYTICS_ONCE",
        "process what is in the topic now (trigger availableNow), then exit")
    trigger_seconds: float = setting(
        10.0, "ANALYTICS_TRIGGER_SECONDS", "micro-batch interval in continuous mode",
        gt=0, le=3600)
    compact_files: int = setting(
        32, "ANALYTICS_COMPACT_FILES",
        "merge a dataset's per-batch files into one file per window day once it has this "
        "many (0: never)", ge=0, le=1_000_000)

    @field_validator("window", "watermark")
    @classmethod
    def _duration(cls, value: str, info: ValidationInfo) -> str:
        try:
            return normalize_duration(value)
        except ValueError:
            var = env_name(str(info.field_name))
            raise ValueError(f"{var} must be a duration like '1 minute', '30 seconds' or '90s', "
                             f"got {value!r}") from None

    @field_validator("window")
    @classmethod
    def _positive_window(cls, value: str) -> str:
        if value.startswith("0 "):
            raise ValueError(f"ANALYTICS_WINDOW must be longer than zero, got {value!r}")
        return value

    _locations = locations("output_dir", "checkpoint_dir")

    def location(self, name: str, *, checkpoint: bool = False) -> str:
        """``<output>/<name>`` (or ``<checkpoint>/<name>``): absolute path, or URI as given."""
        base = self.output_dir
        if checkpoint:
            base = self.checkpoint_dir or _join(self.output_dir, "_checkpoints")
        return _join(base, name)

    @property
    def progress_dir(self) -> Path | None:
        """Where the progress totals go; None when the output is not a local folder."""
        return None if _is_uri(self.output_dir) else Path(self.output_dir) / "_progress"


def _is_uri(location: str) -> bool:
    return "://" in location


def _join(base: str, name: str) -> str:
    if _is_uri(base):
        return f"{base.rstrip('/')}/{name}"
    return str((Path(base) / name).resolve())


class EventsSettings(SparkJobSettings):
    """The events job's settings (``python -m analytics.events``): each field an env var and
    a flag. The Spark, Kafka and logging ones share their names with the analytics job."""

    events_topic: str = setting(
        "fleetstream.events", "KAFKA_EVENTS_TOPIC",
        "derived events: trips, geofence crossings, alerts (key = vehicle id)")
    geofences_topic: str = setting(
        "fleetstream.geofences", "KAFKA_GEOFENCES_TOPIC",
        "compacted topic of geofences (key = id, a tombstone deletes)")
    alert_rules_topic: str = setting(
        "fleetstream.alert-rules", "KAFKA_ALERT_RULES_TOPIC",
        "compacted topic of alert rules (key = id; empty: the default rules)")
    events_partitions: int = setting(
        3, "KAFKA_EVENTS_PARTITIONS", "partitions of the events topic when the job creates it",
        ge=1, le=10_000)
    checkpoint_dir: str = setting(
        "data/events/_checkpoint", "ANALYTICS_EVENTS_CHECKPOINT_DIR",
        "the events job's checkpoint (its per-vehicle state; a folder or a URI)")
    trip_end_stop_s: float = setting(
        300.0, "ANALYTICS_TRIP_END_STOP_S",
        "a trip ends after the car stood still this long with the ignition on", gt=0, le=86_400)
    moving_kmh: float = setting(
        2.0, "ANALYTICS_TRIP_MOVING_KMH", "speed from which a car counts as moving", gt=0, le=50)
    once: bool = setting(
        False, "ANALYTICS_EVENTS_ONCE",
        "process what is in the topic now, then exit (once a batch finds nothing new)")
    trigger_seconds: float = setting(
        1.0, "ANALYTICS_EVENTS_TRIGGER_SECONDS", "the events job's micro-batch interval",
        gt=0, le=3600)

    _locations = locations("checkpoint_dir")
    _topics = kafka_topics("events_topic", "geofences_topic", "alert_rules_topic")

    @property
    def checkpoint(self) -> str:
        """The checkpoint location: an absolute path, or the URI as given."""
        return self.checkpoint_dir if _is_uri(self.checkpoint_dir) else \
            str(Path(self.checkpoint_dir).resolve())
