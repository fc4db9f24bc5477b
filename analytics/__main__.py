"""``python -m analytics``: flags (or env vars) -> Settings -> the Spark job.

    python -m analytics                       # continuous, local[*], parquet to data/analytics
    python -m analytics --once                # process the backlog, then exit
    python -m analytics --sink console        # print the windows instead
    spark-submit --master spark://host:7077 --jars <connector jars> analytics/job.py --once
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from analytics.settings import Settings, env_name

# field -> (flag, argparse options); every Settings field has exactly one flag.
FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "kafka_bootstrap_servers": ("--bootstrap-servers", {"metavar": "HOST:PORT,..."}),
    "kafka_topic": ("--topic", {}),
    "output_dir": ("--output", {"metavar": "DIR"}),
    "checkpoint_dir": ("--checkpoint", {"metavar": "DIR"}),
    "window": ("--window", {"metavar": "DURATION"}),
    "watermark": ("--watermark", {"metavar": "DURATION"}),
    "sink": ("--sink", {"choices": ["parquet", "console"]}),
    "once": ("--once", {"action": argparse.BooleanOptionalAction}),
    "trigger_seconds": ("--trigger-seconds", {"type": float, "metavar": "S"}),
    "starting_offsets": ("--starting-offsets", {}),
    "max_offsets_per_trigger": ("--max-offsets-per-trigger", {"type": int, "metavar": "N"}),
    "fail_on_data_loss": ("--fail-on-data-loss", {"action": argparse.BooleanOptionalAction}),
    "master": ("--master", {"metavar": "URL"}),
    "spark_conf": ("--conf", {"action": "append", "metavar": "KEY=VALUE"}),
    "spark_jars_dir": ("--jars-dir", {"metavar": "DIR"}),
    "shuffle_partitions": ("--shuffle-partitions", {"type": int, "metavar": "N"}),
    "local_dir": ("--local-dir", {"metavar": "DIR"}),
    "log_level": ("--log-level", {}),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analytics", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    for field, (flag, options) in FLAGS.items():
        info = Settings.model_fields[field]
        default = "" if info.default in (None, {}) else f"; default {info.default}"
        parser.add_argument(flag, dest=field, default=argparse.SUPPRESS,
                            help=f"{info.description} (env {env_name(field)}{default})",
                            **options)
    return parser


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    """Flags override env vars; a bad value exits 2 with a message naming the variable."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    try:
        return Settings(**args)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            msg = str(err["msg"]).removeprefix("Value error, ")
            if field in FLAGS and env_name(field) not in msg:
                msg = f"{env_name(field)} / {FLAGS[field][0]}: {msg}"
            problems.append(msg)
        parser.error("; ".join(problems))


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
