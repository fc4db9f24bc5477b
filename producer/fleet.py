"""The fleet as arrays, and the pure simulation step.

``init_fleet(n, rng, net, sport_mode) -> FleetState``, ``step(state, dt, rng, net) -> state``.
No I/O, no clock: the simulated time ``t`` (seconds) lives in the state and all randomness
comes from the injected ``numpy.random.Generator``; the same seed gives the same fleet.
``seq[i]`` is the sequence number of the event that describes the current state of car i.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np

from producer import vehicle as vh
from producer.roads import URBAN, RoadNetwork

MAX_SUBSTEP_S = 1.0  # longer steps are integrated in sub-steps of at most this


@dataclass(frozen=True, eq=False)
class FleetState:
    t: float  # simulated seconds since the start
    edge: np.ndarray  # int32: the segment each car drives on
    pos: np.ndarray  # metres from the start of the segment
    v: np.ndarray  # m/s
    next_e: np.ndarray  # int32: the segment after this one
    cap_next: np.ndarray  # m/s: speed allowed when entering next_e (turns, its limit)
    dest: np.ndarray  # int32: index into net.places
    gear: np.ndarray  # int8
    rpm: np.ndarray  # int32
    fuel: np.ndarray  # percent
    odo: np.ndarray  # km
    fault: np.ndarray  # int16: index into DTC_CODES, -1 = none
    fault_ttl: np.ndarray  # seconds left
    sprint_ttl: np.ndarray  # seconds left of a sprint
    mood: np.ndarray  # slowly wandering share added to the driver's speed factor
    refuel_at: np.ndarray  # percent at which this car refuels
    kind: np.ndarray  # driver kind
    factor: np.ndarray
    accel: np.ndarray
    up_rpm: np.ndarray
    down_rpm: np.ndarray
    seq: np.ndarray  # int64

    @property
    def size(self) -> int:
        return int(self.edge.size)


_ARRAYS = tuple(f.name for f in fields(FleetState) if f.name != "t")


def concat(a: FleetState, b: FleetState) -> FleetState:
    """Cars of ``a`` then cars of ``b`` (time from ``a``)."""
    return FleetState(t=a.t, **{k: np.concatenate([getattr(a, k), getattr(b, k)])
                                for k in _ARRAYS})


def take(s: FleetState, sl: slice) -> FleetState:
    return FleetState(t=s.t, **{k: getattr(s, k)[sl].copy() for k in _ARRAYS})


def _turn_cap(net: RoadNetwork, e1: np.ndarray, e2: np.ndarray) -> np.ndarray:
    """m/s allowed when turning from e1 into e2: by the angle and e2's limit."""
    angle = np.abs((net.edge_heading[e2] - net.edge_heading[e1] + 180.0) % 360.0 - 180.0)
    kmh = np.where(angle < 25, np.inf, np.where(angle < 60, 50.0,
                                                np.where(angle < 135, 25.0, 12.0)))
    return np.minimum(kmh, net.edge_limit[e2] * 1.1) / 3.6


def _route(net: RoadNetwork, edge: np.ndarray, dest: np.ndarray,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Next segment after ``edge`` towards place ``dest``; a new place on arrival."""
    node = net.edge_to[edge]
    n_places = net.places.size
    arrived = node == net.places[dest]
    draws = rng.random(edge.size)
    if n_places > 1:
        other = (draws * (n_places - 1)).astype(np.int32)
        other = np.where(other >= dest, other + 1, other)
        dest = np.where(arrived, other, dest).astype(np.int32)
    nxt = net.next_edge[dest, node]
    lost = nxt < 0  # unreachable or a single place: any way out
    if lost.any():
        start = net.out_ptr[node[lost]]
        deg = net.out_ptr[node[lost] + 1] - start
        nxt = nxt.copy()
        nxt[lost] = net.out_edges[start + (draws[lost] * deg).astype(np.int32)]
    return nxt.astype(np.int32), dest


def init_fleet(n: int, rng: np.random.Generator, net: RoadNetwork, *,
               sport_mode: bool = False, t: float = 0.0) -> FleetState:
    """``n`` cars on random road segments (urban ones favoured), driving toward places."""
    weights = net.edge_len * np.where(net.edge_type == URBAN, 3.0, 1.0)
    cdf = np.cumsum(weights) / weights.sum()
    u = rng.random((n, 10))
    edge = np.minimum(np.searchsorted(cdf, u[:, 0], side="right"), net.n_edges - 1)
    edge = edge.astype(np.int32)
    pos = net.edge_len[edge] * u[:, 1]
    drivers = vh.draw_drivers(u[:, 2:5], sport_mode)
    v = net.edge_limit[edge] / 3.6 * drivers.factor * u[:, 5]
    dest = (u[:, 6] * net.places.size).astype(np.int32)
    next_e, dest = _route(net, edge, dest, rng)
    gear = vh.select_gear(v * 3.6, np.ones(n, dtype=np.int8), drivers.up_rpm, drivers.down_rpm)
    return FleetState(
        t=t, edge=edge, pos=pos, v=v, next_e=next_e, cap_next=_turn_cap(net, edge, next_e),
        dest=dest, gear=gear, rpm=vh.engine_rpm(v * 3.6, gear, np.zeros(n)),
        fuel=np.round(20.0 + 80.0 * u[:, 7], 2), odo=np.round(1000.0 + 149_000.0 * u[:, 8], 1),
        fault=np.full(n, -1, dtype=np.int16), fault_ttl=np.zeros(n), sprint_ttl=np.zeros(n),
        mood=np.zeros(n),
        refuel_at=vh.REFUEL_MIN_PCT + (vh.REFUEL_MAX_PCT - vh.REFUEL_MIN_PCT) * u[:, 9],
        kind=drivers.kind, factor=drivers.factor, accel=drivers.accel, up_rpm=drivers.up_rpm,
        down_rpm=drivers.down_rpm, seq=np.zeros(n, dtype=np.int64))


def step(s: FleetState, dt: float, rng: np.random.Generator, net: RoadNetwork) -> FleetState:
    """Advance every car by ``dt`` seconds; each car's ``seq`` rises by one."""
    if dt <= 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    n_sub = max(1, math.ceil(dt / MAX_SUBSTEP_S - 1e-9))
    for _ in range(n_sub):
        s = _substep(s, dt / n_sub, rng, net)
    return replace(s, seq=s.seq + 1)


def _substep(s: FleetState, h: float, rng: np.random.Generator, net: RoadNetwork) -> FleetState:
    n = s.size
    u = rng.random((n, 6))
    noise = rng.standard_normal((n, 2))
    # driver's wish: the limit times a personal factor, or a sprint
    mood = np.clip(s.mood * (1 - 0.01 * h) + 0.004 * math.sqrt(h) * noise[:, 0], -0.06, 0.06)
    sprint_start = ((s.sprint_ttl <= 0) & (s.kind != vh.CAUTIOUS)
                    & (u[:, 0] < vh.SPRINT_RATE_PER_S * h))
    sprint_ttl = np.where(sprint_start,
                          vh.SPRINT_MIN_S + (vh.SPRINT_MAX_S - vh.SPRINT_MIN_S) * u[:, 1],
                          np.maximum(s.sprint_ttl - h, 0.0))
    sprint = sprint_ttl > 0
    limit = net.edge_limit[s.edge] / 3.6
    target = np.minimum(np.where(sprint, limit * vh.SPRINT_FACTOR, limit * (s.factor + mood)),
                        vh.TOP_SPEED_KMH / 3.6)
    # what the road allows: stop at a red light if possible, slow for the turn ahead
    left = np.maximum(net.edge_len[s.edge] - s.pos, 0.0)
    must_stop = net.red_for(s.edge, s.t) & (s.v * s.v <= 2 * vh.B_MAX * left + 0.01)
    v_end = np.where(must_stop, 0.0, s.cap_next)
    # fastest speed from which, after this step's travel, braking at B_COMFORT still
    # reaches v_end by the end of the segment: v^2 + b*h*v - (v_end^2 + 2*b*left - b*h*v0) <= 0
    bh = vh.B_COMFORT * h
    c = v_end * v_end + 2 * vh.B_COMFORT * left - bh * s.v
    target = np.minimum(target, np.maximum((np.sqrt(np.maximum(bh * bh + 4 * c, 0.0)) - bh) / 2,
                                           0.0))
    a_up = vh.max_accel(s.v, s.gear, s.accel, sprint)
    v_new = np.maximum(s.v + np.clip(target - s.v, -vh.B_MAX * h, a_up * h), 0.0)
    ds = 0.5 * (s.v + v_new) * h
    stop_here = must_stop & (ds >= left)
    ds = np.where(stop_here, left, ds)
    v_new = np.where(stop_here, 0.0, v_new)
    pos = s.pos + ds
    # follow the route across intersections
    edge, next_e, cap_next, dest = s.edge.copy(), s.next_e.copy(), s.cap_next.copy(), s.dest
    cross = (pos >= net.edge_len[edge]) & ~stop_here
    while cross.any():
        idx = np.flatnonzero(cross)
        pos[idx] -= net.edge_len[edge[idx]]
        edge[idx] = next_e[idx]
        nxt, new_dest = _route(net, edge[idx], dest[idx], rng)
        dest = dest.copy()
        dest[idx] = new_dest
        next_e[idx] = nxt
        cap_next[idx] = _turn_cap(net, edge[idx], nxt)
        cross = np.zeros(n, dtype=bool)
        cross[idx] = pos[idx] >= net.edge_len[edge[idx]]
    # engine, fuel, faults
    gear = vh.select_gear(v_new * 3.6, s.gear, np.where(sprint, vh.SPRINT_UPSHIFT_RPM, s.up_rpm),
                          s.down_rpm)
    rpm = vh.engine_rpm(v_new * 3.6, gear, np.clip(noise[:, 1] / 2.5, -1.0, 1.0))
    fuel = s.fuel - vh.fuel_used_pct(s.v, v_new, ds, h)
    refuel = fuel < s.refuel_at
    fuel = np.where(refuel, 100.0, np.maximum(fuel, 0.0))
    refuel_at = np.where(refuel, vh.REFUEL_MIN_PCT + (vh.REFUEL_MAX_PCT - vh.REFUEL_MIN_PCT)
                         * u[:, 2], s.refuel_at)
    fault_ttl = np.maximum(s.fault_ttl - h, 0.0)
    fault = np.where(fault_ttl <= 0, -1, s.fault)
    onset = (fault < 0) & (u[:, 3] < vh.FAULT_RATE_PER_S * h)
    fault = np.where(onset, (u[:, 4] * len(vh.DTC_CODES)).astype(np.int16), fault)
    fault_ttl = np.where(onset, vh.FAULT_MIN_S + (vh.FAULT_MAX_S - vh.FAULT_MIN_S) * u[:, 5],
                         fault_ttl)
    return replace(s, t=s.t + h, edge=edge, pos=pos, v=v_new, next_e=next_e, cap_next=cap_next,
                   dest=dest, gear=gear, rpm=rpm, fuel=fuel, odo=s.odo + ds / 1000.0,
                   fault=fault.astype(np.int16), fault_ttl=fault_ttl, sprint_ttl=sprint_ttl,
                   mood=mood, refuel_at=refuel_at)
