"""``python -m analytics``: flags (or env vars) -> Settings -> the Spark job.

    python -m analytics                       # continuous, local[*], parquet to data/analytics
    python -m analytics --once                # process the backlog, then exit
    python -m analytics --sink console        # print the windows instead
    spark-submit --master spark://host:7077 --jars <connector jars> analytics/job.py --once
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from analytics.settings import Settings
from common.cli import SettingsCli

# field -> its flag, where it is not --field-name; every Settings field has exactly one flag.
FLAGS: dict[str, list[str]] = {
    "kafka_bootstrap_servers": ["--bootstrap-servers"],
    "kafka_topic": ["--topic"],
    "output_dir": ["--output"],
    "checkpoint_dir": ["--checkpoint"],
    "spark_conf": ["--conf"],
    "spark_jars_dir": ["--jars-dir"],
}
CLI = SettingsCli(Settings, "python -m analytics", description=__doc__, flags=FLAGS, options={
    "kafka_bootstrap_servers": {"metavar": "HOST:PORT,..."},
    "output_dir": {"metavar": "DIR"},
    "checkpoint_dir": {"metavar": "DIR"},
    "window": {"metavar": "DURATION"},
    "watermark": {"metavar": "DURATION"},
    "trigger_seconds": {"metavar": "S"},
    "max_offsets_per_trigger": {"metavar": "N"},
    "master": {"metavar": "URL"},
    "spark_conf": {"action": "append", "metavar": "KEY=VALUE"},
    "spark_jars_dir": {"metavar": "DIR"},
    "shuffle_partitions": {"metavar": "N"},
    "local_dir": {"metavar": "DIR"},
})


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Flags override env vars; a bad value exits 2 with a message naming the variable."""
    return CLI.parse(argv)


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(argv)
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from analytics.job import JobError, run  # pyspark is imported only to run the job

    try:
        run(settings)
    except JobError as exc:
        logging.getLogger("analytics").error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
