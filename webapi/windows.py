"""Reading the Spark job's windowed aggregates (parquet) for /analytics/*.

The reading itself is ``analytics.reader`` (pyarrow only, no pyspark): it follows each
dataset's ``_commits`` log so only committed files are read (a compaction swaps files in one
log entry), and caches each file's table. Here the rows become JSON-ready dicts.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from analytics.reader import available, read_windows

log = logging.getLogger(__name__)


class AnalyticsUnreadable(RuntimeError):
    """The output folder exists but a committed file cannot be read."""


def read_rows(output_dir: Path, kind: Literal["vehicle_windows", "road_windows"], limit: int,
              vehicles: Collection[str] | None = None) -> tuple[list[dict[str, Any]], bool]:
    """The newest ``limit`` rows of ``kind`` (by window_start), and whether any data exists."""
    try:
        if not available(output_dir, kind):
            return [], False
        table = read_windows(output_dir, kind, vehicle_ids=vehicles, limit=limit)
    except (OSError, ValueError, pa.ArrowException) as exc:
        log.warning("cannot read analytics output %s/%s: %s", output_dir, kind, exc)
        raise AnalyticsUnreadable(f"the analytics output in {output_dir}/{kind} "
                                  f"cannot be read: {exc}") from exc
    return [{k: _jsonable(v) for k, v in row.items()} for row in table.to_pylist()], True


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
