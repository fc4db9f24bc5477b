"""The analytics job's flags (or env vars) -> Settings; the same for both entry points:

    python -m analytics                       # continuous, local[*], parquet to data/analytics
    python -m analytics --once                # process the backlog, then exit
    python -m analytics --sink console        # print the windows instead
    spark-submit --master spark://host:7077 --jars <connector jars> analytics/job.py --once
"""

# Generated from analytics.settings.Settings by common.cli; imports no pyspark, so --help and
# a bad flag answer at once.

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from analytics.settings import EventsSettings, Settings
from common.cli import SettingsCli

# field -> its flag, where it is not --field-name; every Settings field has exactly one flag.
SPARK_JOB_FLAGS: dict[str, list[str]] = {  # the fields of SparkJobSettings, both jobs
    "kafka_bootstrap_servers": ["--bootstrap-servers"],
    "kafka_topic": ["--topic"],
    "checkpoint_dir": ["--checkpoint"],
    "spark_conf": ["--conf"],
    "spark_jars_dir": ["--jars-dir"],
}
SPARK_JOB_OPTIONS: dict[str, dict[str, Any]] = {
    "kafka_bootstrap_servers": {"metavar": "HOST:PORT,..."},
    "checkpoint_dir": {"metavar": "DIR"},
    "trigger_seconds": {"metavar": "S"},
    "max_offsets_per_trigger": {"metavar": "N"},
    "master": {"metavar": "URL"},
    "spark_conf": {"action": "append", "metavar": "KEY=VALUE"},
    "spark_jars_dir": {"metavar": "DIR"},
    "shuffle_partitions": {"metavar": "N"},
    "local_dir": {"metavar": "DIR"},
}
FLAGS: dict[str, list[str]] = {**SPARK_JOB_FLAGS, "output_dir": ["--output"]}
CLI = SettingsCli(Settings, "python -m analytics", description=__doc__, flags=FLAGS, options={
    **SPARK_JOB_OPTIONS,
    "output_dir": {"metavar": "DIR"},
    "window": {"metavar": "DURATION"},
    "watermark": {"metavar": "DURATION"},
})


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Flags override env vars; a bad value exits 2 with a message naming the variable."""
    return CLI.parse(argv)


EVENTS_FLAGS: dict[str, list[str]] = SPARK_JOB_FLAGS
EVENTS_CLI = SettingsCli(
    EventsSettings, "python -m analytics.events", flags=EVENTS_FLAGS,
    description="""The events job: trips, geofence crossings and alerts per vehicle, from the
telemetry topic to fleetstream.events (geofences and rules from their compacted topics).

    python -m analytics.events                 # continuous, local[*], a batch a second
    python -m analytics.events --once          # process the backlog, then exit
    spark-submit --master spark://host:7077 --jars <connector jars> analytics/events_job.py
""",
    options={
        **SPARK_JOB_OPTIONS,
        "trip_end_stop_s": {"metavar": "S"},
        "moving_kmh": {"metavar": "KMH"},
    })
