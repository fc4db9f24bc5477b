"""``python -m analytics.events``: flags (or env vars) -> EventsSettings -> the events job
(``spark-submit analytics/events_job.py`` takes the same flags)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from analytics.cli import EVENTS_CLI


def main(argv: Sequence[str] | None = None) -> int:
    settings = EVENTS_CLI.parse(argv)  # before pyspark is imported: --help answers at once
    from analytics.events_job import run_main

    return run_main(settings)


if __name__ == "__main__":
    sys.exit(main())
