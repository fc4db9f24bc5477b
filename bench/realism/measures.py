"""The measures computed from the events alone: stops, hard brakes, fuel, refuels, road
shares, cars on top of each other."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.realism.events import (
    ROAD_CODES,
    STOP_KMH,
    VEHICLE_TYPES,
    Events,
    Projection,
    angle_diff,
    pairs,
)

HARD_BRAKE_MS2 = 4.0
OVERLAP_M = 3.0
ONCOMING_DEG = 150.0
PARALLEL_DEG = 20.0  # cars on two different ways heading within this are side by side


def driving_mask(ev: Events) -> np.ndarray:
    return ~ev.parked


def stopped_share(ev: Events) -> tuple[float, float]:
    """(share of urban driving time stopped, urban driving seconds)."""
    a, b = pairs(ev)
    dt = ev.t[b] - ev.t[a]
    use = (ev.road[a] == ROAD_CODES["urban"]) & driving_mask(ev)[a]
    total = float(dt[use].sum())
    stopped = float(dt[use & (ev.v[a] * 3.6 < STOP_KMH)].sum())
    return (stopped / total if total > 0 else math.nan), total


def distance_m(ev: Events) -> np.ndarray:
    """Metres driven between each pair (trapezoid of the speeds), aligned with pairs()."""
    a, b = pairs(ev)
    return 0.5 * (ev.v[a] + ev.v[b]) * (ev.t[b] - ev.t[a])


def hard_brakes(ev: Events, threshold: float = HARD_BRAKE_MS2) -> tuple[int, float]:
    """(hard-braking events, km driven)."""
    a, b = pairs(ev)
    dt = ev.t[b] - ev.t[a]
    ok = (dt > 0) & (dt <= 2.0)
    acc = np.where(ok, (ev.v[b] - ev.v[a]) / np.where(ok, dt, 1.0), 0.0)
    hard = acc < -threshold
    # a run of consecutive hard intervals of one car is one event
    prev_hard = np.zeros_like(hard)
    prev_hard[1:] = hard[:-1] & (b[:-1] == a[1:])
    events = int((hard & ~prev_hard).sum())
    return events, float(distance_m(ev).sum() / 1000.0)


def fuel_use(ev: Events, tank_l: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float]:
    """(urban L/100 km, urban km) from fuel drops, cars only when the type is known."""
    a, b = pairs(ev)
    drop = ev.fuel[a] - ev.fuel[b]
    use = (ev.road[a] == ROAD_CODES["urban"]) & (drop >= 0) & (ev.road[b] == ROAD_CODES["urban"])
    if ev.has_vtype:
        use &= ev.vtype[a] == VEHICLE_TYPES.index("car")
    litres = float((drop[use] / 100.0 * tank_l(ev.vtype[a][use])).sum())
    km = float(distance_m(ev)[use].sum() / 1000.0)
    return (litres / km * 100.0 if km > 0 else math.nan), km


@dataclass(frozen=True)
class Refuel:
    vehicle: int
    start_s: float
    duration_s: float
    max_speed_kmh: float
    from_pct: float
    to_pct: float


def refuels(ev: Events) -> list[Refuel]:
    """Each run of rising fuel level of one car."""
    a, b = pairs(ev)
    rise = ev.fuel[b] > ev.fuel[a]
    out: list[Refuel] = []
    idx = np.flatnonzero(rise)
    k = 0
    while k < idx.size:
        j = k
        while j + 1 < idx.size and a[idx[j + 1]] == b[idx[j]]:
            j += 1
        first, last = a[idx[k]], b[idx[j]]
        out.append(Refuel(vehicle=int(ev.vid[first]), start_s=float(ev.t[first]),
                          duration_s=float(ev.t[last] - ev.t[first]),
                          max_speed_kmh=float(ev.v[first:last + 1].max() * 3.6),
                          from_pct=float(ev.fuel[first]), to_pct=float(ev.fuel[last])))
        k = j + 1
    return out


def road_shares(ev: Events) -> tuple[dict[str, float], float]:
    """(distance share per road_type, share of driving time on highways)."""
    a, b = pairs(ev)
    d = distance_m(ev)
    total = float(d.sum())
    shares = {name: (float(d[ev.road[a] == code].sum()) / total if total > 0 else math.nan)
              for name, code in ROAD_CODES.items()}
    dt = (ev.t[b] - ev.t[a])[driving_mask(ev)[a]]
    on_hw = (ev.road[a] == ROAD_CODES["highway"])[driving_mask(ev)[a]]
    time_total = float(dt.sum())
    return shares, (float(dt[on_hw].sum()) / time_total if time_total > 0 else math.nan)


def at_kerb(ev: Events) -> np.ndarray:
    """Events of a car that is off the lane: parked (ignition off), or with the ignition on
    but not yet moved since it came on (a driver starting the engine idles at the kerb
    before pulling out). A car already on at its first event is taken to be in traffic."""
    n = len(ev)
    first = np.ones(n, dtype=bool)
    first[1:] = ev.vid[1:] != ev.vid[:-1]
    prev_parked = np.zeros(n, dtype=bool)
    prev_parked[1:] = ev.parked[:-1] & ~first[1:]
    start = ev.parked | first | prev_parked  # each run after the ignition came on starts anew
    seg = np.cumsum(start) - 1
    moved = (ev.v * 3.6 >= STOP_KMH).astype(np.int64)
    c = np.cumsum(moved)
    begin = np.flatnonzero(start)
    before = (c[begin] - moved[begin])[seg]  # moves before this run
    since_on = prev_parked[begin][seg]  # the run began when the ignition came on
    return ev.parked | (since_on & (c - before == 0))


def overlaps(ev: Events, proj: Projection, rate_hz: float = 1.0,
             radius: float = OVERLAP_M, way: np.ndarray | None = None
             ) -> tuple[int, int, int, int, int]:
    """(moving samples with another car within ``radius`` at the same tick, moving samples,
    the most cars found in one spot, moving samples close only to oncoming cars, moving
    samples close only to cars beside them on another, parallel way).

    Cars heading opposite ways (more than ONCOMING_DEG apart) are not counted: the producer
    puts both directions of a two-way road on its centreline, so they meet there when they
    pass. Nor are cars at the kerb (``at_kerb``: parked, or idling before they first move),
    which the producer also reports on the centreline. With ``way`` (each event's OSM way,
    -1 unknown), two cars on different ways heading the same way within PARALLEL_DEG are side
    by side (OSM draws a service way or a second carriageway a metre or two beside a street),
    not on top of each other; cars meeting at a junction head different ways and count.
    Events between ticks are moved back to their tick along their heading, so devices that
    report on their own phase are compared fairly."""
    x, y = proj.xy(ev.lat, ev.lon)
    tick = np.floor(ev.t * rate_hz + 1e-6)
    lag = ev.t - tick / rate_hz
    if np.any(lag > 1e-6):
        h = np.radians(np.nan_to_num(ev.heading))
        x = x - ev.v * lag * np.sin(h)
        y = y - ev.v * lag * np.cos(h)
    live = ~at_kerb(ev)
    moving = live & (ev.v * 3.6 >= STOP_KMH)
    idx = np.flatnonzero(live)
    cx = np.floor(x[idx] / radius).astype(np.int64)
    cy = np.floor(y[idx] / radius).astype(np.int64)
    tk = tick[idx].astype(np.int64)
    span = 1 << 20
    key = (tk * span + (cx + span // 2)) * span + (cy + span // 2)
    order = np.argsort(key, kind="stable")
    skey = key[order]
    near = np.zeros(idx.size, dtype=np.int64)
    oncoming = np.zeros(idx.size, dtype=np.int64)
    beside = np.zeros(idx.size, dtype=np.int64)
    for ox in (-1, 0, 1):
        for oy in (-1, 0, 1):
            q = key + ox * span + oy
            lo = np.searchsorted(skey, q, side="left")
            hi = np.searchsorted(skey, q, side="right")
            width = hi - lo
            for j in range(int(width.max(initial=0))):
                has = width > j
                other = order[np.minimum(lo + j, skey.size - 1)]
                oi, ii = idx[other], idx
                close = (has & (other != np.arange(idx.size))
                         & (np.hypot(x[oi] - x[ii], y[oi] - y[ii]) <= radius))
                turn = angle_diff(ev.heading[oi], ev.heading[ii])
                opposite = turn > ONCOMING_DEG
                apart = np.zeros(idx.size, dtype=bool)
                if way is not None:
                    apart = ((way[oi] >= 0) & (way[ii] >= 0) & (way[oi] != way[ii])
                             & (turn < PARALLEL_DEG))
                near += close & ~opposite & ~apart
                oncoming += close & opposite
                beside += close & apart
    flagged = near > 0
    m = moving[idx]
    return (int((flagged & m).sum()), int(moving.sum()), int(near.max(initial=0) + 1),
            int((~flagged & (oncoming > 0) & m).sum()),
            int((~flagged & (beside > 0) & m).sum()))
