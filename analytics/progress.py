"""What the jobs did: running totals per query or dataset, logged and saved.

The analytics job records each committed micro-batch per dataset (``record``: records read,
rows written, events dropped late, the malformed count, the watermark); the events job folds
in Spark's progress reports (``StreamingQuery.recentProgress``, one per micro-batch). Either
way the tracker logs a line per batch and keeps
``<output>/_progress/<name>.json`` up to date (totals since that folder was created).

The log says what a query did at most once a minute (``summary_s``): its first executed
micro-batch, then one line for all the batches since the last line (records in, dropped late,
the observed counts, the longest batch and the watermark), and :meth:`ProgressTracker.flush`
what is left at the end. Each batch has its own line at DEBUG. (At the events job's 1 s
trigger a line per batch was most of ``make run``'s output.)

``rows_dropped_by_watermark``: for the analytics job, the valid events whose window the
watermark had closed before their batch (each counted once); for a Spark progress report,
``numRowsDroppedByWatermark`` summed over the query's stateful operators, which Spark counts
after partial aggregation (several late events of one key in one partition count as one).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("analytics")

_TOTALS = ("batches", "input_rows", "rows_dropped_by_watermark")
SUMMARY_S = 60.0
"""A query's progress is logged at INFO at most this often (its batches at DEBUG)."""


class _Query(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def recentProgress(self) -> list[Any]: ...  # noqa: N802 (Spark's name)


def _num(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


class ProgressTracker:
    """Running totals per query; ``consume`` one progress dict, or ``poll`` live queries."""

    def __init__(self, directory: Path | None, summary_s: float = SUMMARY_S,
                 trigger_s: float | None = None) -> None:
        self.directory = directory
        self.summary_s = summary_s
        self.trigger_ms = None if trigger_s is None else trigger_s * 1000
        self.totals: dict[str, dict[str, Any]] = {}
        self._last_seen: dict[str, str] = {}
        self._since: dict[str, _Summary] = {}  # per name: the batches not logged at INFO yet
        if directory is not None and directory.is_dir():
            for path in sorted(directory.glob("*.json")):
                try:
                    saved = json.loads(path.read_text())
                    self.totals[saved["query"]] = saved
                except (OSError, ValueError, KeyError):
                    log.warning("ignoring unreadable progress file %s", path)

    def _entry(self, name: str) -> dict[str, Any]:
        return self.totals.setdefault(
            name, {"query": name, **dict.fromkeys(_TOTALS, 0), "observed": {}, "last": None})

    def consume(self, progress: Mapping[str, Any]) -> bool:
        """Fold in one progress report (a dict as in ``StreamingQueryProgress.json``).

        Returns False for a report already seen (polling sees each one several times).
        """
        name = progress.get("name") or str(progress.get("id"))
        stamp = str(progress.get("timestamp", ""))
        if stamp <= self._last_seen.get(name, ""):
            return False
        self._last_seen[name] = stamp
        entry = self._entry(name)
        executed = "addBatch" in (progress.get("durationMs") or {})
        dropped = sum(_num(op.get("numRowsDroppedByWatermark"))
                      for op in progress.get("stateOperators") or [])
        rows_in = _num(progress.get("numInputRows"))
        entry["batches"] += int(executed)
        entry["input_rows"] += rows_in
        entry["rows_dropped_by_watermark"] += dropped
        observed: dict[str, int] = entry["observed"]
        batch_observed: dict[str, int] = {}
        for metrics in (progress.get("observedMetrics") or {}).values():
            for key, value in metrics.items():
                batch_observed[key] = _num(value)
                observed[key] = observed.get(key, 0) + _num(value)
        watermark = (progress.get("eventTime") or {}).get("watermark")
        entry["last"] = {"batch_id": progress.get("batchId"), "timestamp": stamp,
                         "input_rows": rows_in, "rows_dropped_by_watermark": dropped,
                         "watermark": watermark, **batch_observed}
        entry["updated_at"] = dt.datetime.now(dt.UTC).isoformat()
        if executed:
            extra = "".join(f", {k} {v}" for k, v in batch_observed.items())
            log.debug("%s batch %s: %d records in, %d dropped late (total %d)%s, watermark %s",
                      name, progress.get("batchId"), rows_in, dropped,
                      entry["rows_dropped_by_watermark"], extra, watermark)
            first = name not in self._since
            summary = self._since.setdefault(name, _Summary(time.monotonic(), self.trigger_ms))
            summary.add(progress.get("batchId"), rows_in, dropped, batch_observed,
                        _num((progress.get("durationMs") or {}).get("triggerExecution")),
                        watermark)
            if first or time.monotonic() - summary.started >= self.summary_s:
                self._log(name)
        return True

    def flush(self) -> None:
        """Log the batches not summarised yet (at the end of a run)."""
        for name in list(self._since):
            self._log(name)

    def _log(self, name: str) -> None:
        summary = self._since[name]
        if summary.batches:
            log.info("%s", summary.line(name, self.totals[name]["rows_dropped_by_watermark"]))
        self._since[name] = _Summary(time.monotonic(), self.trigger_ms)

    def record(self, name: str, batch_id: int, *, input_rows: int, dropped: int,
               watermark: str | None, observed: Mapping[str, int],
               duration_ms: int = 0) -> None:
        """Fold in one committed micro-batch of the job's dataset ``name`` (its own counts:
        ``dropped`` are the events whose window had closed before their batch)."""
        self.consume({"name": name, "batchId": batch_id,
                      "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                      "numInputRows": input_rows,
                      "durationMs": {"addBatch": duration_ms, "triggerExecution": duration_ms},
                      "stateOperators": [{"numRowsDroppedByWatermark": dropped}],
                      "eventTime": {"watermark": watermark},
                      "observedMetrics": {"batch": dict(observed)}})

    def poll(self, queries: Iterable[_Query]) -> None:
        """Consume the new progress reports of ``queries`` and save the totals."""
        changed = False
        for query in queries:
            for progress in query.recentProgress:
                report = json.loads(progress.json) if hasattr(progress, "json") else progress
                changed |= self.consume(report)
        if changed:
            self.save()

    def save(self) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, entry in self.totals.items():
            path = self.directory / f"{name}.json"
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(entry, indent=2, sort_keys=True))
            os.replace(tmp, path)


class _Summary:
    """A query's executed batches since its last INFO line."""

    def __init__(self, started: float, trigger_ms: float | None) -> None:
        self.started = started
        self.trigger_ms = trigger_ms
        self.late = 0  # batches that took longer than the trigger interval
        self.batches = 0
        self.ids: list[object] = []
        self.rows_in = 0
        self.dropped = 0
        self.observed: dict[str, int] = {}
        self.longest_ms = 0
        self.watermark: object = None

    def add(self, batch_id: object, rows_in: int, dropped: int, observed: Mapping[str, int],
            duration_ms: int, watermark: object) -> None:
        self.batches += 1
        self.ids = [self.ids[0] if self.ids else batch_id, batch_id]
        self.rows_in += rows_in
        self.dropped += dropped
        for key, value in observed.items():
            self.observed[key] = self.observed.get(key, 0) + value
        self.longest_ms = max(self.longest_ms, duration_ms)
        self.late += self.trigger_ms is not None and duration_ms > self.trigger_ms
        self.watermark = watermark

    def line(self, name: str, dropped_total: int) -> str:
        first, last = self.ids
        which = f"batch {last}" if self.batches == 1 else f"batches {first}-{last}"
        extra = "".join(f", {k} {v}" for k, v in self.observed.items())
        longest = f", longest {self.longest_ms / 1000:.1f}s" if self.longest_ms else ""
        if self.late and self.trigger_ms is not None:
            longest += (f" ({self.late} of {self.batches} longer than the "
                        f"{self.trigger_ms / 1000:g}s trigger: falling behind)")
        return (f"{name} {which}: {self.rows_in} records in, {self.dropped} dropped late "
                f"(total {dropped_total}){extra}{longest}, watermark {self.watermark}")
