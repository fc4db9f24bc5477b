"""The fleet as arrays, and the pure simulation step.

``init_fleet(n, rng, net, sport_mode) -> FleetState``, ``step(state, dt, rng, net) -> state``.
No I/O, no clock: the simulated time ``t`` (seconds) lives in the state and all randomness
comes from the injected ``numpy.random.Generator``; the same seed gives the same fleet.
``seq[i]`` is the sequence number of the event that describes the current state of car i.

Each sub-step (at most 1 s), for all cars at once:

1. the driver's wish: the limit times a personal factor (or a sprint), the vehicle's top speed;
2. car-following (producer/follow.py): the IDM acceleration behind the leader;
3. the route ahead, planned over its whole length (producer/roads.py's precomputed budget):
   curve speeds, lower limits ahead, the slow-down at a place, braking at B_PLAN; the next
   two traffic lights: a red light, or an amber one the car can still stop for at
   B_AMBER or less, is a stop line the car brakes for (Gipps-style safe speed) and never
   passes; an amber light the car cannot stop for comfortably is driven through;
   at a junction without lights, a car gives way to a car from another approach that gets
   there first (gap acceptance, GAP_S), and a car on a minor approach (a lower road class, a
   give-way or stop sign: producer/roads.py, after SUMO's junction model) to any car on a
   major one due within GAP_S of it; a stop sign is a stop line until the car has stopped
   at it; a zebra crossing with a pedestrian on it is a stop line for the cars that can
   still stop at B_AMBER or less; no car enters a junction it would have to stop in;
4. the move along the route, crossing intersections; no car leaves an edge whose light is red;
5. cars closer than S0 to their leader are pushed back (no overlaps);
6. engine, fuel, faults;
7. trips (producer/demand.py): a car drives a trip of a drawn length (through places, which
   are waypoints) and stops at its end as at a stop line; it parks there (ignition off, off
   the lane: nobody follows a parked car) for a dwell, then leaves again with the daily
   demand's hazard rate when its spot on the lane is free: the engine starts, the car idles
   at the kerb for demand.START_IDLE_S (ignition on, engine idling, not yet in traffic),
   then pulls out when the lane beside it is free. A trip that starts late in the
   day goes to the car's depot (the depot is a place), where the car stays the night and
   its fault codes are repaired. A car low on fuel drives to the nearest fuel station when
   the map has some (``amenity=fuel``), else cuts its trip short, and refuels there, parked,
   for minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np

from producer import demand, follow
from producer import vehicle as vh
from producer.roads import AMBER, B_PLAN, RED, STOP, URBAN, RoadNetwork
from producer.roads import SETBACK_M as SETBACK_M  # where cars stop before a junction

MAX_SUBSTEP_S = 1.0  # longer steps are integrated in sub-steps of at most this
B_AMBER = 3.0
"""m/s^2: at amber a driver stops when this deceleration (or less) suffices, else goes."""
IDM_A = 1.2  # m/s^2, IDM maximum acceleration of an average driver in a car
GAP_S = 3.5  # s: the gap a driver entering a street needs before a car from another approach
HEADWAY_S = np.array([1.5, 1.2, 1.0])  # IDM time gap T by driver kind
STOP_TOL_M = 0.5  # a car this close to a stop sign's line, stopped there, has made its stop


@dataclass(frozen=True, eq=False)
class FleetState:
    t: float  # simulated seconds since the start
    edge: np.ndarray  # int32: the segment each car drives on
    pos: np.ndarray  # metres from the start of the segment (front bumper)
    v: np.ndarray  # m/s
    next_e: np.ndarray  # int32: the segment after this one
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
    vclass: np.ndarray  # int8: index into vehicle.VEHICLE_TYPES
    seq: np.ndarray  # int64: sequence number of the car's next event
    parked: np.ndarray  # bool: ignition off, at the kerb
    dwell_ttl: np.ndarray  # s left at the kerb: the stay while parked, or the idle after a start
    trip: np.ndarray  # int64: number of the car's current (or last) trip
    trip_left: np.ndarray  # metres left of the current trip
    refuel_due: np.ndarray  # bool: low on fuel: the trip ends at a pump
    depot: np.ndarray  # int32: index into net.places of the car's depot
    to_depot: np.ndarray  # bool: the last trip of the day, to the depot
    report_t: np.ndarray  # simulated time of the car's next event (see sim.py)
    clock0: float = 8 * 3600.0  # seconds since midnight UTC at t = 0 (for the time of day)
    light_crossings: int = 0  # cars that drove past a traffic light so far (all of them)
    red_crossings: int = 0  # ... of which on red: the simulator's own count, 0 by design

    @property
    def size(self) -> int:
        return int(self.edge.size)


_SCALARS = ("t", "clock0", "light_crossings", "red_crossings")
_ARRAYS = tuple(f.name for f in fields(FleetState) if f.name not in _SCALARS)
N_DEPOTS = 3


@dataclass(frozen=True)
class FleetParams:
    """Knobs of the step that come from settings."""

    repair_s: float = 86_400.0  # a fault code stays this long unless the depot repairs it
    trips: bool = False  # True: trips and parking; False: every car drives all the time


def concat(a: FleetState, b: FleetState) -> FleetState:
    """Cars of ``a`` then cars of ``b`` (time from ``a``)."""
    return FleetState(t=a.t, clock0=a.clock0, light_crossings=a.light_crossings,
                      red_crossings=a.red_crossings,
                      **{k: np.concatenate([getattr(a, k), getattr(b, k)]) for k in _ARRAYS})


def take(s: FleetState, sl: slice) -> FleetState:
    return FleetState(t=s.t, clock0=s.clock0, light_crossings=s.light_crossings,
                      red_crossings=s.red_crossings,
                      **{k: getattr(s, k)[sl].copy() for k in _ARRAYS})


def mean_lon(net: RoadNetwork) -> float:
    return float(net.node_lon.mean())


def default_clock0(net: RoadNetwork) -> float:
    """08:00 local solar time: the morning peak."""
    return float((8.0 - mean_lon(net) / 15.0) % 24.0 * 3600.0)


def _route(net: RoadNetwork, edge: np.ndarray, dest: np.ndarray,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Next segment after ``edge`` towards place ``dest``; a new place on arrival."""
    node = net.edge_to[edge]
    n_places = net.places.size
    arrived = node == net.places[dest]
    draws = rng.random((edge.size, 3))
    if n_places > 1:
        # a new place, preferably one not behind the car (no U-turn): the first of three
        # draws whose route goes on ahead, else the last draw
        new = dest
        for k in (2, 1, 0):
            other = (draws[:, k] * (n_places - 1)).astype(np.int32)
            other = np.where(other >= dest, other + 1, other)
            ahead = net.next_edge[other, node] != net.edge_rev[edge]
            new = np.where(ahead | (k == 2), other, new)
        dest = np.where(arrived, new, dest).astype(np.int32)
    draws = draws[:, 0]
    nxt = net.next_edge[dest, node]
    lost = nxt < 0  # a single place: any way out
    if lost.any():
        start = net.out_ptr[node[lost]]
        deg = net.out_ptr[node[lost] + 1] - start
        nxt = nxt.copy()
        nxt[lost] = net.out_edges[start + (draws[lost] * deg).astype(np.int32)]
    return nxt.astype(np.int32), dest


def draw_classes(u: np.ndarray, mix: tuple[float, ...]) -> np.ndarray:
    """Vehicle class per car from uniform draws and the fleet mix (shares, any scale)."""
    cdf = np.cumsum(np.asarray(mix, dtype=np.float64))
    return np.searchsorted(cdf / cdf[-1], u, side="right").clip(0, len(mix) - 1).astype(np.int8)


def init_fleet(n: int, rng: np.random.Generator, net: RoadNetwork, *,
               sport_mode: bool = False, t: float = 0.0,
               fleet_mix: tuple[float, ...] = vh.DEFAULT_FLEET_MIX,
               clock0: float | None = None, trips: bool = False) -> FleetState:
    """``n`` cars on random road segments (urban ones favoured), driving toward places;
    with ``trips``, as many parked as the daily demand has parked at that time of day."""
    clock0 = default_clock0(net) if clock0 is None else clock0
    weights = net.edge_len * np.where(net.edge_type == URBAN, 3.0, 1.0)
    cdf = np.cumsum(weights) / weights.sum()
    u = rng.random((n, 16))
    edge = np.minimum(np.searchsorted(cdf, u[:, 0], side="right"), net.n_edges - 1)
    edge = edge.astype(np.int32)
    pos = net.edge_len[edge] * u[:, 1]
    drivers = vh.draw_drivers(u[:, 2:5], sport_mode)
    vclass = draw_classes(u[:, 10], fleet_mix)
    v = np.minimum(net.edge_limit[edge] * drivers.factor, vh.CLASS_TOP_KMH[vclass]) / 3.6 * u[:, 5]
    dest = (u[:, 6] * net.places.size).astype(np.int32)
    next_e, dest = _route(net, edge, dest, rng)
    length = vh.CLASS_LENGTH_M[vclass]
    hour = demand.local_hour(clock0, t, mean_lon(net))
    parked = (u[:, 11] >= demand.driving_share(hour)) if trips else np.zeros(n, dtype=bool)
    on_road = ~parked
    reach = follow.S0 + float(length.max(initial=0.0)) + 1.0
    for _ in range(30):  # a car drawn onto another one is drawn again elsewhere
        gap = follow.leaders(net, edge, pos, next_e, dest, length, on_road, reach)[1]
        bad = np.flatnonzero(on_road & (gap < follow.S0))
        if bad.size == 0:
            break
        w = rng.random((bad.size, 2))
        edge[bad] = np.minimum(np.searchsorted(cdf, w[:, 0], side="right"), net.n_edges - 1)
        pos[bad] = net.edge_len[edge[bad]] * w[:, 1]
        next_e[bad], dest[bad] = _route(net, edge[bad], dest[bad], rng)
    follow.separate(net, edge, pos, v, np.full(n, -1, dtype=np.int32), next_e, dest, length,
                    on_road)
    v = np.where(parked, 0.0, v)
    gear = vh.select_gear(v * 3.6, np.ones(n, dtype=np.int8), drivers.up_rpm, drivers.down_rpm)
    rpm = np.where(parked, 0, vh.engine_rpm(v * 3.6, gear, np.zeros(n))).astype(np.int32)
    n_depots = min(N_DEPOTS, net.places.size)
    trip_left = np.where(trips, demand.trip_length_m(u[:, 12], u[:, 13]) * u[:, 14], np.inf)
    return FleetState(
        t=t, clock0=clock0, edge=edge, pos=pos, v=v, next_e=next_e, dest=dest, gear=gear,
        rpm=rpm, fuel=np.round(5.0 + 95.0 * u[:, 7], 2),
        odo=np.round(1000.0 + 149_000.0 * u[:, 8], 1),
        fault=np.full(n, -1, dtype=np.int16), fault_ttl=np.zeros(n), sprint_ttl=np.zeros(n),
        mood=np.zeros(n),
        refuel_at=vh.REFUEL_MIN_PCT + (vh.REFUEL_MAX_PCT - vh.REFUEL_MIN_PCT) * u[:, 9],
        kind=drivers.kind, factor=drivers.factor, accel=drivers.accel, up_rpm=drivers.up_rpm,
        down_rpm=drivers.down_rpm, vclass=vclass, seq=np.zeros(n, dtype=np.int64),
        parked=parked, dwell_ttl=np.where(parked, 600.0 * u[:, 15], 0.0),
        trip=np.zeros(n, dtype=np.int64), trip_left=trip_left,
        refuel_due=np.zeros(n, dtype=bool),
        depot=(u[:, 15] * n_depots).astype(np.int32).clip(0, n_depots - 1),
        to_depot=np.zeros(n, dtype=bool), report_t=np.full(n, t))


def step(s: FleetState, dt: float, rng: np.random.Generator, net: RoadNetwork,
         params: FleetParams = FleetParams(),
         stops: tuple[np.ndarray, np.ndarray] | None = None) -> FleetState:
    """Advance every car by ``dt`` seconds (the events' ``seq`` is the simulation's).
    ``stops``: ``stop_lines`` of ``s`` when the caller has them already (the encoder's)."""
    if dt <= 0:
        raise ValueError(f"dt must be > 0, got {dt}")
    n_sub = max(1, math.ceil(dt / MAX_SUBSTEP_S - 1e-9))
    for k in range(n_sub):
        s = _substep(s, dt / n_sub, rng, net, params, stops if k == 0 else None)
    return s


def safe_speed(room2: np.ndarray, b: np.ndarray | float, v: np.ndarray, h: float) -> np.ndarray:
    """Fastest speed at the end of a step of ``h`` s (from ``v``, moving (v + v')/2 * h) after
    which braking at ``b`` still meets a constraint that allows ``room2`` = v_c^2 + 2 b d now:
    v'^2 + b h v' <= room2 - b h v."""
    bh = b * h
    c = np.maximum(room2 - bh * v, 0.0)
    return np.asarray((np.sqrt(bh * bh + 4 * c) - bh) / 2)


def stop_lines(net: RoadNetwork, s: FleetState,
               left: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(edge whose end the car must stop at, or -1; distance to that stop line): the next
    two stop points of the route (lights, stop signs, zebra crossings)."""
    node = net.edge_to[s.edge]
    on = net.edge_stop[s.edge]
    e1 = np.where(on, s.edge, net.light_edge[0, s.dest, node])
    back = net.edge_setback
    d1 = np.where(on, left, left + net.light_dist[0, s.dest, node]) - back[np.maximum(e1, 0)]
    e2 = np.where(on, net.light_edge[0, s.dest, node], net.light_edge[1, s.dest, node])
    d2 = np.where(on, left + net.light_dist[0, s.dest, node],
                  left + net.light_dist[1, s.dest, node]) - back[np.maximum(e2, 0)]
    v2 = s.v * s.v

    def clear_of_junction(e: np.ndarray, d: np.ndarray) -> np.ndarray:
        """A stop line ahead that would fall inside the junction before its (short) edge is
        drawn back to the line before that junction: nobody waits in a junction."""
        ee = np.maximum(e, 0)
        inside = ((e >= 0) & (e != s.edge) & (net.edge_len[ee] < back[ee])
                  & net.node_junction[net.edge_from[ee]])
        to_junction = d + back[ee] - net.edge_len[ee]
        own = np.where(net.edge_from[ee] == node, back[s.edge], SETBACK_M)
        return np.where(inside, to_junction - own, d)

    d1, d2 = clear_of_junction(e1, d1), clear_of_junction(e2, d2)

    def must_stop(e: np.ndarray, d: np.ndarray) -> np.ndarray:
        ee = np.maximum(e, 0)
        state = net.light_state(ee, s.t)
        can = v2 <= 2 * B_AMBER * d
        light = (state == RED) | ((state == AMBER) & can)
        walker = net.crossing_busy(ee, s.t) & can
        made = (d < 0) | ((d <= STOP_TOL_M) & (s.v <= 0.1))  # stopped at the line, or past it
        sign = (net.edge_sign[ee] == STOP) & ~((ee == s.edge) & made)
        return (e >= 0) & (light | walker | sign)

    stop1, stop2 = must_stop(e1, d1), must_stop(e2, d2)
    edge = np.where(stop1, e1, np.where(stop2, e2, -1))
    dist = np.where(stop1, d1, np.where(stop2, d2, np.inf))
    return edge, dist


def _give_way(net: RoadNetwork, s: FleetState, active: np.ndarray, left: np.ndarray,
              stop_d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gap acceptance at junctions without lights, over the route ahead (the next junction
    of each car's route, ``net.junc_*``, however many segments ahead): of the first cars of
    the approaches to a junction due within GAP_S + 3 s, one goes: a car that can no longer
    stop at B_AMBER or less (it is committed), else the one on the approach of the highest
    rank (``net.edge_rank``: road class, signs), among equals the first to arrive (then the
    lowest index). The others give way, i.e. stop at their approach's line, when they can
    at B_AMBER or less: a car of a lower rank when that car is due before it or within
    GAP_S after it, one of the same rank when it is due within GAP_S after that car. At
    lights the signal separates the crossing flows, but two approaches green at once (e.g.
    opposite ones) send cars across each other's way: there the approaches of one phase
    are a conflict group in which a left turn yields to the others (SUMO's permissive left
    turn, a minor green ``g``) and a car yields to one heading into the same street; the
    junction still lets one car per sub-step into each street (step 4).

    Returns (gives way, its approach edge, metres to its line)."""
    n = s.size
    out = np.zeros(n, dtype=bool)
    to = net.edge_to[s.edge]
    on_j = net.node_junction[to]  # the car's edge ends at a junction
    at = net.junc_node[s.dest, to]
    node = np.where(on_j, to, at)
    appr = np.where(on_j, s.edge, net.junc_edge[s.dest, to])
    dist = np.where(on_j, left, left + net.junc_dist[s.dest, to])
    line = dist - net.edge_setback[np.maximum(appr, 0)]
    eta = dist / np.maximum(s.v, 1.0)
    ok = (active & (node >= 0) & (eta < GAP_S + 3.0) & (s.next_e >= 0)
          & ~(stop_d < line + 0.5))
    cand = np.flatnonzero(ok)
    if cand.size < 2:
        return out, appr, line
    # the first car of each approach
    order = np.lexsort((cand, eta[cand], appr[cand]))
    c_s = cand[order]
    head = np.concatenate([[True], appr[c_s][1:] != appr[c_s][:-1]])
    cand = c_s[head]
    if cand.size < 2:
        return out, appr, line
    a_c = appr[cand]
    lit = net.edge_light[a_c]
    out_e = np.where(on_j[cand], s.next_e[cand],
                     net.next_edge[s.dest[cand], np.maximum(node[cand], 0)])
    turn = (net.edge_heading[np.maximum(out_e, 0)] - net.edge_heading[a_c] + 540.0) % 360 - 180
    # conflict groups: the junction (no lights), the junction and the phase (lights)
    jn = node[cand].astype(np.int64) * 4 + np.where(lit, 1 + net.edge_ns[a_c], 0)
    # committed: too fast to stop at its line comfortably
    can = s.v[cand] ** 2 <= 2 * B_AMBER * np.maximum(line[cand], 0.0)
    rank = np.where(lit, np.where(turn < -30.0, -1, 0), net.edge_rank[a_c])
    rank = np.where(can, rank, np.iinfo(np.int16).max).astype(np.int32)
    order = np.lexsort((cand, eta[cand], -rank, jn))
    first = np.concatenate([[True], jn[order][1:] != jn[order][:-1]])
    group = np.cumsum(first) - 1  # group number of each sorted candidate
    best = eta[cand][order][first][group]
    best_rank = rank[order][first][group]
    best_out = out_e[order][first][group]
    loser = ~first
    c, r = cand[order][loser], rank[order][loser]
    due = np.where(r < best_rank[loser], best[loser] < eta[c] + GAP_S,
                   eta[c] < best[loser] + GAP_S)
    due &= ~lit[order][loser] | (r < best_rank[loser]) | (out_e[order][loser] == best_out[loser])
    out[c] = due & can[order][loser]
    return out, appr, line


def _substep(s: FleetState, h: float, rng: np.random.Generator, net: RoadNetwork,
             params: FleetParams,
             stops: tuple[np.ndarray, np.ndarray] | None = None) -> FleetState:
    n = s.size
    u = rng.random((n, 12))
    noise = rng.standard_normal((n, 2))
    engine = ~s.parked  # ignition on
    active = engine & (s.dwell_ttl <= 0)  # in traffic: not idling at the kerb
    # 1. driver's wish: the limit times a personal factor, or a sprint
    mood = np.clip(s.mood * (1 - 0.01 * h) + 0.004 * math.sqrt(h) * noise[:, 0], -0.06, 0.06)
    sprint_start = ((s.sprint_ttl <= 0) & (s.kind != vh.CAUTIOUS) & active
                    & (u[:, 0] < vh.SPRINT_RATE_PER_S * h))
    sprint_ttl = np.where(sprint_start,
                          vh.SPRINT_MIN_S + (vh.SPRINT_MAX_S - vh.SPRINT_MIN_S) * u[:, 1],
                          np.maximum(s.sprint_ttl - h, 0.0))
    sprint = sprint_ttl > 0
    limit = net.edge_limit[s.edge] / 3.6
    v0 = np.minimum(np.where(sprint, limit * vh.SPRINT_FACTOR, limit * (s.factor + mood)),
                    vh.CLASS_TOP_KMH[s.vclass] / 3.6)
    # 2. car-following
    length = vh.CLASS_LENGTH_M[s.vclass]
    lead, gap = follow.leaders(net, s.edge, s.pos, s.next_e, s.dest, length, active)
    v_lead = np.where(lead >= 0, s.v[np.maximum(lead, 0)], 0.0)
    a_max = np.minimum(IDM_A * s.accel * vh.CLASS_ACCEL[s.vclass] * np.where(sprint, 1.5, 1.0),
                       vh.max_accel(s.v, s.gear, s.accel, sprint))
    acc = follow.idm_accel(s.v, v0, gap, v_lead, a_max, HEADWAY_S[s.kind])
    # 3. the route ahead: static budget (curves, limits, places), stop lines, the trip's end
    left = np.maximum(net.edge_len[s.edge] - s.pos, 0.0)
    room2 = np.maximum(net.budget[s.dest, s.edge] - 2 * B_PLAN * s.pos, 0.0)
    v_cap = safe_speed(room2, B_PLAN, s.v, h)
    stop_e, stop_d = stop_lines(net, s, left) if stops is None else stops
    trip_end = s.trip_left < stop_d
    stop_e = np.where(trip_end, -1, stop_e)
    stop_d = np.where(trip_end, s.trip_left, stop_d)
    give_way, appr, line = _give_way(net, s, active, left, stop_d)
    stop_e = np.where(give_way, appr, stop_e)
    stop_d = np.where(give_way, np.minimum(line, stop_d), stop_d)
    # keep the junction clear (SUMO's keepClear): no car enters a junction it would have to
    # stop in, behind a leader that has left too little room beyond it
    own = left - net.edge_setback[s.edge]
    clear = ((lead >= 0) & (s.edge[np.maximum(lead, 0)] != s.edge) & net.node_junction[
        net.edge_to[s.edge]] & (gap - left < length + follow.S0) & (own > 0)
        & (s.v * s.v <= 2 * B_AMBER * own) & (own < stop_d))
    stop_e = np.where(clear, s.edge, stop_e)
    stop_d = np.where(clear, own, stop_d)
    stop_d = np.maximum(stop_d, 0.0)  # a line closer than the setback: stop where it is
    b_stop = np.clip(s.v * s.v / (2 * np.maximum(stop_d, 0.01)), B_PLAN, vh.B_MAX)
    v_cap = np.minimum(v_cap, np.where(np.isfinite(stop_d),
                                       safe_speed(2 * b_stop * stop_d, b_stop, s.v, h), np.inf))
    v_new = np.minimum(s.v + np.minimum(acc, a_max) * h, v_cap)
    v_new = np.maximum(v_new, np.maximum(s.v - vh.B_MAX * h, 0.0))
    v_new[~active] = 0.0
    ds = follow.no_passing(s.edge, s.pos, 0.5 * (s.v + v_new) * h, length, active)
    v_new = np.minimum(v_new, np.maximum(2 * ds / h - s.v, 0.0))
    stop_here = active & (ds >= stop_d)
    ds = np.where(stop_here, stop_d, ds)
    v_new = np.where(stop_here, 0.0, v_new)
    # 4. follow the route across intersections; never out of an edge whose light is red
    pos = s.pos + ds
    edge, next_e, dest = s.edge.copy(), s.next_e.copy(), s.dest.copy()
    prev = np.full(n, -1, dtype=np.int32)
    passed = np.zeros(n)  # length of the edges left behind in this sub-step
    crossed_lights = crossed_red = 0
    red_now = net.light_state(edge, s.t) == RED
    held = (edge == stop_e) | red_now
    cross = (pos > net.edge_len[edge]) & ~held
    while cross.any():
        idx = np.flatnonzero(cross)
        # a junction lets one car per sub-step into each edge: the one furthest past its
        # line (then the lowest index); the others wait at their line behind it
        target = next_e[idx]
        order = np.lexsort((-(pos[idx] - net.edge_len[edge[idx]]), target))
        win = np.zeros(idx.size, dtype=bool)
        win[order[np.concatenate([[True], target[order][1:] != target[order][:-1]])]] = True
        if not win.all():
            lose, winner_v = idx[~win], np.zeros(net.n_edges)
            winner_v[target[win]] = v_new[idx[win]]
            pos[lose] = np.maximum(np.minimum(pos[lose], net.edge_len[edge[lose]]
                                              - net.edge_setback[edge[lose]]),
                                   np.where(edge[lose] == s.edge[lose], s.pos[lose], 0.0))
            v_new[lose] = np.minimum(v_new[lose], winner_v[target[~win]])
            same = edge[lose] == s.edge[lose]  # held on the edge it started on: as it moved
            v_new[lose[same]] = np.minimum(v_new[lose[same]], np.maximum(
                2 * (pos[lose[same]] - s.pos[lose[same]]) / h - s.v[lose[same]], 0.0))
            held[lose] = True
            idx = idx[win]
        lit = net.edge_light[edge[idx]]
        crossed_lights += int(lit.sum())
        crossed_red += int((lit & (net.light_state(edge[idx], s.t) == RED)).sum())
        pos[idx] -= net.edge_len[edge[idx]]
        passed[idx] += net.edge_len[edge[idx]]
        prev[idx] = edge[idx]
        edge[idx] = next_e[idx]
        nxt, new_dest = _route(net, edge[idx], dest[idx], rng)
        dest[idx] = new_dest
        next_e[idx] = nxt
        hold = (edge[idx] == stop_e[idx]) | (net.light_state(edge[idx], s.t) == RED)
        held[idx] = hold
        cross = np.zeros(n, dtype=bool)
        cross[idx] = (pos[idx] > net.edge_len[edge[idx]]) & ~hold
    over = held & (pos > net.edge_len[edge])
    pos = np.where(over, net.edge_len[edge], pos)
    v_new = np.where(over, 0.0, v_new)
    # 5. no overlaps
    edge_b = edge.copy()
    follow.separate(net, edge, pos, v_new, prev, next_e, dest, length, active, s.edge, s.pos)
    back = edge != edge_b  # returned to the edge they had left
    passed[back] -= net.edge_len[edge[back]]
    ds = np.where(active, np.maximum(passed + pos - s.pos, 0.0), 0.0)
    # 6. engine, fuel, faults (ignition on only)
    gear = vh.select_gear(v_new * 3.6, s.gear, np.where(sprint, vh.SPRINT_UPSHIFT_RPM, s.up_rpm),
                          s.down_rpm)
    rpm = np.where(engine, vh.engine_rpm(v_new * 3.6, gear, np.clip(noise[:, 1] / 2.5, -1, 1)),
                   0).astype(np.int32)
    used = np.where(engine, vh.fuel_used_pct(s.v, v_new, ds, h, s.vclass), 0.0)
    fuel = np.maximum(s.fuel - used, 0.0)
    fault_ttl = np.maximum(s.fault_ttl - h, 0.0)
    fault = np.where(fault_ttl <= 0, -1, s.fault)
    onset = engine & (fault < 0) & (u[:, 3] < vh.FAULT_RATE_PER_S * h)
    fault = np.where(onset, (u[:, 4] * len(vh.DTC_CODES)).astype(np.int16), fault)
    fault_ttl = np.where(onset, params.repair_s, fault_ttl)
    # 7. trips: refuelling, arrivals, departures
    trip_left = np.where(active, s.trip_left - ds, s.trip_left)
    refuel_due = s.refuel_due
    low = active & ~refuel_due & (fuel < s.refuel_at)
    refuel_due = refuel_due | low
    trip_left = np.where(low, np.minimum(trip_left, demand.REFUEL_TRIP_M), trip_left)
    if params.trips and net.fuel_places.size and low.any():
        # the map has fuel stations: to the nearest one on the road, the trip ends there
        idx = np.flatnonzero(low)
        to_node = net.edge_to[edge[idx]]
        dist = net.place_dist[net.fuel_places][:, to_node]  # [station, car]
        best = np.argmin(dist, axis=0)
        station = net.fuel_places[best]
        dest[idx] = station
        at = to_node == net.places[station]
        next_e[idx] = np.where(at, next_e[idx], net.next_edge[station, to_node])
        trip_left[idx] = (net.edge_len[edge[idx]] - pos[idx]
                          + np.where(at, 0.0, dist[best, np.arange(idx.size)]))
        to_depot = s.to_depot.copy()
        to_depot[idx] = False  # the trip now ends at the pump, not at the depot
    else:
        to_depot = s.to_depot
    if not params.trips:  # no trips: a car refuels where it stands, at once (and goes on)
        fuel = np.where(low, 100.0, fuel)
        refuel_due = np.zeros(n, dtype=bool)
    pumping = s.parked & refuel_due
    fuel = np.where(pumping, np.minimum(fuel + demand.PUMP_PCT_PER_S * h, 100.0), fuel)
    full = (pumping | low) & (fuel >= 100.0)
    refuel_due = refuel_due & ~full
    redraw = full | (low & (not params.trips))
    refuel_at = np.where(redraw,
                         vh.REFUEL_MIN_PCT + (vh.REFUEL_MAX_PCT - vh.REFUEL_MIN_PCT) * u[:, 2],
                         s.refuel_at)
    parked, dwell_ttl = s.parked.copy(), np.maximum(s.dwell_ttl - h, 0.0)
    trip = s.trip
    hour = demand.local_hour(s.clock0, s.t, mean_lon(net))
    if params.trips:
        arrive = active & (trip_left <= 0.5) & (v_new < 0.5)
        if arrive.any():
            parked = parked | arrive
            v_new = np.where(arrive, 0.0, v_new)
            gear = np.where(arrive, 0, gear).astype(np.int8)
            rpm = np.where(arrive, 0, rpm).astype(np.int32)
            stay = np.where(to_depot, demand.until_morning_s(hour, u[:, 5]),
                            np.where(refuel_due, demand.REFUEL_DWELL_S[0] + (
                                demand.REFUEL_DWELL_S[1] - demand.REFUEL_DWELL_S[0]) * u[:, 5],
                                demand.dwell_s(u[:, 5])))
            dwell_ttl = np.where(arrive, stay, dwell_ttl)
            repaired = arrive & to_depot  # the depot's workshop clears the fault codes
            fault = np.where(repaired, -1, fault)
            fault_ttl = np.where(repaired, 0.0, fault_ttl)
        # the idle after the engine started is over: pull out when the spot on the lane is free
        ready = engine & (s.dwell_ttl > 0) & (dwell_ttl <= 0)
        if ready.any():
            blocked = ready & ~follow.spot_free(net, edge, pos, length, active & ~parked, ready)
            dwell_ttl = np.where(blocked, h, dwell_ttl)
        free = s.parked & (dwell_ttl <= 0) & ~refuel_due
        leave = free & (u[:, 6] < demand.departure_chance(
            hour, float(np.mean(~parked)), n, int(free.sum()), h))
        if leave.any():
            leave &= follow.spot_free(net, edge, pos, length, ~parked, leave)
        if leave.any():
            idx = np.flatnonzero(leave)
            parked[idx] = False  # the engine starts; the car idles at the kerb first
            dwell_ttl[idx] = demand.start_idle_s(u[idx, 5])
            trip = trip.copy()
            trip[idx] += 1
            home = u[idx, 7] < demand.depot_share(hour)
            to_depot = to_depot.copy()
            to_depot[idx] = home
            other = (u[idx, 8] * net.places.size).astype(np.int32)
            dest[idx] = np.where(home, s.depot[idx], other)
            nxt, dest[idx] = _route(net, edge[idx], dest[idx], rng)
            next_e[idx] = nxt
            to_node = net.edge_to[edge[idx]]
            at_depot = to_node == net.places[s.depot[idx]]
            depot_m = (net.edge_len[edge[idx]] - pos[idx]
                       + np.where(at_depot, 0.0, net.place_dist[dest[idx], to_node]))
            trip_left[idx] = np.where(home, depot_m,
                                      demand.trip_length_m(u[idx, 9], u[idx, 10]))
    return replace(s, t=s.t + h, edge=edge, pos=pos, v=v_new, next_e=next_e, dest=dest,
                   gear=gear.astype(np.int8), rpm=rpm, fuel=fuel, odo=s.odo + ds / 1000.0,
                   fault=fault.astype(np.int16), fault_ttl=fault_ttl, sprint_ttl=sprint_ttl,
                   mood=mood, refuel_at=refuel_at, parked=parked, dwell_ttl=dwell_ttl,
                   trip=trip, trip_left=trip_left, refuel_due=refuel_due, to_depot=to_depot,
                   light_crossings=s.light_crossings + crossed_lights,
                   red_crossings=s.red_crossings + crossed_red)


def select(s: FleetState, idx: np.ndarray) -> FleetState:
    """The cars ``idx`` (an index or boolean array) of ``s``, copied, in that order."""
    return FleetState(t=s.t, clock0=s.clock0, light_crossings=s.light_crossings,
                      red_crossings=s.red_crossings,
                      **{k: getattr(s, k)[idx].copy() for k in _ARRAYS})


@dataclass(frozen=True)
class LastSeen:
    """What a car's last published event says, one array entry per car (producer/restore.py
    reads them back from the telemetry topic)."""

    lat: np.ndarray
    lon: np.ndarray
    heading: np.ndarray  # degrees
    speed_kmh: np.ndarray
    gear: np.ndarray
    rpm: np.ndarray
    fuel: np.ndarray
    odo: np.ndarray
    fault: np.ndarray  # index into DTC_CODES, -1 = none
    vclass: np.ndarray
    parked: np.ndarray  # ignition off
    next_seq: np.ndarray  # the last event's seq + 1
    report_in: np.ndarray  # seconds from now until a parked car's next heartbeat is due

    @property
    def size(self) -> int:
        return int(self.lat.size)


def snap(net: RoadNetwork, lat: np.ndarray, lon: np.ndarray,
         heading: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(edge, metres along it) nearest to each point among the edges driven in its heading
    (within a degree; any edge when none is), on a local flat projection."""
    lat0 = math.radians(float(net.node_lat.mean()))
    kx, ky = 111_320.0 * math.cos(lat0), 110_540.0
    ax, ay = net.node_lon[net.edge_from] * kx, net.node_lat[net.edge_from] * ky
    dx, dy = net.node_lon[net.edge_to] * kx - ax, net.node_lat[net.edge_to] * ky - ay
    den = np.maximum(dx * dx + dy * dy, 1e-9)
    edges = np.empty(lat.size, dtype=np.int32)
    frac = np.empty(lat.size)
    for lo in range(0, lat.size, 256):  # (cars x edges) matrices of bounded size
        px, py = lon[lo:lo + 256, None] * kx, lat[lo:lo + 256, None] * ky
        f = np.clip(((px - ax) * dx + (py - ay) * dy) / den, 0.0, 1.0)
        d2 = (ax + f * dx - px) ** 2 + (ay + f * dy - py) ** 2
        turn = np.abs((net.edge_heading[None, :] - heading[lo:lo + 256, None] + 180.0) % 360.0
                      - 180.0)
        best = np.argmin(d2 + np.where(turn <= 1.0, 0.0, 1e12), axis=1)
        edges[lo:lo + 256] = best
        frac[lo:lo + 256] = f[np.arange(best.size), best]
    return edges, frac * net.edge_len[edges]


def restore_fleet(seen: LastSeen, rng: np.random.Generator, net: RoadNetwork, *, t: float,
                  clock0: float, trip: np.ndarray, sport_mode: bool = False,
                  fleet_mix: tuple[float, ...] = vh.DEFAULT_FLEET_MIX, trips: bool = False,
                  repair_s: float = 86_400.0) -> FleetState:
    """Cars continuing from their last published events: where they were (snapped to the
    road network at their location and heading), as fast, in the same gear, with the same
    fuel, odometer, fault code, vehicle type and ignition, their ``seq`` going on from the
    last one; drivers, destinations and trip lengths are drawn afresh from ``rng``."""
    n = seen.size
    fresh = init_fleet(n, rng, net, sport_mode=sport_mode, t=t, fleet_mix=fleet_mix,
                       clock0=clock0, trips=trips)
    edge, pos = snap(net, seen.lat, seen.lon, seen.heading)
    next_e, dest = _route(net, edge, fresh.dest, rng)
    parked = seen.parked.astype(bool)
    v = np.where(parked, 0.0, seen.speed_kmh / 3.6)
    fault = seen.fault.astype(np.int16)
    return replace(
        fresh, edge=edge, pos=pos, v=v, next_e=next_e, dest=dest,
        gear=np.where(parked, 0, seen.gear).astype(np.int8),
        rpm=np.where(parked, 0, seen.rpm).astype(np.int32), fuel=seen.fuel.astype(float),
        odo=seen.odo.astype(float), fault=fault,
        fault_ttl=np.where(fault >= 0, repair_s, 0.0), vclass=seen.vclass.astype(np.int8),
        seq=seen.next_seq.astype(np.int64), parked=parked,
        dwell_ttl=np.where(parked, fresh.dwell_ttl, 0.0), trip=trip.astype(np.int64),
        report_t=np.where(parked, t + np.maximum(seen.report_in, 0.0), t))
