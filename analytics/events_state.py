"""The per-vehicle state machine of the events job: pure, no Spark, no I/O, no clock.

``process(state, events, params, defs)`` folds one vehicle's new telemetry (any order; it
sorts them) into its :class:`VehicleState` and returns the derived events
(common.fleet_events models); ``silent_due(state, now_ms, defs)`` is the timer's half. The
Spark job (analytics.events_job) keeps the state in its state store between micro-batches;
tests drive these functions directly.

Definitions (every time is event time, from the telemetry's timestamps):

* **Trips.** A trip starts at an event with the ignition on that moves (speed >=
  ``moving_kmh``) or follows an event with the ignition off. It ends at an event with the
  ignition off (``parked``), when the car has stood still (ignition on) for
  ``trip_end_stop_s`` (``stopped``: the trip ends where and when it stopped, so the final
  wait is not in it), or when the telemetry's ``trip_id`` changes (``new_trip``). Between two
  consecutive events the interval counts as moving time if the earlier one moved, else as
  idle time; a stop is a standstill the car drove on from. Distance is the odometer delta
  (haversine between positions when there is no odometer), fuel used the sum of the level's
  drops (a refuel adds nothing), the average speed distance over moving time.
* **Geofences.** Point-in-polygon (even-odd rule, holes allowed) per event; ``entered`` when
  a position is inside and the previous one was not (or it is the first event), ``exited``
  with the dwell time. A geofence deleted while a car is inside is forgotten without an exit.
* **Alerts**, one per episode: the condition has to clear before the rule fires again
  (hysteresis). Acceleration is the speed change between consecutive events at most
  ``max_gap_s`` apart. ``fuel_low`` re-arms ``FUEL_LOW_REARM_PCT`` above its threshold.
* Events older than, or the same as, the newest already processed (by timestamp, then seq)
  are duplicates or too late: skipped and counted.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import BaseModel

from common.contract import Location
from common.fleet_events import (
    DEFAULT_ALERT_RULES,
    FUEL_LOW_REARM_PCT,
    Alert,
    Geofence,
    GeofenceEntered,
    GeofenceExited,
    TripEnded,
    TripStarted,
    TripSummary,
    Violations,
    derived_event_id,
)

EARTH_RADIUS_KM = 6371.0088
EndReason = Literal["parked", "stopped", "new_trip"]


class Telemetry(NamedTuple):
    """The fields of a telemetry event the state machine reads (timestamp as UTC microseconds)."""

    ts_us: int
    seq: int
    lat: float
    lon: float
    speed_kmh: float
    fuel_level_pct: float
    odometer_km: float
    speeding: bool
    rpm_over_redline: bool
    fault_codes: tuple[str, ...]
    trip_id: str
    ignition: bool


TELEMETRY_FIELDS: tuple[str, ...] = Telemetry._fields


@dataclass(frozen=True)
class Params:
    """Fixed for the job's life (from its settings)."""

    trip_end_stop_s: float = 300.0
    moving_kmh: float = 2.0
    max_gap_s: float = 30.0


class PreparedFence:
    """A geofence ready for vectorised point-in-polygon tests."""

    def __init__(self, fence: Geofence) -> None:
        self.id = fence.id
        self.name = fence.name
        self.rings = [np.asarray(r, dtype=float) for r in fence.geometry.coordinates]
        outer = self.rings[0]
        self.bbox = (outer[:, 0].min(), outer[:, 1].min(), outer[:, 0].max(), outer[:, 1].max())

    def contains(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Inside (even-odd rule over every ring) for each point."""
        result = np.zeros(len(lon), dtype=bool)
        x0, y0, x1, y1 = self.bbox
        cand = (lon >= x0) & (lon <= x1) & (lat >= y0) & (lat <= y1)
        if not cand.any():
            return result
        x, y = lon[cand][:, None], lat[cand][:, None]
        inside = np.zeros(len(x), dtype=bool)
        with np.errstate(divide="ignore", invalid="ignore"):
            for ring in self.rings:
                ax, ay, bx, by = ring[:-1, 0], ring[:-1, 1], ring[1:, 0], ring[1:, 1]
                straddles = (ay > y) != (by > y)
                crosses = straddles & (x < (bx - ax) * (y - ay) / (by - ay) + ax)
                inside ^= (crosses.sum(axis=1) % 2) == 1
        result[cand] = inside
        return result


@dataclass(frozen=True)
class Definitions:
    """Geofences and alert rules in effect (from the compacted topics)."""

    rules: tuple[Any, ...] = DEFAULT_ALERT_RULES
    fences: tuple[PreparedFence, ...] = ()

    @classmethod
    def of(cls, rules: Iterable[Any] | None = None,
           fences: Iterable[Geofence] = ()) -> Definitions:
        """``rules`` None or empty: the defaults; else those of ``rules`` that are enabled
        (so a rules topic holding only disabled rules raises no alert)."""
        chosen = tuple(rules or ()) or DEFAULT_ALERT_RULES
        return cls(tuple(r for r in chosen if r.enabled),
                   tuple(PreparedFence(f) for f in sorted(fences, key=lambda f: f.id)))


@dataclass
class VehicleState:
    """Everything the job remembers about one vehicle (JSON-serialisable, bounded)."""

    last: list[Any] | None = None  # the newest event processed, as a Telemetry list
    trip: dict[str, Any] | None = None
    last_trip_id: str = ""
    fences: dict[str, list[int]] = field(default_factory=dict)  # id -> [entered_us, seq]
    rules: dict[str, Any] = field(default_factory=dict)  # rule id -> its episode state
    silent_fired: dict[str, int] = field(default_factory=dict)  # rule id -> last ts_us
    last_wall_ms: int = 0
    timer_ms: int | None = None  # the processing-time timer registered for this vehicle
    skipped: int = 0

    def to_json(self) -> str:
        return json.dumps(vars(self), separators=(",", ":"))  # fields are JSON values already

    @classmethod
    def from_json(cls, text: str | None) -> VehicleState:
        return cls(**json.loads(text)) if text else cls()


def to_time(ts_us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=ts_us)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _loc(lat: float, lon: float) -> Location:
    return Location(lat=lat, lon=lon)


class _Run:
    """One call of :func:`process`: the vehicle, its state and what it emits."""

    def __init__(self, vid: str, state: VehicleState, params: Params, defs: Definitions):
        self.vid, self.s, self.p, self.d = vid, state, params, defs
        self.out: list[BaseModel] = []

    # ---- envelope -------------------------------------------------------------------------
    def _env(self, kind: str, ev: Telemetry, *id_parts: object,
             ts_us: int | None = None, lat: float | None = None,
             lon: float | None = None) -> dict[str, Any]:
        trip = self.s.trip
        return {"event_id": derived_event_id(kind, self.vid, *id_parts), "vehicle_id": self.vid,
                "time": to_time(ev.ts_us if ts_us is None else ts_us),
                "location": _loc(ev.lat if lat is None else lat, ev.lon if lon is None else lon),
                "trip_id": trip["id"] if trip else "", "source_seq": ev.seq}

    # ---- trips ----------------------------------------------------------------------------
    def start_trip(self, ev: Telemetry) -> None:
        tid = ev.trip_id if ev.trip_id and ev.trip_id != self.s.last_trip_id else \
            derived_event_id("trip", self.vid, ev.trip_id, ev.ts_us)
        self.s.trip = {"id": tid, "start_us": ev.ts_us, "start": [ev.lat, ev.lon],
                       "from_telemetry": bool(ev.trip_id), "telemetry_trip_id": ev.trip_id,
                       "distance_km": 0.0, "moving_s": 0.0, "idle_s": 0.0, "pending_idle_s": 0.0,
                       "max_speed": ev.speed_kmh, "stops": 0, "fuel_used": 0.0,
                       "speeding": int(ev.speeding), "speeding_s": 0.0,
                       "redline": int(ev.rpm_over_redline), "alerts": 0, "samples": 1,
                       "moved": ev.speed_kmh >= self.p.moving_kmh,
                       "stopped_since": None if ev.speed_kmh >= self.p.moving_kmh else
                       [ev.ts_us, ev.lat, ev.lon, ev.seq]}
        self.s.last_trip_id = tid
        self.out.append(TripStarted(**self._env("trip_started", ev, tid, ev.ts_us),
                                    odometer_km=ev.odometer_km, fuel_level_pct=ev.fuel_level_pct))

    def end_trip(self, reason: EndReason, ts_us: int, lat: float, lon: float, seq: int,
                 ev: Telemetry) -> None:
        t = self.s.trip
        assert t is not None
        idle = t["idle_s"] + (t["pending_idle_s"] if reason == "parked" else 0.0)
        moving = t["moving_s"]
        summary = TripSummary(
            started_at=to_time(t["start_us"]), ended_at=to_time(ts_us), end_reason=reason,
            duration_s=round((ts_us - t["start_us"]) / 1e6, 6), moving_s=round(moving, 6),
            idle_s=round(idle, 6), distance_km=round(t["distance_km"], 6),
            max_speed_kmh=t["max_speed"],
            avg_speed_kmh=round(t["distance_km"] / (moving / 3600), 3) if moving > 0 else 0.0,
            stops=t["stops"], fuel_used_pct=round(t["fuel_used"], 6),
            violations=Violations(speeding=t["speeding"], speeding_s=round(t["speeding_s"], 6),
                                  over_redline=t["redline"], alerts=t["alerts"]),
            start_location=_loc(*t["start"]), end_location=_loc(lat, lon), samples=t["samples"])
        env = self._env("trip_ended", ev, t["id"], t["start_us"], ts_us=ts_us, lat=lat, lon=lon)
        env["source_seq"] = seq
        self.out.append(TripEnded(**env, summary=summary))
        self.s.trip = None

    def advance_trip(self, prev: Telemetry, ev: Telemetry) -> None:
        t = self.s.trip
        assert t is not None
        dt_s = (ev.ts_us - prev.ts_us) / 1e6
        if ev.odometer_km > 0 and prev.odometer_km > 0 and ev.odometer_km >= prev.odometer_km:
            t["distance_km"] += ev.odometer_km - prev.odometer_km
        else:
            t["distance_km"] += haversine_km(prev.lat, prev.lon, ev.lat, ev.lon)
        if prev.speed_kmh >= self.p.moving_kmh:
            t["moving_s"] += dt_s
        else:
            t["pending_idle_s"] += dt_s
        if prev.speeding:
            t["speeding_s"] += dt_s
        t["speeding"] += int(ev.speeding and not prev.speeding)
        t["redline"] += int(ev.rpm_over_redline and not prev.rpm_over_redline)
        t["fuel_used"] += max(prev.fuel_level_pct - ev.fuel_level_pct, 0.0)
        t["max_speed"] = max(t["max_speed"], ev.speed_kmh)
        t["samples"] += 1

    def trips(self, prev: Telemetry | None, ev: Telemetry) -> None:
        t = self.s.trip
        if t is not None and ev.trip_id and t["from_telemetry"] and \
                ev.trip_id != t["telemetry_trip_id"] and ev.ignition and prev is not None:
            self.end_trip("new_trip", prev.ts_us, prev.lat, prev.lon, prev.seq, prev)
            t = None
        moving = ev.speed_kmh >= self.p.moving_kmh
        if t is None:
            if ev.ignition and (moving or (prev is not None and not prev.ignition)):
                self.start_trip(ev)
            return
        assert prev is not None
        self.advance_trip(prev, ev)
        if not ev.ignition:
            self.end_trip("parked", ev.ts_us, ev.lat, ev.lon, ev.seq, ev)
        elif moving:
            if t["stopped_since"] is not None and t["moved"]:
                t["stops"] += 1
            t["idle_s"] += t["pending_idle_s"]
            t["pending_idle_s"] = 0.0
            t["stopped_since"] = None
            t["moved"] = True
        else:
            if t["stopped_since"] is None:
                t["stopped_since"] = [ev.ts_us, ev.lat, ev.lon, ev.seq]
            since, lat, lon, seq = t["stopped_since"]
            if (ev.ts_us - since) / 1e6 >= self.p.trip_end_stop_s:
                self.end_trip("stopped", since, lat, lon, seq, ev)

    # ---- geofences ------------------------------------------------------------------------
    def geofences(self, ev: Telemetry, inside: dict[str, bool]) -> None:
        for fence in self.d.fences:
            was = self.s.fences.get(fence.id)
            if inside[fence.id] and was is None:
                self.s.fences[fence.id] = [ev.ts_us, ev.seq]
                self.out.append(GeofenceEntered(
                    **self._env("geofence_entered", ev, fence.id, ev.ts_us, ev.seq),
                    geofence_id=fence.id, geofence_name=fence.name))
            elif not inside[fence.id] and was is not None:
                del self.s.fences[fence.id]
                self.out.append(GeofenceExited(
                    **self._env("geofence_exited", ev, fence.id, ev.ts_us, ev.seq),
                    geofence_id=fence.id, geofence_name=fence.name, entered_at=to_time(was[0]),
                    dwell_s=round((ev.ts_us - was[0]) / 1e6, 6)))

    # ---- alerts ---------------------------------------------------------------------------
    def alert(self, ev: Telemetry, rule: Any, message: str, value: float | None = None,
              threshold: float | None = None, code: str | None = None) -> None:
        parts: list[object] = [rule.id, ev.ts_us, ev.seq] + ([code] if code else [])
        self.out.append(Alert(**self._env("alert", ev, *parts), rule_id=rule.id,
                              rule_kind=rule.kind, message=message[:256], value=value,
                              threshold=threshold, fault_code=code))
        if self.s.trip is not None:
            self.s.trip["alerts"] += 1

    def _episode(self, rule: Any, condition: bool) -> bool:
        """True when ``condition`` starts an episode of ``rule`` (it was clear before)."""
        active = bool(self.s.rules.get(rule.id))
        self.s.rules[rule.id] = condition
        return condition and not active

    def alerts(self, prev: Telemetry | None, ev: Telemetry) -> None:
        accel = None
        if prev is not None:
            dt_s = (ev.ts_us - prev.ts_us) / 1e6
            if 0 < dt_s <= self.p.max_gap_s:
                accel = (ev.speed_kmh - prev.speed_kmh) / 3.6 / dt_s
        for rule in self.d.rules:
            kind = rule.kind
            if kind == "speeding_sustained":
                st = self.s.rules.get(rule.id) or [None, False]
                if not ev.speeding:
                    st = [None, False]
                else:
                    st[0] = ev.ts_us if st[0] is None else st[0]
                    held = (ev.ts_us - st[0]) / 1e6
                    if not st[1] and held >= rule.duration_s:
                        st[1] = True
                        self.alert(ev, rule, f"speeding for {held:.0f} s", round(held, 3),
                                   rule.duration_s)
                self.s.rules[rule.id] = st
            elif kind in ("harsh_brake", "harsh_accel"):
                sign = -1.0 if kind == "harsh_brake" else 1.0
                measured = None if accel is None else sign * accel
                if self._episode(rule, measured is not None and measured >= rule.threshold_mps2):
                    what = "braking" if kind == "harsh_brake" else "acceleration"
                    self.alert(ev, rule, f"harsh {what}: {measured:.1f} m/s²",
                               round(measured or 0.0, 3), rule.threshold_mps2)
            elif kind == "over_redline":
                if self._episode(rule, bool(ev.rpm_over_redline)):
                    self.alert(ev, rule, "engine over the redline")
            elif kind == "fuel_low":
                active = bool(self.s.rules.get(rule.id))
                if not active and ev.fuel_level_pct < rule.threshold_pct:
                    self.s.rules[rule.id] = True
                    self.alert(ev, rule, f"fuel at {ev.fuel_level_pct:.1f} %",
                               ev.fuel_level_pct, rule.threshold_pct)
                elif active and ev.fuel_level_pct >= rule.threshold_pct + FUEL_LOW_REARM_PCT:
                    self.s.rules[rule.id] = False
            elif kind == "new_fault_code":
                before = set(prev.fault_codes) if prev is not None else set()
                for code in sorted(set(ev.fault_codes) - before):
                    self.alert(ev, rule, f"new fault code {code}", code=code)


def _telemetry(value: Sequence[Any]) -> Telemetry:
    """A Telemetry of plain Python values (rows from pandas carry numpy scalars and arrays)."""
    (ts_us, seq, lat, lon, speed, fuel, odo, speeding, redline, codes, trip, ignition) = value
    return Telemetry(int(ts_us), int(seq), float(lat), float(lon), float(speed), float(fuel),
                     float(odo), bool(speeding), bool(redline),
                     tuple(str(c) for c in codes) if codes is not None else (),
                     str(trip) if trip is not None else "", bool(ignition))


def process(vid: str, state: VehicleState, events: Iterable[Telemetry | Sequence[Any]],
            params: Params, defs: Definitions, wall_ms: int = 0) -> list[BaseModel]:
    """Fold ``events`` of vehicle ``vid`` into ``state`` (mutated); the derived events, in
    order. ``wall_ms`` is the processing time, remembered for the ``silent`` rule."""
    evs = sorted((_telemetry(e) for e in events), key=lambda e: (e.ts_us, e.seq))
    run = _Run(vid, state, params, defs)
    live = {r.id for r in defs.rules}
    state.rules = {k: v for k, v in state.rules.items() if k in live}
    state.silent_fired = {k: v for k, v in state.silent_fired.items() if k in live}
    fence_ids = {f.id for f in defs.fences}
    state.fences = {k: v for k, v in state.fences.items() if k in fence_ids}
    prev = _telemetry(state.last) if state.last is not None else None
    if prev is not None:
        fresh = [e for e in evs if (e.ts_us, e.seq) > (prev.ts_us, prev.seq)]
        state.skipped += len(evs) - len(fresh)
        evs = fresh
    if not evs:
        return run.out
    lon = np.fromiter((e.lon for e in evs), float, len(evs))
    lat = np.fromiter((e.lat for e in evs), float, len(evs))
    inside = {f.id: f.contains(lon, lat).tolist() for f in defs.fences}
    for i, ev in enumerate(evs):
        run.trips(prev, ev)
        run.geofences(ev, {k: v[i] for k, v in inside.items()})
        run.alerts(prev, ev)
        prev = ev
    if prev is not None:
        state.last = [*prev[:9], list(prev.fault_codes), *prev[10:]]
    state.last_wall_ms = wall_ms
    return run.out


def silent_due(vid: str, state: VehicleState, now_ms: int,
               defs: Definitions) -> tuple[list[BaseModel], int | None]:
    """The ``silent`` alerts due at processing time ``now_ms`` (each once per silence), and
    when to look again (ms; None: nothing pending)."""
    if state.last is None:
        return [], None
    last = _telemetry(state.last)
    run = _Run(vid, state, Params(), defs)
    pending: list[float] = []
    for rule in defs.rules:
        if rule.kind != "silent" or state.silent_fired.get(rule.id) == last.ts_us:
            continue
        due = state.last_wall_ms + rule.duration_s * 1000
        if now_ms >= due:
            state.silent_fired[rule.id] = last.ts_us
            env = run._env("alert", last, rule.id, "silent", last.ts_us, last.seq,
                           ts_us=last.ts_us + int(rule.duration_s * 1e6))
            run.out.append(Alert(**env, rule_id=rule.id, rule_kind="silent",
                                 message=f"no telemetry for {rule.duration_s:g} s",
                                 value=rule.duration_s, threshold=rule.duration_s))
            if state.trip is not None:
                state.trip["alerts"] += 1
        else:
            pending.append(due)
    return run.out, int(min(pending)) if pending else None


def next_silent_check(state: VehicleState, defs: Definitions) -> int | None:
    """When the next ``silent`` alert of this vehicle may be due (processing time, ms)."""
    durations = [r.duration_s for r in defs.rules if r.kind == "silent"
                 and (state.last is None or state.silent_fired.get(r.id) != state.last[0])]
    if not durations or state.last is None:
        return None
    return int(state.last_wall_ms + min(durations) * 1000)
