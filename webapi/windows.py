"""Reading the Spark job's windowed aggregates (parquet) for /analytics/*.

Only committed files are read: when the streaming file sink's ``_spark_metadata`` log
exists, the files it lists (minus deletions); otherwise every ``part-*.parquet`` file. A
file that cannot be read (e.g. still being written by a batch job) is skipped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)


def committed_files(folder: Path) -> list[Path]:
    meta = folder / "_spark_metadata"
    if not meta.is_dir():
        return sorted(folder.glob("part-*.parquet"))
    logs = sorted((p for p in meta.iterdir() if p.name.split(".")[0].isdigit()),
                  key=lambda p: int(p.name.split(".")[0]))
    # The last .compact file holds everything before it; later logs add to it.
    compacts = [i for i, p in enumerate(logs) if p.name.endswith(".compact")]
    if compacts:
        logs = logs[compacts[-1]:]
    files: dict[str, Path] = {}
    for entry_log in logs:
        try:
            lines = entry_log.read_text().splitlines()[1:]  # first line: the version, "v1"
        except OSError:
            continue
        for line in lines:
            try:
                item = json.loads(line)
            except ValueError:
                continue
            name = Path(unquote(urlparse(item.get("path", "")).path)).name
            if not name:
                continue
            if item.get("action") == "delete":
                files.pop(name, None)
            else:
                files[name] = folder / name
    return [p for p in files.values() if p.exists()]


class WindowsReader:
    """Reads the datasets, keeping each file's table until the file changes.

    A streaming job adds a file per micro-batch, so a request reads only the new ones.
    The cache holds at most ``max_files`` tables (the oldest are dropped first).
    """

    def __init__(self, max_files: int = 5000) -> None:
        self.max_files = max_files
        self._tables: dict[Path, tuple[tuple[int, int], pa.Table]] = {}

    def _table(self, path: Path) -> pa.Table | None:
        try:
            st = path.stat()
        except OSError:
            return None
        sig = (st.st_mtime_ns, st.st_size)
        cached = self._tables.get(path)
        if cached is not None and cached[0] == sig:
            return cached[1]
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            log.warning("skipping unreadable analytics file %s: %s", path, exc)
            return None
        self._tables[path] = (sig, table)
        while len(self._tables) > self.max_files:
            self._tables.pop(next(iter(self._tables)))
        return table

    def read(self, folder: Path, limit: int, vehicles: Collection[str] | None = None
             ) -> tuple[list[dict[str, Any]], bool]:
        """The newest ``limit`` rows (by window_start), and whether any data exists at all."""
        if not folder.is_dir():
            return [], False
        files = committed_files(folder)
        live = set(files)
        for stale in [p for p in self._tables if p.parent == folder and p not in live]:
            del self._tables[stale]
        tables = [t for t in map(self._table, files) if t is not None]
        if not tables:
            return [], False
        table = pa.concat_tables(tables, promote_options="default")
        if vehicles is not None and "vehicle_id" in table.column_names:
            table = table.filter(pc.is_in(table["vehicle_id"], pa.array(sorted(vehicles))))
        if "window_start" in table.column_names and table.num_rows:
            table = table.sort_by([("window_start", "descending")])
        rows = table.slice(0, limit).to_pylist()
        return [{k: _jsonable(v) for k, v in r.items()} for r in rows], True


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value
