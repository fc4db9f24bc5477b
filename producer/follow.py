"""Car-following: leaders found vectorised, the Intelligent Driver Model, no overlaps.

The Intelligent Driver Model (IDM; Treiber, Hennecke & Helbing 2000, "Congested traffic
states in empirical observations and microscopic simulations", Phys. Rev. E 62, 1805):

    a_IDM = a * [1 - (v / v0)^delta - (s* / s)^2],  s* = s0 + max(0, v T + v dv / (2 sqrt(a b)))

with the city-traffic parameters of Treiber & Kesting, "Traffic Flow Dynamics" (Springer
2013), table 11.2: v0 from the limit (times the driver's factor), T = 1.0-1.5 s by driver,
s0 = 2 m, a = 1.0-1.5 m/s^2 (scaled by driver and vehicle, capped by the gear), b = 2 m/s^2,
delta = 4. ``s`` is the bumper-to-bumper gap, ``dv = v - v_leader``. Where a slower car
ahead needs only a mild deceleration to be matched, the Enhanced IDM's constant-acceleration
heuristic (Kesting, Treiber & Helbing 2010) keeps IDM from braking harder than needed.

Leaders, O(n log n) per tick: cars are sorted by (edge, position); a car's leader is the next
car on its edge, else the last car on the next edges of its route (up to LEADER_RANGE_M,
searched a hop at a time for all searching cars at once). Cars on other edges (other
directions, other lanes) never interact. After each move ``separate`` pushes back any car
closer than S0 to its leader, so no two cars ever overlap.
"""

from __future__ import annotations

import numpy as np

from producer.roads import RoadNetwork

S0 = 2.0  # m, minimum bumper-to-bumper gap (IDM s0)
DELTA = 4.0
B_IDM = 2.0  # m/s^2, comfortable deceleration b
CAH_C = 0.99  # Enhanced IDM's coolness factor
LEADER_RANGE_M = 250.0
MAX_HOPS = 48


def sort_cars(edge: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Car indices ordered by (edge, position): one float key (edges are shorter than
    1000 km, positions are >= 0), one stable sort."""
    return np.argsort(edge.astype(np.float64) * 1e6 + pos, kind="stable")


def leaders(net: RoadNetwork, edge: np.ndarray, pos: np.ndarray, next_e: np.ndarray,
            dest: np.ndarray, length: np.ndarray, active: np.ndarray,
            reach_m: float = LEADER_RANGE_M) -> tuple[np.ndarray, np.ndarray]:
    """(leader index or -1, bumper-to-bumper gap in metres, inf when none) of every car.

    Only ``active`` cars are on the road (parked ones are at the kerb)."""
    n = edge.size
    lead = np.full(n, -1, dtype=np.int64)
    gap = np.full(n, np.inf)
    cars = np.flatnonzero(active)
    if cars.size == 0:
        return lead, gap
    order = cars[sort_cars(edge[cars], pos[cars])]
    e_s = edge[order]
    same = e_s[1:] == e_s[:-1]
    follower, ahead = order[:-1][same], order[1:][same]
    lead[follower] = ahead
    gap[follower] = pos[ahead] - length[ahead] - pos[follower]
    first = np.full(net.n_edges, -1, dtype=np.int64)
    starts = np.concatenate([[True], ~same])
    first[e_s[starts]] = order[starts]  # the rearmost car of each edge
    idx = order[np.concatenate([~same, [True]])]  # the front car of each edge group
    dist = net.edge_len[edge[idx]] - pos[idx]
    cur = next_e[idx].astype(np.int64)
    d_place = net.places[dest[idx]]
    for _ in range(MAX_HOPS):
        if idx.size == 0:
            break
        f = first[np.maximum(cur, 0)]
        found = (cur >= 0) & (f >= 0) & (f != idx)
        lead[idx[found]] = f[found]
        gap[idx[found]] = dist[found] + pos[f[found]] - length[f[found]]
        node = net.edge_to[np.maximum(cur, 0)]
        go_on = ~found & (cur >= 0) & (dist + net.edge_len[np.maximum(cur, 0)] < reach_m) & (
            node != d_place)
        idx, dist, d_place = idx[go_on], dist[go_on] + net.edge_len[cur[go_on]], d_place[go_on]
        cur = net.next_edge[dest[idx], node[go_on]].astype(np.int64)
    return lead, gap


def idm_accel(v: np.ndarray, v0: np.ndarray, gap: np.ndarray, v_lead: np.ndarray,
              a: np.ndarray, headway: np.ndarray) -> np.ndarray:
    """IDM acceleration (m/s^2), softened where the situation is not critical by the
    constant-acceleration heuristic (CAH) of the Enhanced IDM (Kesting, Treiber & Helbing
    2010, Phil. Trans. R. Soc. A 368, 4585; c = 0.99, the leader assumed to keep its speed):
    plain IDM over-brakes when a slower car appears close ahead although matching its speed
    needs little. ``gap`` inf means a free road."""
    free = 1.0 - (v / np.maximum(v0, 0.1)) ** DELTA
    s_star = S0 + np.maximum(0.0, v * headway + v * (v - v_lead) / (2.0 * np.sqrt(a * B_IDM)))
    with np.errstate(divide="ignore", invalid="ignore"):
        inter = np.where(np.isfinite(gap), (s_star / np.maximum(gap, 0.01)) ** 2, 0.0)
        a_idm = a * (free - inter)
        closing = np.maximum(v - v_lead, 0.0)
        a_cah = np.where(np.isfinite(gap), -closing * closing / (2.0 * np.maximum(gap, 0.01)),
                         0.0)
    soft = (1 - CAH_C) * a_idm + CAH_C * (a_cah + B_IDM * np.tanh((a_idm - a_cah) / B_IDM))
    return np.asarray(np.where(a_idm >= a_cah, a_idm, soft))


def separate(net: RoadNetwork, edge: np.ndarray, pos: np.ndarray, v: np.ndarray,
             prev_edge: np.ndarray, next_e: np.ndarray, dest: np.ndarray,
             length: np.ndarray, active: np.ndarray,
             start_edge: np.ndarray | None = None, start_pos: np.ndarray | None = None) -> None:
    """Resolve (in place) every active car closer than S0 to its leader.

    A leader that has just entered its edge in front of a car already there (a merge at a
    junction) is held back at the end of the edge it came from (``prev_edge``), stopped: it
    yields. Otherwise the follower is pushed back, but never behind where it started the
    step (``start_edge``/``start_pos``): no car moves backwards. (Junctions let one car per
    sub-step into each edge, see fleet.py, so this is a safety net.)"""
    for _ in range(8):
        lead, gap = leaders(net, edge, pos, next_e, dest, length, active,
                            reach_m=S0 + float(length.max(initial=0.0)) + 1.0)
        bad = np.flatnonzero(gap < S0 - 1e-9)
        if bad.size == 0:
            return
        bad0 = bad
        before = (edge[bad0].copy(), pos[bad0].copy())
        ld = lead[bad]
        came = prev_edge[ld]  # the leader came from an edge not on the follower's way: a merge
        merged = (came >= 0) & (came != edge[bad]) & (came != next_e[bad])
        # into the street the follower was already in: the merging car yields
        merged &= (edge[bad] == edge[ld]) & (prev_edge[bad] < 0)
        yielders = np.unique(ld[merged])
        if yielders.size:
            next_e[yielders] = edge[yielders]
            edge[yielders] = prev_edge[yielders]
            pos[yielders] = net.edge_len[edge[yielders]]
            v[yielders] = 0.0
            prev_edge[yielders] = -1
        bad = bad[~merged]
        if bad.size == 0:
            if yielders.size:
                continue
            return
        new = pos[bad] - (S0 - gap[bad])
        if start_edge is not None and start_pos is not None:
            new = np.where(edge[bad] == start_edge[bad], np.maximum(new, start_pos[bad]), new)
        v[bad] = np.minimum(v[bad], v[lead[bad]])
        back = (new < 0) & (prev_edge[bad] >= 0)
        pos[bad] = np.maximum(new, 0.0)
        b = bad[back]
        if b.size:
            next_e[b] = edge[b]
            edge[b] = prev_edge[b]
            pos[b] = np.maximum(net.edge_len[edge[b]] + new[back], 0.0)
            prev_edge[b] = -1
            if start_edge is not None and start_pos is not None:
                same = edge[b] == start_edge[b]
                pos[b[same]] = np.maximum(pos[b[same]], start_pos[b[same]])
        if (edge[bad0] == before[0]).all() and (pos[bad0] == before[1]).all():
            return  # nothing more can move (held at where they started)


def spot_free(net: RoadNetwork, edge: np.ndarray, pos: np.ndarray, length: np.ndarray,
              active: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Where ``cand``: no active car within S0 ahead of the spot or within S0 plus a
    stopping distance (about 10 m) behind it, on the same edge: a parked car may pull out."""
    out = np.zeros(edge.size, dtype=bool)
    idx = np.flatnonzero(cand)
    cars = np.flatnonzero(active)
    if cars.size == 0:
        out[idx] = True
        return out
    order = cars[sort_cars(edge[cars], pos[cars])]
    key = edge[order].astype(np.float64) * 1e6 + pos[order]  # edges are shorter than 1000 km
    j = np.searchsorted(key, edge[idx].astype(np.float64) * 1e6 + pos[idx])
    ahead = order[np.minimum(j, order.size - 1)]
    behind = order[np.maximum(j - 1, 0)]
    ok_ahead = (j >= order.size) | (edge[ahead] != edge[idx]) | (
        pos[ahead] - length[ahead] - pos[idx] >= S0)
    ok_behind = (j == 0) | (edge[behind] != edge[idx]) | (
        pos[idx] - length[idx] - pos[behind] >= S0 + 10.0)
    out[idx] = ok_ahead & ok_behind
    return out


def no_passing(edge: np.ndarray, pos: np.ndarray, ds: np.ndarray, length: np.ndarray,
               active: np.ndarray) -> np.ndarray:
    """Planned moves ``ds`` clipped so that no car ends a step closer than S0 behind where
    the car ahead of it on its edge ends it (a chain, resolved from the front), and none
    moves backwards. Vectorised: a reverse running minimum over the cars sorted by
    (edge, position)."""
    out = ds.copy()
    cars = np.flatnonzero(active)
    if cars.size < 2:
        return out
    order = cars[sort_cars(edge[cars], pos[cars])]
    e = edge[order]
    group = np.concatenate([[0], np.cumsum(e[1:] != e[:-1])]).astype(np.float64)
    need = length[order] + S0  # room a car needs behind its own front
    c = np.cumsum(need)  # c[j] - c[i]: room from car i's front to car j's, j ahead of i
    end = pos[order] + ds[order]
    key = end - c + group * 1e7  # later edges never win the running minimum
    run = np.minimum.accumulate(key[::-1])[::-1] - group * 1e7
    target = run + c  # the farthest each car may get, given every car ahead on its edge
    clipped = np.maximum(np.minimum(end, target), pos[order])
    out[order] = clipped - pos[order]
    return out
