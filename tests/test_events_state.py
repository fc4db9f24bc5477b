"""The events job's per-vehicle state machine and its contract, without Spark or Kafka."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from analytics.events_config import DecodeCache, decode
from analytics.events_state import (
    Definitions,
    Params,
    PreparedFence,
    Telemetry,
    VehicleState,
    next_silent_check,
    process,
    silent_due,
)
from common.fleet_events import (
    ALERT_RULE,
    DEFAULT_ALERT_RULES,
    FLEET_EVENT,
    MAX_ALERT_RULES,
    MAX_GEOFENCE_VERTICES,
    FuelLowRule,
    Geofence,
    SpeedingSustainedRule,
    derived_event_id,
)

T0_US = int(dt.datetime(2026, 1, 1, 8, tzinfo=dt.UTC).timestamp() * 1_000_000)
NO_RULES = Definitions(rules=())


def tel(t_s: float, seq: int, speed: float = 50.0, *, lat: float = 52.0, lon: float = 21.0,
        fuel: float = 50.0, odo: float = 0.0, speeding: bool = False, redline: bool = False,
        codes: tuple[str, ...] = (), trip: str = "", ignition: bool = True) -> Telemetry:
    return Telemetry(T0_US + int(t_s * 1e6), seq, lat, lon, speed, fuel, odo, speeding,
                     redline, codes, trip, ignition)


def kinds(out: list[Any]) -> list[str]:
    return [e.kind for e in out]


def run(events: list[Telemetry], params: Params | None = None, defs: Definitions = NO_RULES,
        state: VehicleState | None = None) -> tuple[VehicleState, list[Any]]:
    state = state or VehicleState()
    out = process("CAR", state, events, params or Params(), defs)
    return VehicleState.from_json(state.to_json()), out  # the state survives JSON


# ---- trips --------------------------------------------------------------------------------

def test_a_trip_ends_after_the_stop_time_where_the_car_stopped() -> None:
    # moves 0..60 s at 36 km/h (10 m/s), stands 60..70 (a stop), moves to 100, stands from 100
    evs, lon = [], 21.0
    for i, t in enumerate(range(0, 500, 10)):
        speed = 36.0 if t < 60 or 70 <= t < 100 else 0.0
        evs.append(tel(t, i, speed, lon=lon))
        lon += 1e-4 if speed else 0.0
    state, out = run(evs, Params(trip_end_stop_s=300))
    assert kinds(out) == ["trip_started", "trip_ended"]
    s = out[1].summary
    assert (s.end_reason, s.started_at, s.ended_at) == (
        "stopped", out[0].time, out[0].time + dt.timedelta(seconds=100))
    assert (s.duration_s, s.moving_s, s.idle_s, s.stops, s.samples) == (100, 90, 10, 1, 41)
    assert s.max_speed_kmh == 36.0 and s.end_location.lon == pytest.approx(21.0009)
    # no odometer: haversine along the 9 moving steps of 1e-4 degrees of longitude at 52 N
    step = 6371.0088 * np.radians(1e-4) * np.cos(np.radians(52.0))
    assert s.distance_km == pytest.approx(9 * step, rel=1e-5)
    assert s.avg_speed_kmh == pytest.approx(s.distance_km / (90 / 3600), rel=1e-3)
    assert out[1].time == s.ended_at and state.trip is None


def test_ignition_starts_and_parks_a_trip_with_odometer_fuel_and_violations() -> None:
    evs = [tel(0, 0, 0, ignition=False, trip="t1", odo=10),
           tel(10, 1, 0, trip="t2", odo=10, fuel=40),  # ignition on: the trip starts
           tel(11, 2, 30, trip="t2", odo=10.01, fuel=39.5, speeding=True),
           tel(12, 3, 30, trip="t2", odo=10.02, fuel=45, speeding=True, redline=True),
           tel(13, 4, 30, trip="t2", odo=10.03, fuel=44),
           tel(14, 5, 0, trip="t2", odo=10.04, fuel=43.75, speeding=True),
           tel(20, 6, 0, trip="t2", odo=10.04, ignition=False)]
    _, out = run(evs)
    assert kinds(out) == ["trip_started", "trip_ended"]
    start, end = out
    assert (start.trip_id, start.source_seq, start.odometer_km) == ("t2", 1, 10.0)
    s = end.summary
    assert (s.end_reason, s.duration_s, s.moving_s, s.idle_s) == ("parked", 10, 3, 7)
    assert (s.distance_km, s.fuel_used_pct, s.stops) == (0.04, 0.5 + 1 + 0.25, 0)
    assert s.violations.model_dump() == {"speeding": 2, "speeding_s": 8.0, "over_redline": 1,
                                         "alerts": 0}
    assert end.event_id == derived_event_id("trip_ended", "CAR", "t2", T0_US + 10_000_000)


def test_a_new_trip_id_ends_the_trip_and_a_reused_one_gets_a_derived_id() -> None:
    _, out = run([tel(0, 0, trip="a"), tel(1, 1, trip="a"), tel(2, 2, trip="b")])
    assert [(e.kind, e.trip_id) for e in out] == [
        ("trip_started", "a"), ("trip_ended", "a"), ("trip_started", "b")]
    assert out[1].summary.end_reason == "new_trip" and out[1].source_seq == 1
    # a trip ended by standing still, then driving on under the same telemetry trip id
    _, out = run([tel(0, 0, trip="a"), tel(1, 1, 0, trip="a"), tel(400, 2, 0, trip="a"),
                  tel(401, 3, trip="a")])
    assert kinds(out) == ["trip_started", "trip_ended", "trip_started"]
    assert out[2].trip_id not in ("a", "") and len(out[2].trip_id) == 36


def test_duplicates_and_late_events_are_skipped_and_batches_compose() -> None:
    evs = [tel(t, i, 30, redline=i % 3 == 1) for i, t in enumerate(range(20))]
    defs = Definitions.of(DEFAULT_ALERT_RULES)
    _, whole = run(evs, defs=defs)
    state = VehicleState()
    parts: list[Any] = []
    for chunk in (evs[:7], evs[5:12][::-1], evs[12:], evs[3:4]):  # overlaps, reversed, a repeat
        parts += process("CAR", state, chunk, Params(), defs)
        state = VehicleState.from_json(state.to_json())
    assert [e.model_dump() for e in parts] == [e.model_dump() for e in whole]
    assert state.skipped == 2 + 1


# ---- geofences ----------------------------------------------------------------------------

def square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def test_point_in_polygon_with_a_hole_and_a_concave_outline() -> None:
    ring = {"type": "Polygon", "coordinates": [square(0, 0, 10, 10), square(4, 4, 6, 6)]}
    fence = PreparedFence(Geofence(id="f", name="F", geometry=ring))
    lon = np.array([1, 5, 9.9, 10.1, -1, 5, 4.5])
    lat = np.array([1, 5, 9.9, 5, 5, 3.9, 6.5])
    assert fence.contains(lon, lat).tolist() == [True, False, True, False, False, True, True]
    u = {"type": "Polygon", "coordinates": [[[0, 0], [3, 0], [3, 3], [2, 3], [2, 1], [1, 1],
                                              [1, 3], [0, 3], [0, 0]]]}
    fence = PreparedFence(Geofence(id="u", name="U", geometry=u))
    assert fence.contains(np.array([0.5, 1.5, 1.5, 2.5]),
                          np.array([2.0, 2.0, 0.5, 2.0])).tolist() == [True, False, True, True]


def test_geofence_enter_and_exit_with_dwell() -> None:
    fence = Geofence(id="yard", name="Yard",
                     geometry={"type": "Polygon", "coordinates": [square(21.0, 52.0, 21.1, 52.1)]})
    defs = Definitions(rules=(), fences=(PreparedFence(fence),))
    evs = [tel(0, 0, lon=21.05, lat=52.05), tel(5, 1, lon=21.2, lat=52.05),
           tel(9, 2, lon=21.05, lat=52.05), tel(30, 3, lon=21.06, lat=52.06),
           tel(40, 4, lon=20.9, lat=52.05)]
    _, out = run(evs, defs=defs)
    crossings = [(e.kind, e.source_seq, getattr(e, "dwell_s", None)) for e in out
                 if e.kind.startswith("geofence")]
    assert crossings == [("geofence_entered", 0, None), ("geofence_exited", 1, 5.0),
                         ("geofence_entered", 2, None), ("geofence_exited", 4, 31.0)]
    assert {e.geofence_name for e in out if e.kind.startswith("geofence")} == {"Yard"}


# ---- alerts -------------------------------------------------------------------------------

def rule(**doc: Any) -> Any:
    return ALERT_RULE.validate_python({"id": doc.get("kind", "r"), **doc})


def alerts(out: list[Any]) -> list[tuple[str, int]]:
    return [(e.rule_id, e.source_seq) for e in out if e.kind == "alert"]


@pytest.mark.parametrize(("doc", "rows", "want"), [
    ({"kind": "speeding_sustained", "duration_s": 3},
     [{"speeding": s} for s in (1, 1, 1, 1, 1, 0, 1, 1, 1, 1)], [3, 9]),
    ({"kind": "harsh_brake", "threshold_mps2": 5},
     [{"speed": v} for v in (100, 80, 60, 59, 30)], [1, 4]),
    ({"kind": "harsh_accel", "threshold_mps2": 3},
     [{"speed": v} for v in (0, 11, 22, 23, 40)], [1, 4]),
    ({"kind": "over_redline"}, [{"redline": r} for r in (0, 1, 1, 0, 1)], [1, 4]),
    ({"kind": "fuel_low", "threshold_pct": 10},
     [{"fuel": f} for f in (12, 9, 8, 14, 9, 15, 16, 5)], [1, 7]),
    ({"kind": "new_fault_code"},
     [{"codes": c} for c in ((), ("P1",), ("P1", "P2"), ("P2",), ("P1", "P2"))], [1, 2, 4]),
])
def test_each_rule_fires_once_per_episode(doc: dict[str, Any], rows: list[dict[str, Any]],
                                          want: list[int]) -> None:
    r = rule(**doc)
    evs = [tel(i, i, **{"speed": 50.0, **row}) for i, row in enumerate(rows)]
    _, out = run(evs, defs=Definitions.of([r]))
    assert alerts(out) == [(r.id, s) for s in want]
    ids = [e.event_id for e in out]
    assert len(set(ids)) == len(ids)


def test_accelerations_across_a_long_gap_are_not_measured() -> None:
    r = rule(kind="harsh_brake", threshold_mps2=1)
    _, out = run([tel(0, 0, 100), tel(60, 1, 0)], defs=Definitions.of([r]))
    assert alerts(out) == []


def test_silent_fires_once_per_silence_by_processing_time() -> None:
    r = rule(kind="silent", duration_s=10)
    defs = Definitions.of([r])
    state = VehicleState()
    process("CAR", state, [tel(0, 0), tel(1, 1)], Params(), defs, wall_ms=1_000_000)
    assert next_silent_check(state, defs) == 1_010_000
    assert silent_due("CAR", state, 1_009_999, defs) == ([], 1_010_000)
    out, nxt = silent_due("CAR", state, 1_010_000, defs)
    assert alerts(out) == [("silent", 1)] and nxt is None
    assert out[0].time == dt.datetime(2026, 1, 1, 8, 0, 11, tzinfo=dt.UTC)
    assert silent_due("CAR", state, 2_000_000, defs)[0] == []  # once per silence
    assert next_silent_check(state, defs) is None
    process("CAR", state, [tel(100, 2)], Params(), defs, wall_ms=3_000_000)  # heard again
    assert next_silent_check(state, defs) == 3_010_000


def test_rules_and_fences_are_data_with_defaults() -> None:
    fence = {"id": "a", "name": "A", "geometry": {"type": "Polygon",
                                                  "coordinates": [square(0, 0, 1, 1)]}}
    defs, bad = decode({b"a": json.dumps(fence).encode(), b"b": b"{}"},
                       {b"x": b'{"id": "x", "kind": "over_redline", "enabled": false}'})
    assert bad == 1 and [f.id for f in defs.fences] == ["a"]
    assert defs.rules == ()  # a rule, if disabled, replaces the defaults: no alerts at all
    assert decode({}, {b"junk": b"{}"})[0].rules == DEFAULT_ALERT_RULES  # no valid rule
    defs, bad = decode({}, {b"x": b'{"id": "x", "kind": "fuel_low", "threshold_pct": 5}'})
    assert bad == 0 and [r.id for r in defs.rules] == ["x"]
    assert {r.kind for r in DEFAULT_ALERT_RULES} == {
        "speeding_sustained", "harsh_brake", "harsh_accel", "over_redline", "fuel_low",
        "new_fault_code", "silent"}


# ---- the contract -------------------------------------------------------------------------

@pytest.mark.parametrize(("coordinates", "message"), [
    ([[[0, 0], [1, 0], [1, 1], [0, 1]]], "ring is not closed"),
    ([[[0, 0], [1, 0], [0, 0]]], "at least 4 positions"),
    ([[[0, 0], [181, 0], [1, 1], [0, 0]]], "out of range"),
    ([[[0, 0], [1, 0], [1, 91], [0, 0]]], "out of range"),
    ([square(0, 0, 1, 1), [[0.2, 0.2], [0.4, 0.2], [0.4, 0.4], [0.2, 0.4]]],
     "hole 1: ring is not closed"),
    ([[[i / 1000, (i % 2) / 1000] for i in range(MAX_GEOFENCE_VERTICES + 1)] + [[0, 0]]],
     f"too many vertices: {MAX_GEOFENCE_VERTICES + 1} > {MAX_GEOFENCE_VERTICES}"),
    ([], "at least 1 item"),
])
def test_geofence_validation(coordinates: list[Any], message: str) -> None:
    doc = {"id": "f", "name": "F", "geometry": {"type": "Polygon", "coordinates": coordinates}}
    with pytest.raises(ValidationError, match=message):
        Geofence.model_validate(doc)


def test_geofence_ids_names_and_a_configured_vertex_cap() -> None:
    geometry = {"type": "Polygon", "coordinates": [square(0, 0, 1, 1)]}
    for bad in ({"id": "", "name": "x"}, {"id": "a\u202eb", "name": "x"},
                {"id": " a", "name": "x"}, {"id": "a", "name": "bad\x1b[31m"},
                {"id": "a", "name": "x", "extra": 1}):
        with pytest.raises(ValidationError):
            Geofence.model_validate({**bad, "geometry": geometry})
    with pytest.raises(ValidationError, match="too many vertices: 4 > 3"):
        Geofence.model_validate({"id": "a", "name": "A", "geometry": geometry},
                                context={"max_vertices": 3})
    with pytest.raises(ValidationError):
        Geofence.model_validate({"id": "a", "name": "A", "geometry": {
            "type": "Point", "coordinates": [0, 0]}})


def test_rule_validation_and_derived_event_round_trip() -> None:
    for bad in ({"id": "r", "kind": "fuel_low"}, {"id": "r", "kind": "silent", "duration_s": 0},
                {"id": "r", "kind": "silent", "duration_s": 1e-300},
                {"id": "r", "kind": "harsh_brake", "threshold_mps2": float("nan")},
                {"id": "r", "kind": "nope"}):
        with pytest.raises(ValidationError):
            ALERT_RULE.validate_python(bad)
    _, out = run([tel(0, 0, redline=True)], defs=Definitions.of([rule(kind="over_redline")]))
    for event in out:
        doc = json.loads(event.model_dump_json())
        assert FLEET_EVENT.validate_python(doc) == event
        assert doc["time"].endswith("+00:00") and list(doc)[:2] == ["kind", "event_id"]
    assert derived_event_id("alert", "CAR", "r", 1) == derived_event_id("alert", "CAR", "r", 1)
    assert derived_event_id("alert", "CAR", "r", 1) != derived_event_id("alert", "CAR", "r", 2)


# ---------------------------------------------------------------------------- audit findings
def fence_doc(ident: str, ring: list[list[float]] | None = None) -> bytes:
    return json.dumps({"id": ident, "name": "F", "geometry": {
        "type": "Polygon", "coordinates": [ring or square(0, 0, 1, 1)]}}).encode()


def rule_doc(ident: str, **over: Any) -> bytes:
    return json.dumps({"id": ident, "kind": "fuel_low", "threshold_pct": 10, **over}).encode()


def test_the_job_reads_a_definition_by_the_shared_rule() -> None:
    fences = {b"depot": fence_doc("depot"), b"zzz-hidden": fence_doc("depot"),
              b"\xff": fence_doc("\ufffd"), b"big": b'"' + b"A" * 100_000 + b'"'}
    rules = {b"lax": rule_doc("lax", threshold_pct="10"), b"ok": rule_doc("ok")}
    defs, bad = decode(fences, rules)
    assert [f.id for f in defs.fences] == ["depot"] and [r.id for r in defs.rules] == ["ok"]
    assert bad == 4


def test_invalid_definitions_are_logged_once_without_their_content(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="analytics.events")
    ring = [[i * 1e-6, (i % 2) * 1e-6] for i in range(1500)] + [[0.0, 0.0]]
    fences = {b"huge": b'"' + b"B" * (20 << 20) + b'"', b"many": fence_doc("many", ring),
              b"ok": fence_doc("ok")}
    rules = {f"r{i}".encode(): rule_doc(f"r{i}") for i in range(10)}
    cache = DecodeCache()
    first, bad = decode(fences, rules, cache)
    assert bad == 2
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and max(map(len, lines)) < 300, lines
    assert not any("BBBB" in line or "1e-06" in line for line in lines)
    rules[b"one-more"] = rule_doc("one-more")  # a change re-validates only what changed
    second, bad = decode(fences, rules, cache)
    assert bad == 2 and len(caplog.records) == 2  # not logged again
    kept = {r.id: r for r in first.rules}
    assert all(kept[r.id] is r for r in second.rules if r.id != "one-more")
    fences[b"many"] = fence_doc("many")  # fixed: now valid
    third, bad = decode(fences, rules, cache)
    assert bad == 1 and sorted(f.id for f in third.fences) == ["many", "ok"]


def test_the_job_applies_at_most_max_alert_rules(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="analytics.events")
    rules = {f"r{i:05d}".encode(): rule_doc(f"r{i:05d}") for i in range(5000)}
    cache = DecodeCache()
    defs, bad = decode({}, rules, cache)
    assert bad == 0 and [r.id for r in defs.rules] == [f"r{i:05d}" for i in range(MAX_ALERT_RULES)]
    decode({}, rules, cache)
    over = [r.getMessage() for r in caplog.records if "over the cap" in r.getMessage()]
    assert over == [f"4800 valid alert rules over the cap of {MAX_ALERT_RULES} skipped "
                    "(those with the smallest ids apply)"]
    fuel = [FuelLowRule(id=f"f{i}", threshold_pct=10) for i in range(MAX_ALERT_RULES // 2)]
    speed = [SpeedingSustainedRule(id=f"s{i}", duration_s=5)
             for i in range(MAX_ALERT_RULES // 2)]
    state = VehicleState()
    events = [Telemetry(1_767_254_400_000_000 + i * 1_000_000, i, 48.1, 11.5 + i * 1e-4, 50.0,
                        8.0, 100.0 + i * 0.01, True, False, (), "T1", True) for i in range(50)]
    process("V1", state, events, Params(), Definitions.of(fuel + speed))
    assert len(state.to_json()) < 16_000  # 5,000 rules made it 110 KB
