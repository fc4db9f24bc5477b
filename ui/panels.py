"""Snapshot -> what the live panels draw: KPIs, the deck, charts and tables (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import altair as alt
import pandas as pd
import pydeck as pdk

from ui import charts, maps
from ui.frames import violation_kinds
from ui.palette import LOW_FUEL_PCT
from ui.snapshot import Snapshot
from ui.tables import csv_bytes

__all__ = ["csv_bytes"]  # kept here for its callers; defined with the tables

FLEET_COLUMNS: tuple[str, ...] = (
    "vehicle_id", "state", "speed_kmh", "speed_limit_kmh", "engine_rpm", "gear",
    "fuel_level_pct", "road_type", "faults", "lat", "lon", "timestamp",
)
VIOLATION_COLUMNS: tuple[str, ...] = (
    "timestamp", "vehicle_id", "kind", "speed_kmh", "speed_limit_kmh", "engine_rpm",
    "road_type", "lat", "lon",
)
MAX_MAP_VIOLATIONS = 300
MAX_HEAT_POINTS = 2000


@dataclass(frozen=True)
class Layers:
    roads: bool = True
    vehicles: bool = True
    trails: bool = True
    heatmap: bool = True
    violations: bool = True


@dataclass
class Kpi:
    label: str
    value: float
    fmt: str = "{:,.0f}"
    help: str = ""
    inverse: bool = False  # a rise is bad (violations, faults)

    def text(self) -> str:
        return self.fmt.format(self.value)

    def delta_text(self, delta: float) -> str:
        """Signed, in the KPI's own precision: "+3", "-1.5", "0"."""
        digits = 1 if ".1f" in self.fmt else 0
        if round(delta, digits) == 0:
            return "0"
        return f"{delta:+,.{digits}f}"


@dataclass
class Panels:
    kpis: list[Kpi]
    deck: pdk.Deck
    charts: dict[str, alt.TopLevelMixin | None] = field(default_factory=dict)
    fleet: pd.DataFrame = field(default_factory=pd.DataFrame)
    violations: pd.DataFrame = field(default_factory=pd.DataFrame)


def compute_kpis(snap: Snapshot, window_min: int) -> list[Kpi]:
    """Over the active vehicles only: silent ones (shown greyed on request) count nowhere."""
    latest = snap.latest.loc[~snap.latest["stale"]]
    about = f" (of the {len(latest):,} fetched)" if snap.sampled else ""
    moving = latest.loc[latest["speed_kmh"] >= 1.0, "speed_kmh"]
    faults = int(sum(len(v) for v in latest["fault_codes"]))
    n_viol = len(snap.violations)
    return [
        Kpi("Vehicles reporting", float(snap.stats.get("vehicles_reporting", len(latest))),
            help="vehicles heard from within the web API's WEBAPI_VEHICLE_TIMEOUT_S"),
        Kpi("Events / s", float(snap.stats.get("events_per_s", 0.0)), "{:,.1f}",
            help="consumed by the web API over the last 10 s"),
        Kpi("Avg speed (km/h)", float(moving.mean()) if len(moving) else 0.0, "{:,.1f}",
            help="mean of the latest speed of each moving vehicle" + about),
        Kpi(f"Violations ({window_min} min)", float(n_viol),
            "{:,.0f}+" if snap.violations_capped else "{:,.0f}",
            help="speeding or over-redline events in the window", inverse=True),
        Kpi("Low fuel", float((latest["fuel_level_pct"] <= LOW_FUEL_PCT).sum()),
            help=f"vehicles at or below {LOW_FUEL_PCT:.0f}% fuel" + about, inverse=True),
        Kpi("Active fault codes", float(faults),
            help="OBD-II codes currently reported, summed over vehicles" + about,
            inverse=True),
    ]


def kpi_deltas(kpis: list[Kpi], previous: dict[str, float] | None) -> list[float | None]:
    """Change against the previous refresh (None on the first)."""
    if not previous:
        return [None] * len(kpis)
    return [k.value - previous[k.label] if k.label in previous else None for k in kpis]


def fleet_table(latest: pd.DataFrame) -> pd.DataFrame:
    return latest[list(FLEET_COLUMNS)].rename(columns={"timestamp": "last_seen"})


def violations_table(violations: pd.DataFrame) -> pd.DataFrame:
    """Newest first; kind spelled out; what the CSV download holds."""
    df = violations.copy()
    df["kind"] = [
        " + ".join(k for k, on in (("speeding", s), ("over-redline", r)) if on)
        for s, r in zip(df["speeding"], df["rpm_over_redline"], strict=True)
    ]
    df = df.sort_values("timestamp", ascending=False, kind="stable")
    return df[list(VIOLATION_COLUMNS)].reset_index(drop=True)


def page(df: pd.DataFrame, sort_by: str, ascending: bool, page_no: int,
         page_size: int) -> pd.DataFrame:
    """One page of a frame sorted server-side (so sorting covers every row, not the page)."""
    if sort_by in df.columns:
        df = df.sort_values(sort_by, ascending=ascending, kind="stable")
    start = max(0, page_no - 1) * page_size
    return df.iloc[start:start + page_size].reset_index(drop=True)


def build_deck(snap: Snapshot, layers: Layers, follow: str | None,
               base: Sequence[pdk.Layer] = ()) -> pdk.Deck:
    """The live map: the road network (``base``) under the live layers. Above the point
    budget and zoomed out, density cells replace the vehicle points."""
    out = list(base)
    if snap.density is not None:
        out.append(maps.density_layer(snap.density))
    if layers.heatmap and not snap.recent.empty:
        out.append(maps.heatmap_layer(snap.recent.tail(MAX_HEAT_POINTS)))
    if layers.trails and not snap.trails.empty:
        out.append(maps.trail_layer(snap.trails))
    if layers.violations and not snap.violations.empty:
        out.append(maps.violation_layer(snap.violations.head(MAX_MAP_VIOLATIONS)))
    if layers.vehicles and not snap.latest.empty and snap.density is None:
        out.append(maps.vehicle_layer(snap.latest, follow))
    view = snap.view or maps.view_state(snap.latest.loc[~snap.latest["stale"]]
                                        if snap.latest["stale"].any() else snap.latest, follow)
    return maps.fleet_deck(out, view)


def build_charts(snap: Snapshot, redline_rpm: int) -> dict[str, alt.TopLevelMixin | None]:
    series = snap.series
    kinds = violation_kinds(snap.violations)
    return {
        "speed": charts.speed_chart(series) if not series.empty else None,
        "rpm": charts.rpm_chart(series, redline_rpm) if not series.empty else None,
        "distribution": (charts.speed_distribution_chart(snap.recent)
                         if not snap.recent.empty else None),
        "violations": charts.violations_chart(kinds) if not kinds.empty else None,
        "fuel": charts.fuel_chart(series) if not series.empty else None,
    }


def build_panels(snap: Snapshot, layers: Layers, follow: str | None, redline_rpm: int,
                 window_min: int, base: Sequence[pdk.Layer] = ()) -> Panels:
    return Panels(
        kpis=compute_kpis(snap, window_min),
        deck=build_deck(snap, layers, follow, base),
        charts=build_charts(snap, redline_rpm),
        fleet=fleet_table(snap.latest),
        violations=violations_table(snap.violations),
    )


