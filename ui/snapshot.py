"""One refresh of the live panels' data: a handful of API calls, turned into frames.

Pure of Streamlit, so the benchmark and tests call it directly. What is fetched is capped
for large fleets: trails only for a few vehicles, time series only for the chart vehicles,
recent events and violations by the API's limits.

Scale: up to ``point_budget`` vehicles the map gets every vehicle as a point. Above it, the
map is either zoomed out over the whole area (the network's bounds), drawn from the API's
``/telemetry/density`` grid, or zoomed in on a followed vehicle, drawn from
``/telemetry/latest?bbox=`` of that viewport only; the per-vehicle KPIs and the fleet table
then cover the vehicles fetched: ``density_sample`` zoomed out, at most ``point_budget``
in view zoomed in (``Snapshot.sampled``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import pydeck as pdk

from ui import maps
from ui.api import ApiClient, ApiError, ApiUnavailable, BBox
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
    include_stale: bool = False
    point_budget: int = 5000
    density_cells: int = 64
    density_sample: int = 1000  # zoomed out over a big fleet: vehicles fetched for KPIs/table
    area: BBox | None = None  # what "zoomed out" shows: the road network's bounds


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
    density: dict[str, Any] | None = None  # the /telemetry/density grid, when zoomed out
    view: pdk.ViewState | None = None  # set when the fleet is above the point budget
    sampled: bool = False  # latest holds at most point_budget of a larger fleet
    missing: list[str] = field(default_factory=list)  # auxiliary parts that failed, and why


def _bounds(df: pd.DataFrame) -> BBox | None:
    if df.empty:
        return None
    return (float(df["lon"].min()), float(df["lat"].min()),
            float(df["lon"].max()), float(df["lat"].max()))


def fetch_latest(client: ApiClient, opts: ViewOptions, reporting: int) -> tuple[
        pd.DataFrame, dict[str, Any] | None, pdk.ViewState | None, bool]:
    """The map's vehicles: (latest, density grid or None, view or None, sampled)."""
    scope = list(opts.vehicle_filter) or None
    if scope or reporting <= opts.point_budget:
        return events_frame(client.latest(scope, include_stale=opts.include_stale)), \
            None, None, False
    budget = opts.point_budget
    if opts.follow:  # zoomed in: the followed car's viewport only
        followed = events_frame(client.latest([opts.follow], include_stale=opts.include_stale))
        if not followed.empty:
            view = maps.view_state(followed, opts.follow)
            latest = events_frame(client.latest(bbox=maps.view_bbox(view), limit=budget,
                                                include_stale=opts.include_stale))
            if opts.follow not in set(latest["vehicle_id"]):
                latest = pd.concat([followed, latest], ignore_index=True)
            return latest, None, view, True
    latest = events_frame(client.latest(limit=min(budget, opts.density_sample),
                                        include_stale=opts.include_stale))
    area = opts.area or _bounds(latest)
    if area is None:
        return latest, None, None, True
    grid = client.density(area, opts.density_cells)
    return latest, grid, maps.fit_view(area), True


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
    """Fetch and frame everything the live panels show. Raises the client's errors for the
    stats and the vehicles; a failing auxiliary call (recent events, chart series,
    violations, trails) leaves its panels empty and is named in ``Snapshot.missing``."""
    scope = list(opts.vehicle_filter) or None
    stats = client.stats()
    reporting = stats.get("vehicles_reporting", 0)
    reporting = reporting if isinstance(reporting, int) and not isinstance(reporting, bool) \
        else 0
    latest, grid, view, sampled = fetch_latest(client, opts, reporting)
    latest = latest.sort_values("vehicle_id", kind="stable").reset_index(drop=True)
    ids = latest.loc[~latest["stale"], "vehicle_id"].tolist()
    if latest.empty:
        empty = events_frame([])
        return Snapshot(now, stats, latest, empty, empty, empty, trails_frame([]))
    chart_ids = pick_vehicles(ids, opts, opts.chart_vehicles)
    trail_ids = pick_vehicles(ids, opts, opts.max_trails)
    missing: list[str] = []

    def part(name: str, call: Callable[[], list[Any]]) -> list[Any]:
        """An auxiliary call: if it fails, its panels are empty and ``missing`` names it."""
        try:
            return call()
        except (ApiError, ApiUnavailable) as exc:
            why = f"HTTP {exc.status}" if isinstance(exc, ApiError) else "no answer"
            missing.append(f"{name} ({why})")
            return []

    recent = events_frame(part("recent events", lambda: client.recent(opts.recent_limit,
                                                                      scope)))
    # no active vehicle (only silent ones shown): no ids, which the API would read as "all"
    series = events_frame(part("chart series", lambda: client.recent(
        opts.series_limit, chart_ids)) if chart_ids else [])
    since = now - timedelta(minutes=opts.violation_window_min)
    viol_items = part("violations", lambda: client.violations(opts.violations_limit, scope,
                                                              since=since))
    violations = events_frame(viol_items)
    trails = trails_frame(part("trails", lambda: client.trails(
        trail_ids, opts.trail_points)) if trail_ids else [])
    return Snapshot(now, stats, latest, recent, series, violations, trails, chart_ids,
                    trail_ids, violations_capped=len(viol_items) >= opts.violations_limit,
                    density=grid, view=view, sampled=sampled, missing=missing)
