"""The simulation as one object: network, fleet state, RNG and encoder, no I/O.

Both the daemon and ``--stdout`` mode drive it the same way: ``encode(ts)`` gives the
events due at the current state, ``keys`` their Kafka keys, ``advance()`` steps the fleet by
``dt``. Fleet size and rate can change between ticks; cars removed from the fleet are kept
aside (their state and ``seq`` kept), so a car that comes back continues its sequence.

Which cars report: a car with its ignition on reports every tick (the rate is per driving
car); a parked car (ignition off) sends a heartbeat every ``heartbeat_s`` (60 s by default),
the first one as it parks, like telematics units that sleep with the engine off and wake
periodically. ``seq`` rises by one per event *published*, so it stays gapless per vehicle
whatever the car does; a consumer tells a heartbeat by ``ignition: false``.

Devices are not synchronised (``phase_jitter``): car i reports at its own fixed phase
``phi_i`` in [0, 1) of each tick, stamped ``ts + phi_i * dt`` and placed where it then is;
a tick's events come in timestamp order. The phases are a pure function of the seed and the
car's index, so ``--stdout`` stays byte-reproducible.

Time of day: ``start_time`` (or the first ``encode``'s ``ts``) sets the simulated clock, from
which the daily demand decides how many cars are on the road (producer/demand.py).
Trips, parking and phases are on in the product (settings ``SIM_TRIPS``, ``SIM_PHASE_JITTER``,
see ``sim_options``); a ``Simulation`` built with the defaults drives every car all the time,
reporting on the tick (what unit tests and benchmarks of the driving want).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from common.contract import MAX_FLEET_SIZE, MAX_RATE_HZ, MIN_RATE_HZ
from producer import demand
from producer.builtin import warsaw
from producer.events import Encoder
from producer.fleet import (
    FleetParams,
    FleetState,
    concat,
    default_clock0,
    init_fleet,
    mean_lon,
    step,
    stop_lines,
    take,
)
from producer.geojson import load_roads
from producer.roads import RoadNetwork
from producer.settings import Settings, fleet_mix
from producer.vehicle import DEFAULT_FLEET_MIX

MAX_STEP_S = 1.0 / MIN_RATE_HZ
"""Longest step (the slowest rate): bounds fleet.step's sub-step loop at 100 sub-steps."""


def sim_options(settings: Settings) -> dict[str, Any]:
    """The Simulation keywords that come from settings (shared by the daemon and --stdout)."""
    return dict(sport_mode=settings.sim_sport_mode,
                speed_tolerance_kmh=settings.speed_tolerance_kmh,
                redline_rpm=settings.redline_rpm, fleet_mix=fleet_mix(settings.sim_fleet_mix),
                repair_s=settings.sim_repair_s, phase_jitter=settings.sim_phase_jitter,
                heartbeat_s=settings.sim_heartbeat_s, trips=settings.sim_trips)


def load_network(roads_file: Path | None) -> RoadNetwork:
    """The user's GeoJSON roads, or the built-in Warsaw network."""
    return warsaw() if roads_file is None else load_roads(roads_file)


class Simulation:
    def __init__(self, net: RoadNetwork, *, seed: int, fleet_size: int, rate_hz: float,
                 first_vehicle_id: str, run_key: str, sport_mode: bool = False,
                 speed_tolerance_kmh: float = 5.0, redline_rpm: int = 6200,
                 fleet_mix: tuple[float, ...] = DEFAULT_FLEET_MIX, repair_s: float = 86_400.0,
                 phase_jitter: bool = False, heartbeat_s: float = 60.0,
                 start_time: datetime | None = None, trips: bool = False) -> None:
        self.net = net
        self.seed = seed
        self.sport_mode = sport_mode
        self.fleet_mix = fleet_mix
        self.params = FleetParams(repair_s=repair_s, trips=trips)
        self.phase_jitter = phase_jitter
        self.heartbeat_s = heartbeat_s
        self.rng = np.random.default_rng(seed)
        self._clock_set = start_time is not None
        clock0 = default_clock0(net) if start_time is None else _seconds_of_day(start_time)
        self.state: FleetState = init_fleet(fleet_size, self.rng, net, sport_mode=sport_mode,
                                            fleet_mix=fleet_mix, clock0=clock0, trips=trips)
        self.reserve: FleetState | None = None
        self.rate_hz = MAX_RATE_HZ
        self.set_rate(rate_hz)
        self.encoder = Encoder(net, first_vehicle_id=first_vehicle_id, run_key=run_key,
                               speed_tolerance_kmh=speed_tolerance_kmh, redline_rpm=redline_rpm)
        self.encoder.ensure(fleet_size)
        self._last: np.ndarray = np.arange(fleet_size)
        self._phase0 = (seed * 0.7548776662466927) % 1.0
        self._by_phase: tuple[np.ndarray, np.ndarray] | None = None
        self._stops: tuple[FleetState, tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def size(self) -> int:
        return self.state.size

    @property
    def dt(self) -> float:
        return 1.0 / self.rate_hz

    @property
    def keys(self) -> list[bytes]:
        """Kafka keys (vehicle ids) of the events of the last ``encode``, in their order
        (before the first ``encode``: the whole fleet, in fleet order)."""
        self.encoder.ensure(self.size)
        return list(self.encoder.key_array[self._last].tolist())

    @property
    def ids(self) -> list[str]:
        self.encoder.ensure(self.size)
        return self.encoder.ids[: self.size]

    def set_rate(self, rate_hz: float) -> None:
        # also refuses NaN and infinities: every comparison with NaN is false
        if not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
            raise ValueError(f"rate_hz must be between {MIN_RATE_HZ} and {MAX_RATE_HZ}, "
                             f"got {rate_hz}")
        self.rate_hz = float(rate_hz)

    def resize(self, n: int) -> None:
        """Grow (cars set aside first, then new ones) or shrink (the last cars are set
        aside)."""
        if not 1 <= n <= MAX_FLEET_SIZE:
            raise ValueError(f"fleet_size must be between 1 and {MAX_FLEET_SIZE}, got {n}")
        cur = self.size
        if n < cur:
            tail = take(self.state, slice(n, None))
            self.reserve = tail if self.reserve is None else concat(tail, self.reserve)
            self.state = take(self.state, slice(0, n))
        elif n > cur:
            need = n - cur
            if self.reserve is not None:
                back = take(self.reserve, slice(0, need))
                rest = self.reserve.size - back.size
                self.reserve = take(self.reserve, slice(back.size, None)) if rest else None
                self.state = concat(self.state, back)
                need -= back.size
            if need:
                fresh = init_fleet(need, self.rng, self.net, sport_mode=self.sport_mode,
                                   t=self.state.t, fleet_mix=self.fleet_mix,
                                   clock0=self.state.clock0, trips=self.params.trips)
                self.state = concat(self.state, fresh)
        self.encoder.ensure(n)

    def phases(self, n: int) -> np.ndarray:
        """Each car's fixed report phase in [0, 1) of the tick (golden-ratio spread)."""
        return np.asarray((self._phase0 + np.arange(1, n + 1) * 0.6180339887498949) % 1.0)

    def _phase_order(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(phases of the first ``n`` cars, their indices by phase: a stable sort), cached."""
        if self._by_phase is None or self._by_phase[0].size != n:
            ph = self.phases(n)
            self._by_phase = (ph, np.argsort(ph, kind="stable"))
        return self._by_phase

    def encode(self, ts: datetime) -> list[bytes]:
        """JSON events due now (see the module docstring), stamped from ``ts``; afterwards
        ``keys`` are theirs and each reporting car's ``seq`` has moved on by one."""
        st = self.state
        if not self._clock_set:  # the daemon: the first tick's wall time sets the clock
            self._clock_set = True
            self._set_clock(_seconds_of_day(ts) - st.t)
            st = self.state
        due = ~st.parked | (st.report_t <= st.t + 1e-9)
        ahead = None
        if self.phase_jitter:  # the due cars in phase order (ties: by index, as a stable sort)
            phase, by_phase = self._phase_order(st.size)
            idx = by_phase[due[by_phase]]
            ahead = phase[idx] * self.dt
        else:
            idx = np.flatnonzero(due)
        stops = None
        if ahead is not None:  # where the cars will stop: the encoder's, and the next step's
            stops = stop_lines(self.net, st, np.maximum(self.net.edge_len[st.edge] - st.pos, 0.0))
        events = self.encoder.encode(st, ts, idx, ahead, stops)
        seq = st.seq.copy()
        seq[idx] += 1
        report_t = st.report_t.copy()
        report_t[idx] = np.where(st.parked[idx], st.t + self.heartbeat_s, st.t)
        self.state = replace(st, seq=seq, report_t=report_t)
        self._last = idx
        self._stops = None if stops is None else (self.state, stops)
        return events

    def start_clock(self, ts: datetime) -> None:
        """Set the time of day from ``ts`` now, if not set yet, leaving the cars as they are
        (a sharded fleet's cars arrive continued from their last events: producer/shards.py)."""
        if not self._clock_set:
            self._clock_set = True
            self.state = replace(self.state, clock0=_seconds_of_day(ts) - self.state.t)

    def _set_clock(self, clock0: float) -> None:
        """Start the day at ``clock0`` (s since midnight UTC at t = 0): as many cars parked
        as the demand has parked then."""
        st = self.state
        hour = demand.local_hour(clock0, st.t, mean_lon(self.net))
        if self.params.trips:
            u = np.random.default_rng([self.seed, 1]).random(st.size)
            parked = u >= demand.driving_share(hour)
            newly = parked & ~st.parked
            st = replace(st, parked=parked, v=np.where(parked, 0.0, st.v),
                         gear=np.where(parked, 0, st.gear).astype(np.int8),
                         rpm=np.where(parked, 0, st.rpm).astype(np.int32),
                         dwell_ttl=np.where(newly, 600.0 * u, st.dwell_ttl))
        self.state = replace(st, clock0=clock0)

    def advance(self) -> None:
        dt = self.dt
        if not 0 < dt <= MAX_STEP_S:  # set_rate makes this impossible; NaN fails too
            raise ValueError(f"dt must be > 0 and <= {MAX_STEP_S:g} s, got {dt}")
        # the stop lines the last encode found, if the fleet is still the one it encoded
        stops = self._stops[1] if self._stops and self._stops[0] is self.state else None
        self._stops = None
        self.state = step(self.state, dt, self.rng, self.net, self.params, stops)



def _seconds_of_day(ts: datetime) -> float:
    """Seconds since midnight UTC of ``ts``'s day."""
    off = ts.utcoffset()
    utc = ts - off if off is not None else ts
    return float(utc.hour * 3600 + utc.minute * 60 + utc.second + utc.microsecond / 1e6)
