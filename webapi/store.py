"""The bounded in-memory view of the telemetry stream.

Pure data structures, no I/O: a ring buffer of recent events, recent violations, the latest
event and a short trail per vehicle. At most ``max_vehicles`` vehicles are tracked; the least
recently seen one is evicted (latest event and trail together) when a new one arrives.
Memory is bounded by ``recent_size + violations_size + max_vehicles * (1 + trail_points)``
entries of a few hundred bytes each, however long it runs.

No ghosts: each vehicle's last receipt is kept (this server's wall clock when the event was
consumed, not the event's own time). A vehicle silent for longer than ``timeout_s`` is
*stale*: it leaves the active view (``active_ids``, ``latest_items``, ``active_count``) but
is kept, and shown again on request, until evicted like any other.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict, deque
from collections.abc import Collection, Iterable, Iterator

from webapi.decode import Entry

RATE_WINDOW_S = 10


class TelemetryStore:
    def __init__(self, *, recent_size: int, violations_size: int, max_vehicles: int,
                 trail_points: int, timeout_s: float = math.inf) -> None:
        self.recent: deque[Entry] = deque(maxlen=recent_size)
        self.violations: deque[Entry] = deque(maxlen=violations_size)
        self.latest: OrderedDict[str, Entry] = OrderedDict()
        self.trails: dict[str, deque[bytes]] = {}
        self.seen: dict[str, float] = {}  # vehicle -> wall-clock time of its last receipt
        self.timeout_s = timeout_s
        self.max_vehicles = max_vehicles
        self.trail_points = trail_points
        self.consumed_total = 0
        self.violations_total = 0
        self.evicted_total = 0
        self._rate: deque[list[int]] = deque(maxlen=RATE_WINDOW_S + 2)  # [second, count]

    # ------------------------------------------------------------------ writing
    def add(self, entry: Entry, now: float | None = None, seen: float | None = None) -> None:
        """Store one event; ``now``: monotonic seconds (rate), ``seen``: wall-clock receipt."""
        self.consumed_total += 1
        self.recent.append(entry)
        if entry.violation:
            self.violations_total += 1
            self.violations.append(entry)
        self._count(now)
        vid = entry.vehicle_id
        self.seen[vid] = time.time() if seen is None else seen
        current = self.latest.get(vid)
        if current is None:
            if len(self.latest) >= self.max_vehicles:
                old, _ = self.latest.popitem(last=False)
                self.trails.pop(old, None)
                self.seen.pop(old, None)
                self.evicted_total += 1
            self.latest[vid] = entry
            self.trails[vid] = deque((entry.trail_point,), maxlen=self.trail_points)
            return
        self.latest.move_to_end(vid)
        if entry.ts >= current.ts:  # a late or replayed event does not move the car back
            self.latest[vid] = entry
            self.trails[vid].append(entry.trail_point)

    def _count(self, now: float | None) -> None:
        second = int(time.monotonic() if now is None else now)
        if self._rate and self._rate[-1][0] == second:
            self._rate[-1][1] += 1
        else:
            self._rate.append([second, 1])

    # ------------------------------------------------------------------ reading
    def events_per_s(self, now: float | None = None) -> float:
        """Events consumed per second over the last ten seconds."""
        second = int(time.monotonic() if now is None else now)
        total = sum(c for s, c in self._rate if second - RATE_WINDOW_S < s <= second)
        return total / RATE_WINDOW_S

    def is_stale(self, vid: str, now: float | None = None) -> bool:
        """Not heard from for longer than ``timeout_s`` (``now``: wall clock)."""
        now = time.time() if now is None else now
        return now - self.seen.get(vid, -math.inf) > self.timeout_s

    def vehicles(self, include_stale: bool = False, now: float | None = None) -> list[str]:
        """Ids of the active vehicles (with ``include_stale``: of all tracked ones), sorted."""
        if include_stale:
            return sorted(self.latest)
        return self.active_ids(now)

    def active_ids(self, now: float | None = None) -> list[str]:
        limit = (time.time() if now is None else now) - self.timeout_s
        seen = self.seen
        return sorted(v for v in self.latest if seen[v] >= limit)

    def stale_ids(self, now: float | None = None) -> list[str]:
        limit = (time.time() if now is None else now) - self.timeout_s
        seen = self.seen
        return sorted(v for v in self.latest if seen[v] < limit)

    def active_count(self, now: float | None = None) -> int:
        limit = (time.time() if now is None else now) - self.timeout_s
        return sum(1 for t in self.seen.values() if t >= limit)

    def latest_items(self, vehicles: Collection[str] | None = None, *,
                     include_stale: bool = False, now: float | None = None) -> list[Entry]:
        """The latest event per vehicle, by id; stale vehicles only with ``include_stale``."""
        names = sorted(self.latest) if vehicles is None else sorted(
            v for v in vehicles if v in self.latest)
        if not include_stale:
            limit = (time.time() if now is None else now) - self.timeout_s
            seen = self.seen
            names = [v for v in names if seen[v] >= limit]
        return [self.latest[v] for v in names]

    def recent_items(self, limit: int, vehicles: Collection[str] | None = None,
                     since: float | None = None, until: float | None = None) -> list[Entry]:
        """The newest ``limit`` matching events (by arrival), returned oldest first.

        Partitions interleave, so arrival order is only nearly time order: sort the pick.
        """
        picked = list(itertools.islice(_matching(reversed(self.recent), vehicles, since, until),
                                       limit))
        picked.reverse()
        picked.sort(key=_by_time)
        return picked

    def violation_items(self, limit: int, vehicles: Collection[str] | None = None,
                        since: float | None = None, until: float | None = None) -> list[Entry]:
        """The newest ``limit`` matching violations (by arrival), newest first by time."""
        picked = list(itertools.islice(
            _matching(reversed(self.violations), vehicles, since, until), limit))
        picked.sort(key=_by_time, reverse=True)
        return picked

    def trail_items(self, vehicles: Collection[str] | None, points: int
                    ) -> list[tuple[str, list[bytes]]]:
        names = sorted(self.trails) if vehicles is None else sorted(
            v for v in vehicles if v in self.trails)
        out = []
        for vid in names:
            trail = self.trails[vid]
            out.append((vid, list(itertools.islice(trail, max(0, len(trail) - points), None))))
        return out


def _by_time(entry: Entry) -> float:
    return entry.ts


def _matching(entries: Iterable[Entry], vehicles: Collection[str] | None, since: float | None,
              until: float | None) -> Iterator[Entry]:
    if vehicles is None and since is None and until is None:
        yield from entries
        return
    for e in entries:
        if vehicles is not None and e.vehicle_id not in vehicles:
            continue
        if since is not None and e.ts < since:
            continue
        if until is not None and e.ts > until:
            continue
        yield e
