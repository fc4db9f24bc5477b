"""One refresh of the live panels' data: a handful of API calls, turned into frames.

Pure of Streamlit, so the benchmark and tests call it directly. What is fetched is capped
for large fleets: trails only for a few vehicles, time series only for the chart vehicles,
recent events and violations by the API's limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from ui.api import ApiClient
from ui.frames import events_frame, trails_frame


@dataclass(frozen=True)
class ViewOptions:
    """What the user asked to see (from the sidebar)."""

    vehicle_filter: tuple[str, ...] = ()
    follow: str | None = None
    max_trails: int = 25
    trail_points: int = 60
    chart_vehicles: int = 5
    recent_limit: int = 2000
    series_limit: int = 1500
    violations_limit: int = 2000
    violation_window_min: int = 5


@dataclass
class Snapshot:
    """The data of one refresh."""

    fetched_at: datetime
    stats: dict[str, Any]
    latest: pd.DataFrame
    recent: pd.DataFrame
    series: pd.DataFrame
    violations: pd.DataFrame
    trails: pd.DataFrame
    chart_ids: list[str] = field(default_factory=list)
    trail_ids: list[str] = field(default_factory=list)
    violations_capped: bool = False


def pick_vehicles(all_ids: list[str], opts: ViewOptions, n: int) -> list[str]:
    """The followed vehicle first, then the filter, then the fleet in id order, up to n."""
    picked: list[str] = []
    for vid in ([opts.follow] if opts.follow else []) + list(opts.vehicle_filter or all_ids):
        if vid not in picked:
            picked.append(vid)
        if len(picked) >= n:
            break
    return picked


def fetch_snapshot(client: ApiClient, opts: ViewOptions, now: datetime) -> Snapshot:
    """Fetch and frame everything the live panels show. Raises the client's errors."""
    scope = list(opts.vehicle_filter) or None
    stats = client.stats()
    latest = events_frame(client.latest(scope))
    latest = latest.sort_values("vehicle_id", kind="stable").reset_index(drop=True)
    ids = latest["vehicle_id"].tolist()
    if latest.empty:
        empty = events_frame([])
        return Snapshot(now, stats, latest, empty, empty, empty, trails_frame([]))
    chart_ids = pick_vehicles(ids, opts, opts.chart_vehicles)
    trail_ids = pick_vehicles(ids, opts, opts.max_trails)
    recent = events_frame(client.recent(opts.recent_limit, scope))
    series = events_frame(client.recent(opts.series_limit, chart_ids))
    since = now - timedelta(minutes=opts.violation_window_min)
    viol_items = client.violations(opts.violations_limit, scope, since=since)
    violations = events_frame(viol_items)
    trails = trails_frame(client.trails(trail_ids, opts.trail_points))
    return Snapshot(now, stats, latest, recent, series, violations, trails, chart_ids,
                    trail_ids, violations_capped=len(viol_items) >= opts.violations_limit)
