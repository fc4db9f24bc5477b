"""Pure tests of the altair builders and the panel logic (KPIs, tables, CSV, snapshot)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import altair as alt
import pandas as pd
import pytest

from tests.support.synthetic import as_items, fleet_events, trail_items
from ui import charts
from ui.frames import events_frame, violation_kinds, windows_frame
from ui.palette import LOW_FUEL_PCT, ROAD_TYPE_COLORS, VIOLATION_KIND_COLORS, hex_color
from ui.panels import (
    Layers,
    build_panels,
    compute_kpis,
    csv_bytes,
    kpi_deltas,
    page,
    violations_table,
)
from ui.snapshot import Snapshot, ViewOptions, fetch_snapshot, pick_vehicles

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def items() -> list[dict]:
    return as_items(fleet_events(12, 30, T0))


@pytest.fixture(scope="module")
def events(items: list[dict]) -> pd.DataFrame:
    return events_frame(items)


def layers_of(chart: alt.TopLevelMixin) -> list[dict]:
    spec = chart.to_dict()
    return spec.get("layer", [spec])


def test_speed_chart_draws_speed_and_the_limit(events: pd.DataFrame) -> None:
    speed, limit = layers_of(charts.speed_chart(events))
    assert speed["mark"]["type"] == "line"
    assert speed["encoding"]["x"] == {**speed["encoding"]["x"], "field": "timestamp",
                                      "type": "temporal"}
    assert speed["encoding"]["y"]["field"] == "speed_kmh"
    assert speed["encoding"]["color"]["field"] == "vehicle_id"
    assert limit["encoding"]["y"]["field"] == "speed_limit_kmh"
    assert limit["mark"]["strokeDash"] == [5, 4]
    assert limit["mark"]["interpolate"] == "step-after"


def test_rpm_chart_has_the_redline(events: pd.DataFrame) -> None:
    chart = charts.rpm_chart(events, redline_rpm=6200)
    line, rule = layers_of(chart)
    assert line["encoding"]["y"]["field"] == "engine_rpm"
    assert rule["mark"]["type"] == "rule" and rule["encoding"]["y"]["field"] == "redline"
    spec = chart.to_dict()
    assert {"redline": 6200} in [row for ds in spec["datasets"].values() for row in ds]


def test_speed_distribution_by_road_type(events: pd.DataFrame) -> None:
    chart = charts.speed_distribution_chart(events)
    (spec,) = layers_of(chart)
    assert spec["mark"]["type"] == "bar"
    assert spec["encoding"]["x"] == {**spec["encoding"]["x"], "field": "speed_bin",
                                     "bin": "binned"}
    assert spec["encoding"]["x2"]["field"] == "speed_bin_end"
    assert spec["encoding"]["y"] == {**spec["encoding"]["y"], "field": "events",
                                     "aggregate": "sum"}
    rows = [r for ds in chart.to_dict()["datasets"].values() for r in ds]
    assert sum(r["events"] for r in rows) == len(events)  # binned in pandas: small payload
    assert len(rows) <= 3 * 20
    by_bin = events.assign(b=(events["speed_kmh"] // 10 * 10).astype(int)).groupby(
        ["b", "road_type"]).size()
    assert all(by_bin[(r["speed_bin"], r["road_type"])] == r["events"] for r in rows)
    color = spec["encoding"]["color"]
    assert color["field"] == "road_type"
    assert color["scale"] == {"domain": list(ROAD_TYPE_COLORS),
                              "range": [hex_color(c) for c in ROAD_TYPE_COLORS.values()]}


def test_violations_over_time_by_kind(events: pd.DataFrame) -> None:
    kinds = violation_kinds(events[events["speeding"] | events["rpm_over_redline"]])
    assert set(kinds["kind"]) == {"speeding", "over-redline"}
    assert len(kinds) == int(events["speeding"].sum() + events["rpm_over_redline"].sum())
    chart = charts.violations_chart(kinds)
    (spec,) = layers_of(chart)
    assert spec["encoding"]["x"] == {**spec["encoding"]["x"], "field": "minute",
                                     "type": "ordinal"}  # one bar per minute
    rows = [r for ds in chart.to_dict()["datasets"].values() for r in ds]
    assert sum(r["violations"] for r in rows) == len(kinds)
    assert {r["minute"] for r in rows} == {"08:00"}  # 30 s of events from 08:00 UTC
    assert spec["encoding"]["color"]["scale"]["domain"] == ["speeding", "over-redline"]
    assert spec["encoding"]["color"]["scale"]["range"] == [
        hex_color(c) for c in VIOLATION_KIND_COLORS.values()]


def test_fuel_chart(events: pd.DataFrame) -> None:
    line, rule = layers_of(charts.fuel_chart(events))
    assert line["encoding"]["y"]["field"] == "fuel_level_pct"
    assert line["encoding"]["y"]["scale"] == {"domain": [0, 100]}
    assert rule["encoding"]["y"]["field"] == "low"
    assert LOW_FUEL_PCT == 15.0


def test_analytics_charts() -> None:
    start = pd.Timestamp("2026-01-01T08:00:00Z")
    veh = windows_frame([{
        "window_start": (start + timedelta(minutes=m)).isoformat(),
        "window_end": (start + timedelta(minutes=m + 1)).isoformat(),
        "vehicle_id": f"V{v}", "samples": 60 * (v + 1), "avg_speed_kmh": 50.0 + v,
        "max_speed_kmh": 70.0, "speeding_count": v, "redline_count": 0, "distance_km": 1.0,
        "fuel_used_pct": 0.1} for m in range(3) for v in range(12)])
    (spec,) = layers_of(charts.vehicle_windows_chart(veh, top=10))
    assert spec["encoding"]["y"]["field"] == "avg_speed_kmh"
    chart = charts.vehicle_windows_chart(veh, top=10)
    shown = {row["vehicle_id"] for ds in chart.to_dict()["datasets"].values() for row in ds}
    assert shown == {f"V{v}" for v in range(2, 12)}  # the 10 busiest
    road = veh.rename(columns={"vehicle_id": "road_type"}).assign(vehicles=3)
    (spec,) = layers_of(charts.road_windows_chart(road))
    assert spec["encoding"]["color"]["field"] == "road_type"


def _snapshot(items: list[dict], now: datetime) -> Snapshot:
    events = events_frame(items)
    latest = events.groupby("vehicle_id").tail(1).sort_values("vehicle_id").reset_index(drop=True)
    viol = events[events["speeding"] | events["rpm_over_redline"]]
    return Snapshot(now, {"vehicles_reporting": 12, "events_per_s": 12.0}, latest, events,
                    events[events["vehicle_id"] == "CAR00000"], viol.iloc[::-1],
                    events.iloc[0:0][["vehicle_id", "timestamp", "lat", "lon", "speed_kmh"]])


def test_kpis_and_their_deltas(items: list[dict]) -> None:
    snap = _snapshot(items, T0)
    kpis = compute_kpis(snap, 5)
    by = {k.label: k.value for k in kpis}
    latest = snap.latest
    assert by["Vehicles reporting"] == 12 and by["Events / s"] == 12.0
    assert by["Low fuel"] == (latest["fuel_level_pct"] <= 15).sum() == 2
    assert by["Active fault codes"] == 2  # CAR00004, CAR00009
    assert by["Avg speed (km/h)"] == pytest.approx(latest.loc[latest["speed_kmh"] >= 1,
                                                           "speed_kmh"].mean())
    assert by["Violations (5 min)"] == len(snap.violations)
    assert kpi_deltas(kpis, None) == [None] * 6
    prev = {**by, "Low fuel": 5.0}
    deltas = kpi_deltas(kpis, prev)
    assert deltas[4] == -3.0 and deltas[0] == 0


def test_violations_table_is_newest_first_and_csv_is_defused(items: list[dict]) -> None:
    snap = _snapshot(items, T0)
    table = violations_table(snap.violations.sample(frac=1.0, random_state=1))
    assert table["timestamp"].is_monotonic_decreasing
    assert set(table["kind"]) <= {"speeding", "over-redline", "speeding + over-redline"}
    evil = table.head(2).copy()
    evil["vehicle_id"] = ["=HYPERLINK(\"x\")", "@SUM(A1)"]
    back = pd.read_csv(io.BytesIO(csv_bytes(evil)))
    assert list(back["vehicle_id"]) == ["'=HYPERLINK(\"x\")", "'@SUM(A1)"]
    assert list(back.columns) == list(table.columns)


def test_exportable_defuses_text_cells_only() -> None:
    from ui.tables import exportable
    df = pd.DataFrame({"vehicle_id": ["=1+1", "CAR", "-x", "@@=(", "\tcmd"],
                       "speed_kmh": [-5.0, 1.0, 2.0, 3.0, 4.0],
                       "faults": ["+A", "", None, "a=b", "x"],
                       "road_type": pd.Series(["urban", "=u", "rural", "highway", "urban"],
                                              dtype="string")})
    out = exportable(df)
    assert out["vehicle_id"].tolist() == ["'=1+1", "CAR", "'-x", "'@@=(", "'\tcmd"]
    assert out["speed_kmh"].tolist() == [-5.0, 1.0, 2.0, 3.0, 4.0]  # numbers stay numbers
    assert out["faults"].tolist() == ["'+A", "", None, "a=b", "x"]
    assert out["road_type"].tolist()[1] == "'=u"
    assert df["vehicle_id"].iloc[0] == "=1+1"  # a copy
    clean = pd.DataFrame({"vehicle_id": ["CAR", "a=b"], "speed_kmh": [-1.0, 2.0]})
    assert exportable(clean) is clean  # nothing to defuse: the same frame


def test_chart_data_is_defused_too(items: list[dict]) -> None:
    """An altair chart's "Show data" table has the same CSV download as a table."""
    snap = _snapshot(items, T0)
    evil = snap.series.assign(vehicle_id="=HYPERLINK(1)")
    spec = charts.speed_chart(evil).to_dict()
    rows = [r for d in spec["datasets"].values() for r in d if "vehicle_id" in r]
    assert rows and {r["vehicle_id"] for r in rows} == {"'=HYPERLINK(1)"}


def test_fleet_table_pages_sort_the_whole_fleet() -> None:
    df = pd.DataFrame({"vehicle_id": [f"V{i:03d}" for i in range(120)],
                       "speed_kmh": [float(i % 50) for i in range(120)]})
    first = page(df, "speed_kmh", False, 1, 50)
    assert len(first) == 50 and first["speed_kmh"].iloc[0] == 49.0
    last = page(df, "vehicle_id", True, 3, 50)
    assert list(last["vehicle_id"]) == [f"V{i:03d}" for i in range(100, 120)]


def test_build_panels_respects_layer_toggles(items: list[dict]) -> None:
    snap = _snapshot(items, T0)
    on = build_panels(snap, Layers(), "CAR00001", 6200, 5)
    assert [layer.type for layer in on.deck.layers] == [
        "HeatmapLayer", "ScatterplotLayer", "ScatterplotLayer"]  # no trails in this snapshot
    assert on.deck.initial_view_state.zoom == 14.0
    assert set(on.charts) == {"speed", "rpm", "distribution", "violations", "fuel"}
    assert all(c is not None for c in on.charts.values())
    off = build_panels(snap, Layers(heatmap=False, violations=False), None, 6200, 5)
    assert [layer.id for layer in off.deck.layers] == ["vehicles"]
    assert len(on.fleet) == 12 and "last_seen" in on.fleet.columns


class FakeClient:
    """In-memory stand-in for ApiClient (pure unit test of the fetch plan)."""

    def __init__(self, items: list[dict]) -> None:
        self.items, self.calls = items, []

    def stats(self):
        self.calls.append(("stats",))
        return {"vehicles_reporting": 12, "events_per_s": 3.0}

    def latest(self, ids=None, *, bbox=None, limit=None, include_stale=False):
        self.calls.append(("latest", ids))
        last: dict[str, dict] = {}
        for it in self.items:
            last[it["vehicle_id"]] = it
        return list(last.values())

    def recent(self, limit, ids=None, since=None, until=None):
        self.calls.append(("recent", limit, ids))
        return [i for i in self.items if ids is None or i["vehicle_id"] in ids][-limit:]

    def violations(self, limit, ids=None, since=None, until=None):
        self.calls.append(("violations", limit, ids, since))
        return [i for i in self.items if i["speeding"] or i["rpm_over_redline"]][::-1][:limit]

    def trails(self, ids, points):
        self.calls.append(("trails", ids, points))
        return [t for t in trail_items(fleet_events(12, 30, T0), points) if t["vehicle_id"] in ids]


def test_fetch_snapshot_caps_what_it_asks_for(items: list[dict]) -> None:
    client = FakeClient(items)
    opts = ViewOptions(follow="CAR00007", max_trails=4, chart_vehicles=2)
    now = T0 + timedelta(minutes=1)
    snap = fetch_snapshot(client, opts, now)  # type: ignore[arg-type]
    assert snap.chart_ids == ["CAR00007", "CAR00000"]
    assert snap.trail_ids == ["CAR00007", "CAR00000", "CAR00001", "CAR00002"]
    assert ("trails", snap.trail_ids, 60) in client.calls
    assert ("recent", 1500, ["CAR00007", "CAR00000"]) in client.calls
    (viol_call,) = [c for c in client.calls if c[0] == "violations"]
    assert viol_call[3] == now - timedelta(minutes=5)
    assert set(snap.series["vehicle_id"]) == {"CAR00007", "CAR00000"}
    assert sorted(set(snap.trails["vehicle_id"])) == sorted(snap.trail_ids)
    assert pick_vehicles(["A", "B"], ViewOptions(vehicle_filter=("B",)), 5) == ["B"]
