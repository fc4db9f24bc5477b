"""The job's parquet datasets: files written per micro-batch, a commit log, and compaction.

The driver writes each dataset (``vehicle_windows``, ``road_windows``, ``malformed``) with
pyarrow, so the layout is this module's, not Spark's file sink's::

    <output>/<dataset>/part-b<batch>-d<day>.parquet      one batch's rows of one day
    <output>/<dataset>/compact-c<batch>-d<day>.parquet   one day's rows, merged after <batch>
    <output>/<dataset>/_commits/<batch>.json             {"batch_id", "add": [file names]}
    <output>/<dataset>/_commits/<batch>.compact.json     {"batch_id", "live": [...], "add",
                                                          "remove"}: a snapshot after compacting

``<batch>`` is the micro-batch id, 20 digits; ``<day>`` is the UTC day of ``window_start``
(``kafka_timestamp`` for malformed records). Every file and log entry is written to a
hidden temporary name and renamed into place, so a reader sees a whole file or none.
A file counts once a log entry names it: the live set is the newest snapshot's ``live`` plus
the ``add`` of every later batch entry (:func:`analytics.reader.live_files`).

**Compaction.** Once a dataset has ``min_files`` live ``part-`` files, the job (after
committing a batch, between micro-batches) rewrites each day's live files into one
``compact-`` file and commits a snapshot entry that swaps them in a single rename. Files it
replaced stay on disk until the next compaction (a reader that listed the log just before
still finds them); that compaction deletes them, with the log entries older than the
snapshot before it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import defaultdict
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from analytics.reader import COMMITS, entry_key, live_files

DAY_COLUMNS = {"vehicle_windows": "window_start", "road_windows": "window_start",
               "malformed": "kafka_timestamp"}
_DAY_NAME = re.compile(r"-d(\d{4}-\d{2}-\d{2}|none)\.parquet$")


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem and path for a folder or a URI (``s3a://`` is read as ``s3://``)."""
    if "://" in location:
        return pafs.FileSystem.from_uri(re.sub(r"^s3a://", "s3://", location))
    return pafs.LocalFileSystem(), str(Path(location).resolve())


def write_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write ``path`` whole: a hidden temporary file beside it, then a rename."""
    parent, _, name = path.rpartition("/")
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    fs.move(tmp, path)


def _write_table(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    parent, _, name = path.rpartition("/")
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    pq.write_table(table, tmp, filesystem=fs, compression="snappy")
    fs.move(tmp, path)


def _days(table: pa.Table, column: str) -> dict[str, pa.Table]:
    """The rows of ``table`` by UTC day of ``column`` ("none" for a null)."""
    if table.num_rows == 0:
        return {}
    day = pc.strftime(table[column], format="%Y-%m-%d").fill_null("none")
    return {d: table.filter(pc.equal(day, d)) for d in sorted(set(day.to_pylist()))}


class Dataset:
    """One dataset folder: batches are written and committed here, and compacted."""

    def __init__(self, location: str, name: str, schema: pa.Schema) -> None:
        self.fs, self.path = filesystem(location)
        self.name = name
        self.schema = schema
        self.day_column = DAY_COLUMNS[name]
        self.commits = f"{self.path}/{COMMITS}"

    def create(self) -> None:
        """The folder and its log folder (raises OSError when something is in the way)."""
        self.fs.create_dir(self.commits, recursive=True)

    def _entry(self, batch_id: int, compact: bool = False) -> str:
        return f"{self.commits}/{batch_id:020d}{'.compact' if compact else ''}.json"

    def committed(self, batch_id: int) -> bool:
        return self.fs.get_file_info(self._entry(batch_id)).type != pafs.FileType.NotFound

    def write_batch(self, batch_id: int, table: pa.Table) -> list[str]:
        """Write ``table`` as the rows of ``batch_id``, one file per day, then commit it.

        Names depend on the batch id only: a batch run again after a crash rewrites the
        same files, and its rows are never committed twice.
        """
        table = table.select(self.schema.names).cast(self.schema)
        names = []
        for day, rows in _days(table, self.day_column).items():
            name = f"part-b{batch_id:020d}-d{day}.parquet"
            _write_table(self.fs, f"{self.path}/{name}", rows)
            names.append(name)
        entry = {"v": 1, "batch_id": batch_id, "add": names}
        write_atomic(self.fs, self._entry(batch_id), json.dumps(entry).encode())
        return names

    def _log(self) -> list[tuple[str, str]]:
        infos = self.fs.get_file_info(pafs.FileSelector(self.commits, allow_not_found=True))
        names = sorted((i.base_name for i in infos if entry_key(i.base_name) is not None),
                       key=lambda n: entry_key(n) or (0, 0))
        return [(n, f"{self.commits}/{n}") for n in names]

    def _read_entry(self, path: str) -> dict:
        with self.fs.open_input_stream(path) as f:
            return dict(json.loads(f.read()))

    def live(self) -> list[str]:
        """The committed files, oldest first."""
        return live_files([(n, partial(self._read_entry, p)) for n, p in self._log()])

    def compact(self, batch_id: int, min_files: int) -> int:
        """Merge each day's files into one once ``min_files`` part files are live; commit
        a snapshot. Returns how many files were replaced (0: nothing to do)."""
        live = self.live()
        parts = [n for n in live if n.startswith("part-")]
        if min_files <= 0 or len(parts) < min_files:
            return 0
        by_day: dict[str, list[str]] = defaultdict(list)
        for name in live:
            m = _DAY_NAME.search(name)
            by_day[m.group(1) if m else "none"].append(name)
        add, remove = [], []
        for day, names in sorted(by_day.items()):
            if not any(n.startswith("part-") for n in names):
                continue  # a day already in one compacted file
            tables = [pq.read_table(f"{self.path}/{n}", filesystem=self.fs)
                      .select(self.schema.names).cast(self.schema) for n in names]
            merged = pa.concat_tables(tables)
            sort = [(c, "ascending") for c in self.schema.names[:3]]
            merged = merged.sort_by(sort) if self.name != "malformed" else merged
            name = f"compact-c{batch_id:020d}-d{day}.parquet"
            _write_table(self.fs, f"{self.path}/{name}", merged)
            add.append(name)
            remove.extend(names)
        kept = [n for n in live if n not in set(remove)]
        previous = [n for n, _ in self._log() if n.endswith(".compact.json")]
        entry = {"v": 1, "batch_id": batch_id, "live": kept + add, "add": add, "remove": remove}
        write_atomic(self.fs, self._entry(batch_id, compact=True), json.dumps(entry).encode())
        if previous:  # what the snapshot before this one replaced, and the log before it
            self._clean_up(previous[-1])
        return len(remove)

    def _clean_up(self, snapshot: str) -> None:
        entry = self._read_entry(f"{self.commits}/{snapshot}")
        for name in entry.get("remove", []):
            if self._exists(name):
                self.fs.delete_file(f"{self.path}/{name}")
        cut = entry_key(snapshot) or (0, 0)
        for name, path in self._log():
            if (entry_key(name) or cut) < cut:
                self.fs.delete_file(path)

    def _exists(self, name: str) -> bool:
        return self.fs.get_file_info(f"{self.path}/{name}").type != pafs.FileType.NotFound
