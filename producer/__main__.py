"""``python -m producer``: the fleet daemon, or ``--stdout`` JSON lines.

Every setting is an environment variable (see producer/settings.py) and a flag here;
flags win over the environment.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from common.cli import SettingsCli
from common.logs import quiet_kafka_connect_retries
from producer.geojson import RoadsFileError
from producer.settings import Settings

CLI = SettingsCli(Settings, "python -m producer", description=__doc__, flags={
    "fleet_size": ["--fleet-size", "--vehicles"],
    "sim_rate_hz": ["--sim-rate-hz", "--rate-hz"],
    "sim_seed": ["--sim-seed", "--seed"],
    "sim_roads_file": ["--sim-roads-file", "--roads"],
    "sim_sport_mode": ["--sim-sport-mode", "--sport-mode"],
    "sim_autostart": ["--sim-autostart", "--autostart"],
    "kafka_bootstrap_servers": ["--kafka-bootstrap-servers", "--bootstrap-servers"],
    "kafka_topic": ["--kafka-topic", "--topic"],
})
DEFAULT_START = "2026-01-01T00:00:00+00:00"


def _parse_time(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--start-time: not an ISO 8601 time: {text!r}") from exc
    if ts.tzinfo is None:
        raise argparse.ArgumentTypeError(f"--start-time needs a UTC offset, got {text!r}")
    return ts.astimezone(UTC)


def build_parser() -> argparse.ArgumentParser:
    p = CLI.parser()
    p.add_argument("--stdout", action="store_true",
                   help="write JSON lines to stdout on a simulated clock instead of Kafka")
    p.add_argument("--steps", type=int, default=None,
                   help="ticks to run (--stdout default 900; daemon: run until stopped)")
    p.add_argument("--start-time", type=_parse_time, default=None,
                   help=f"--stdout: time of the first tick (default {DEFAULT_START})")
    p.add_argument("--unpaced", action="store_true",
                   help="daemon: publish ticks back to back, ignoring the rate (benchmarks)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_kafka_connect_retries()
    settings = CLI.settings(args)
    try:
        if args.stdout:
            from producer.stdout import run_stdout

            start = args.start_time or _parse_time(DEFAULT_START)
            run_stdout(settings, steps=900 if args.steps is None else args.steps,
                       start_time=start, out=sys.stdout.buffer)
            return 0
        import asyncio

        from producer.daemon import run_daemon

        return asyncio.run(run_daemon(settings, steps=args.steps, unpaced=args.unpaced))
    except RoadsFileError as exc:
        print(f"producer: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
