"""``python -m analytics``: flags (or env vars) -> Settings -> the Spark job (analytics.cli
lists the flags; ``spark-submit analytics/job.py`` takes the same)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from analytics.cli import CLI


def main(argv: Sequence[str] | None = None) -> int:
    settings = CLI.parse(argv)  # before pyspark is imported: --help and bad flags are fast
    from analytics.job import run_main

    return run_main(settings)


if __name__ == "__main__":
    sys.exit(main())
