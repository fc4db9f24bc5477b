"""Read the job's parquet output with pyarrow only (no pyspark): for the web API and tools.

The job commits each dataset's files in ``<dataset>/_commits/`` (see analytics.compaction):
``<batch>.json`` names the files a micro-batch added, ``<batch>.compact.json`` is a snapshot
of every live file after a compaction. :func:`committed_files` replays the newest snapshot
and the batch entries after it; a file no entry names (a batch being written, a crashed
attempt, a temporary file) is not read.

Output of the job before it read the topic once is read too: Spark's streaming file sink
wrote ``part-*.parquet`` files into the dataset folder and listed the files of each
committed micro-batch in ``_spark_metadata/`` (``0``, ``1``, ..., ``9.compact`` ...: a ``v1``
line, then one JSON object per file with ``path`` and ``action``); only the logged ones
count. Without either log (a batch Spark job, a copy) every ``part-*.parquet`` file counts.

    from analytics.reader import read_windows
    table = read_windows("data/analytics", "vehicle_windows", vehicle_ids=["TESTCAR01"], limit=50)
    rows = table.to_pylist()        # or table.to_pandas()
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

Kind = Literal["vehicle_windows", "road_windows"]

_TS = pa.timestamp("us", tz="UTC")
_COMMON = [("avg_speed_kmh", pa.float64()), ("max_speed_kmh", pa.float64()),
           ("speeding_count", pa.int64()), ("redline_count", pa.int64())]
SCHEMAS: dict[str, pa.Schema] = {
    "vehicle_windows": pa.schema([
        ("window_start", _TS), ("window_end", _TS), ("vehicle_id", pa.string()),
        ("samples", pa.int64()), *_COMMON,
        ("distance_km", pa.float64()), ("fuel_used_pct", pa.float64()),
    ]),
    "road_windows": pa.schema([
        ("window_start", _TS), ("window_end", _TS), ("road_type", pa.string()),
        ("samples", pa.int64()), ("vehicles", pa.int64()), *_COMMON,
    ]),
}
"""The contract of the two datasets, as pyarrow reads them."""
MALFORMED_SCHEMA = pa.schema([
    ("key", pa.string()), ("value", pa.string()), ("topic", pa.string()),
    ("partition", pa.int32()), ("offset", pa.int64()), ("kafka_timestamp", _TS),
    ("reason", pa.string()),
])
"""The records that are not valid events (``malformed/``)."""

_LOG_NAME = re.compile(r"^(\d+)(\.compact)?$")
_ENTRY_NAME = re.compile(r"^(\d+)(\.compact)?\.json$")
COMMITS = "_commits"
CACHE_FILES = 4096
"""Committed files never change, so each is read once and kept (the newest this many)."""
_cache: OrderedDict[tuple[str, int, int], pa.Table] = OrderedDict()
_cache_lock = threading.Lock()


def _log_files(metadata: Path) -> list[Path]:
    """The sink-log files to replay: the newest ``.compact`` and every later batch file."""
    batches: dict[int, Path] = {}
    compacts: dict[int, Path] = {}
    for path in metadata.iterdir():
        m = _LOG_NAME.match(path.name)
        if m:
            (compacts if m.group(2) else batches)[int(m.group(1))] = path
    start = max(compacts, default=-1)
    files = [compacts[start]] if start >= 0 else []
    return files + [batches[b] for b in sorted(batches) if b > start]


def entry_key(name: str) -> tuple[int, int] | None:
    """The order of a ``_commits`` entry: (batch id, 0 for a batch or 1 for a snapshot)."""
    m = _ENTRY_NAME.match(name)
    return (int(m.group(1)), int(bool(m.group(2)))) if m else None


def live_files(entries: list[tuple[str, Callable[[], dict]]]) -> list[str]:
    """Replay ``(entry name, read it)`` pairs of a ``_commits`` log: the live file names."""
    keyed = sorted(((k, read) for name, read in entries if (k := entry_key(name)) is not None),
                   key=lambda e: e[0])
    snapshots = [i for i, (k, _) in enumerate(keyed) if k[1] == 1]
    start = snapshots[-1] if snapshots else 0
    live: dict[str, None] = {}  # insertion-ordered set
    for i, (_, read) in enumerate(keyed[start:]):
        entry = read()
        if i == 0 and snapshots:
            live = dict.fromkeys(entry["live"])
            continue
        live.update(dict.fromkeys(entry.get("add", [])))
    return list(live)


def _read_json(path: Path) -> dict:
    return dict(json.loads(path.read_text()))


def committed_files(dataset: Path | str) -> list[Path]:
    """The parquet files of ``dataset`` that belong to committed batches, oldest first."""
    dataset = Path(dataset)
    commits = dataset / COMMITS
    if commits.is_dir():
        names = live_files([(p.name, partial(_read_json, p)) for p in commits.iterdir()])
        return [dataset / name for name in names]
    metadata = dataset / "_spark_metadata"
    if not metadata.is_dir():
        return sorted(p for p in dataset.glob("part-*.parquet") if p.is_file())
    live: dict[str, None] = {}  # insertion-ordered set of file names
    for log in _log_files(metadata):
        lines = log.read_text().splitlines()
        if not lines or not lines[0].startswith("v"):
            continue
        for line in lines[1:]:
            if not line.strip():
                continue
            entry = json.loads(line)
            # Locate by name inside the folder: the log holds absolute URIs of where the job ran.
            name = Path(unquote(urlparse(entry["path"]).path)).name
            if entry.get("action", "add") == "delete":
                live.pop(name, None)
            else:
                live[name] = None
    return [dataset / name for name in live if (dataset / name).is_file()]


def _read_file(path: Path, schema: pa.Schema) -> pa.Table:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    table = pq.read_table(path).select(schema.names).cast(schema)
    with _cache_lock:
        _cache[key] = table
        while len(_cache) > CACHE_FILES:
            _cache.popitem(last=False)
    return table


def read_windows(output_dir: Path | str, kind: Kind, *,
                 vehicle_ids: Iterable[str] | None = None,
                 since: dt.datetime | None = None,
                 limit: int | None = None) -> pa.Table:
    """Committed rows of ``<output_dir>/<kind>``, newest window first.

    ``vehicle_ids`` filters vehicle_windows; ``since`` keeps windows starting at or after it
    (an aware datetime); ``limit`` caps the rows. An empty table with the contract's schema
    when the job has written nothing yet (see :func:`available`).
    """
    schema = SCHEMAS[kind]
    for attempt in range(3):
        try:
            tables = [_read_file(f, schema) for f in committed_files(Path(output_dir) / kind)]
            break
        except FileNotFoundError:  # a compaction replaced the files (or a log entry) listed
            if attempt == 2:
                raise
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    if vehicle_ids is not None and kind == "vehicle_windows":
        table = table.filter(pc.field("vehicle_id").isin(list(vehicle_ids)))
    if since is not None:
        table = table.filter(pc.field("window_start") >= pa.scalar(since, type=_TS))
    key = "vehicle_id" if kind == "vehicle_windows" else "road_type"
    table = table.sort_by([("window_start", "descending"), (key, "ascending")])
    return table.slice(0, limit) if limit is not None else table


def available(output_dir: Path | str, kind: Kind) -> bool:
    """True once the job has committed at least one file of ``kind``."""
    return bool(committed_files(Path(output_dir) / kind))
