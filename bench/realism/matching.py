"""Measures against the road geometry: positions matched to the GeoJSON's ways (one-ways,
OSM classes) and to the producer network's edges (traffic lights and their phases)."""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.realism.events import STOP_KMH, Events, Projection, angle_diff, bearing, pairs
from bench.realism.measures import distance_m

PASSED_M = 0.5
"""A car is past a stop line when it is this far beyond it: events round positions to 6
decimals (up to 0.11 m), and a car that stops at the line must not count as crossing it."""
ALONG_DEG = 45.0
"""A car enters a junction on a light's edge only if its heading is this close to the edge's."""
LINE_LOOKBACK = 120
"""Events looked back for the last one short of a stop line (a car may wait past its line
through a red phase)."""
LINE_TOL_M = 0.15
"""A car crosses its stop line when it is this far past it (events round positions to 6
decimals, up to 0.11 m)."""
"""Events looked back for the last one short of a stop line."""
MATCH_MAX_M = 12.0
MATCH_BLOCK = 8192


class SegmentIndex:
    """Nearest-segment lookup over straight segments, in projected metres, via a grid."""

    def __init__(self, proj: Projection, lat1: np.ndarray, lon1: np.ndarray,
                 lat2: np.ndarray, lon2: np.ndarray, cell_m: float = 25.0) -> None:
        self.proj, self.cell = proj, cell_m
        self.x1, self.y1 = proj.xy(lat1, lon1)
        self.x2, self.y2 = proj.xy(lat2, lon2)
        self.bearing = bearing(self.x1, self.y1, self.x2, self.y2)
        length = np.hypot(self.x2 - self.x1, self.y2 - self.y1)
        steps = np.maximum(np.ceil(length / (cell_m / 2)).astype(np.int64), 1)
        seg = np.repeat(np.arange(length.size), steps + 1)
        offs = np.arange(seg.size) - np.repeat(np.cumsum(steps + 1) - (steps + 1), steps + 1)
        f = offs / np.repeat(steps, steps + 1)
        px = self.x1[seg] + f * (self.x2 - self.x1)[seg]
        py = self.y1[seg] + f * (self.y2 - self.y1)[seg]
        cells: dict[tuple[int, int], set[int]] = {}
        for cx, cy, s in zip(np.floor(px / cell_m).astype(int).tolist(),
                             np.floor(py / cell_m).astype(int).tolist(), seg.tolist(),
                             strict=True):
            cells.setdefault((cx, cy), set()).add(s)
        self.cells = cells
        self._near: dict[tuple[int, int], np.ndarray] = {}

    def _candidates(self, c: tuple[int, int]) -> np.ndarray:
        found = self._near.get(c)
        if found is None:
            ids: set[int] = set()
            for ox in (-1, 0, 1):
                for oy in (-1, 0, 1):
                    ids |= self.cells.get((c[0] + ox, c[1] + oy), set())
            found = self._near[c] = np.fromiter(sorted(ids), dtype=np.int64, count=len(ids))
        return found

    def match(self, lat: np.ndarray, lon: np.ndarray, heading: np.ndarray, *,
              directed: bool, max_m: float = MATCH_MAX_M, angle_weight_m: float = 20.0
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(segment or -1, distance m, |heading - segment bearing| deg) per position.

        The score is distance plus ``angle_weight_m`` times the misalignment (directed: the
        segment's direction; undirected: its axis), so at a junction the way the car drives
        along wins over the crossing one. Positions go in blocks, to bound memory."""
        lat, lon, heading = np.asarray(lat), np.asarray(lon), np.asarray(heading)
        if lat.size > MATCH_BLOCK:
            parts = [self.match(lat[i:i + MATCH_BLOCK], lon[i:i + MATCH_BLOCK],
                                heading[i:i + MATCH_BLOCK], directed=directed, max_m=max_m,
                                angle_weight_m=angle_weight_m)
                     for i in range(0, lat.size, MATCH_BLOCK)]
            seg_, dist_, diff_ = (np.concatenate(col) for col in zip(*parts, strict=True))
            return seg_, dist_, diff_
        px, py = self.proj.xy(lat, lon)
        ckeys = list(zip(np.floor(px / self.cell).astype(int).tolist(),
                         np.floor(py / self.cell).astype(int).tolist(), strict=True))
        cand = [self._candidates(c) for c in ckeys]
        sizes = np.fromiter((c.size for c in cand), dtype=np.int64, count=len(cand))
        best = np.full(px.size, -1, dtype=np.int64)
        dist = np.full(px.size, np.inf)
        diff = np.full(px.size, np.nan)
        if sizes.sum() == 0:
            return best, dist, diff
        sample = np.repeat(np.arange(px.size), sizes)
        seg = np.concatenate(cand)
        dx, dy = self.x2[seg] - self.x1[seg], self.y2[seg] - self.y1[seg]
        ll = np.maximum(dx * dx + dy * dy, 1e-9)
        f = np.clip(((px[sample] - self.x1[seg]) * dx + (py[sample] - self.y1[seg]) * dy) / ll,
                    0.0, 1.0)
        d = np.hypot(self.x1[seg] + f * dx - px[sample], self.y1[seg] + f * dy - py[sample])
        ad = angle_diff(heading[sample], self.bearing[seg])
        ad = np.nan_to_num(ad, nan=0.0)
        mis = (1 - np.cos(np.radians(ad))) / 2 if directed else 1 - np.abs(np.cos(np.radians(ad)))
        score = d + angle_weight_m * mis
        order = np.lexsort((score, sample))
        first = order[np.r_[True, sample[order][1:] != sample[order][:-1]]]
        s_idx = sample[first]
        ok = d[first] <= max_m
        best[s_idx[ok]] = seg[first][ok]
        dist[s_idx] = d[first]
        diff[s_idx[ok]] = angle_diff(heading[s_idx[ok]], self.bearing[seg[first][ok]])
        return best, dist, diff


@dataclass
class Ways:
    """The GeoJSON's highway ways as straight segments with their direction rule."""

    lat1: np.ndarray
    lon1: np.ndarray
    lat2: np.ndarray
    lon2: np.ndarray
    oneway: np.ndarray  # int8: 1 along, -1 against the point order, 0 both ways
    highway: np.ndarray  # object: the OSM class
    signals: np.ndarray  # [k, 2] lat, lon of traffic_signals nodes
    way: np.ndarray  # int32: the line (way) each segment belongs to


def oneway_of(props: dict[str, Any]) -> int:
    """OSM's direction rule of a way: 1, -1 or 0 (``reversible`` and unknown values: 0)."""
    v = str(props.get("oneway", "")).strip().lower()
    if v in ("yes", "1", "true"):
        return 1
    if v == "-1":
        return -1
    if v == "no":
        return 0
    if str(props.get("junction", "")).lower() in ("roundabout", "circular"):
        return 1
    if str(props.get("highway", "")).lower() == "motorway":
        return 1
    return 0


def load_ways(path: Path) -> Ways:
    doc = orjson.loads(path.read_bytes())
    feats = doc["features"] if doc.get("type") == "FeatureCollection" else [doc]
    la1: list[float] = []
    lo1: list[float] = []
    la2: list[float] = []
    lo2: list[float] = []
    ow: list[int] = []
    hw: list[str] = []
    sig: list[tuple[float, float]] = []
    way: list[int] = []
    n_lines = 0
    for f in feats:
        g, props = f.get("geometry") or {}, f.get("properties") or {}
        if g.get("type") == "Point":
            if props.get("highway") == "traffic_signals":
                sig.append((g["coordinates"][1], g["coordinates"][0]))
            continue
        lines = ([g["coordinates"]] if g.get("type") == "LineString"
                 else g["coordinates"] if g.get("type") == "MultiLineString" else [])
        o, h = oneway_of(props), str(props.get("highway", ""))
        for line in lines:
            n_lines += 1
            for p, q in zip(line, line[1:], strict=False):
                way.append(n_lines - 1)
                lo1.append(p[0])
                la1.append(p[1])
                lo2.append(q[0])
                la2.append(q[1])
                ow.append(o)
                hw.append(h)
    return Ways(np.array(la1), np.array(lo1), np.array(la2), np.array(lo2),
                np.array(ow, dtype=np.int8), np.array(hw, dtype=object),
                np.array(sig, dtype=float).reshape(-1, 2), np.array(way, dtype=np.int32))


def way_of(ev: Events, ways: Ways, index: SegmentIndex) -> np.ndarray:
    """The way each event is on (matched by position and heading), -1 where none is near."""
    seg, _, _ = index.match(ev.lat, ev.lon, _headings(ev), directed=False)
    return np.where(seg >= 0, ways.way[np.maximum(seg, 0)], -1)


def wrong_way(ev: Events, ways: Ways, index: SegmentIndex) -> tuple[int, int, int, int]:
    """(moving samples against a one-way, moving samples matched to a way, those of them on a
    one-way way, unmatched)."""
    mov = np.flatnonzero((ev.v * 3.6 >= STOP_KMH) & ~ev.parked)
    seg, _, diff = index.match(ev.lat[mov], ev.lon[mov], _headings(ev)[mov], directed=False)
    ok = seg >= 0
    ow = np.where(ok, ways.oneway[np.maximum(seg, 0)], 0)
    against = ((ow == 1) & (diff > 90)) | ((ow == -1) & (diff < 90))
    return (int((against & ok).sum()), int(ok.sum()), int((ok & (ow != 0)).sum()),
            int((~ok).sum()))


def _headings(ev: Events) -> np.ndarray:
    """The event's heading, or the bearing to the car's next position when it has none."""
    h = ev.heading.copy()
    miss = np.isnan(h)
    if miss.any():
        a, b = pairs(ev)
        proj = Projection(float(ev.lat.mean()), float(ev.lon.mean()))
        x, y = proj.xy(ev.lat, ev.lon)
        est = np.full(h.size, np.nan)
        est[a] = bearing(x[a], y[a], x[b], y[b])
        h[miss] = est[miss]
    return h


def class_shares(ev: Events, ways: Ways, index: SegmentIndex) -> dict[str, float]:
    """Distance share per OSM highway class of the way each pair starts on."""
    a, _ = pairs(ev)
    d = distance_m(ev)
    seg, _, _ = index.match(ev.lat[a], ev.lon[a], _headings(ev)[a], directed=False)
    cls = np.where(seg >= 0, ways.highway[np.maximum(seg, 0)], "(unmatched)")
    total = float(d.sum())
    out: dict[str, float] = {}
    for c in sorted(set(cls.tolist())):
        out[str(c)] = float(d[cls == c].sum()) / total if total > 0 else math.nan
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


@dataclass(frozen=True)
class Crossings:
    total: int
    red: int
    amber: int
    separable: bool  # False: the phase function says only "red or amber" (counted in red)


def stop_line_setback() -> float:
    """Metres before a light's node where the producer's cars stop (``SETBACK_M`` in
    producer/fleet.py; 0 for producers that stop at the node itself)."""
    try:
        fleet = importlib.import_module("producer.fleet")
    except ImportError:
        return 0.0
    return float(getattr(fleet, "SETBACK_M", 0.0))


def light_crossings(ev: Events, net: Any, index: SegmentIndex,
                    setback: float | None = None) -> Crossings:
    """Cars entering the junctions of the producer network's lights, and the light's state
    when each crossed the stop line.

    A car enters a junction between two events when it is short of the light's node at the
    first (along the edge's direction) and past it by more than PASSED_M at the second: a car
    that stops on or a little over its stop line has not run the light. The light is the one
    ahead of the first event's edge, or of the second's, or ending where the second's edge
    starts, and the car's heading at the first event agrees with that edge's within
    ``ALONG_DEG`` (a car on the crossing street, passing near the node, is not entering on
    the light's edge). The stop line stands ``setback`` metres before the node (default: the
    producer's own, per edge where its network has ``edge_setback`` (farther back where a way
    leaves at a narrow angle), else ``stop_line_setback()``); the moment the car crossed it
    comes from the first event's distance to the line and the speeds the car reported (constant
    acceleration between consecutive events, see ``travel_s``), not from the two positions:
    a car turning at the node moves little along the light's edge between them."""
    back = stop_line_setback() if setback is None else setback
    per_edge = np.asarray(getattr(net, "edge_setback", ()), dtype=float)
    if setback is not None or per_edge.size != len(net.edge_light):
        per_edge = np.full(len(net.edge_light), back)
    a, b = pairs(ev)
    moving = (ev.v[a] + ev.v[b]) > 0
    a, b = a[moving], b[moving]
    heads = _headings(ev)
    edge_a, _, _ = index.match(ev.lat[a], ev.lon[a], heads[a], directed=True)
    edge_b, _, _ = index.match(ev.lat[b], ev.lon[b], heads[b], directed=True)
    light = np.asarray(net.edge_light)
    # third candidate: a light edge into the node the second event's edge starts from (the
    # car drove the whole, short, light edge between the two events)
    into: dict[int, list[int]] = {}
    for e in np.flatnonzero(light).tolist():
        into.setdefault(int(net.edge_to[e]), []).append(e)
    edge_c = np.full(a.size, -1, dtype=np.int64)
    heading = np.asarray(net.edge_heading)
    for i, eb in enumerate(edge_b.tolist()):
        cands = into.get(int(net.edge_from[eb])) if eb >= 0 else None
        if cands:
            diff = angle_diff(heading[cands], heads[a[i]])
            edge_c[i] = cands[int(np.argmin(np.nan_to_num(diff)))]
    found: dict[tuple[int, int], tuple[int, float]] = {}  # (pair, node) -> (edge, time)
    for edge in (edge_a, edge_b, edge_c):
        ok = (edge >= 0) & light[np.maximum(edge, 0)]
        pa, pb, e = a[ok], b[ok], edge[ok]
        node = np.asarray(net.edge_to)[e]
        proj = index.proj
        xa, ya = proj.xy(ev.lat[pa], ev.lon[pa])
        xb, yb = proj.xy(ev.lat[pb], ev.lon[pb])
        xn, yn = proj.xy(np.asarray(net.node_lat)[node], np.asarray(net.node_lon)[node])
        h = np.radians(np.asarray(net.edge_heading)[e])
        # metres still to go to the junction's node, along the edge's direction
        ahead_a = (xn - xa) * np.sin(h) + (yn - ya) * np.cos(h)
        ahead_b = (xn - xb) * np.sin(h) + (yn - yb) * np.cos(h)
        along = angle_diff(np.asarray(net.edge_heading)[e], heads[pa]) <= ALONG_DEG
        crossed = (ahead_a >= -PASSED_M / 5) & (ahead_b < -PASSED_M) & along
        for i in np.flatnonzero(crossed).tolist():
            key = (int(pa[i]), int(node[i]))
            if key not in found:
                t = _line_time(ev, int(pa[i]), float(ahead_a[i]), float(per_edge[e[i]]),
                               float(xn[i]), float(yn[i]), float(h[i]), proj)
                if t is not None:
                    found[key] = (int(e[i]), t)
    if hasattr(net, "light_state"):
        states = np.array([int(net.light_state(np.array([e]), t)[0])
                           for e, t in found.values()], dtype=np.int64)
        roads = importlib.import_module("producer.roads")
        red_code, amber_code = getattr(roads, "RED", 2), getattr(roads, "AMBER", 1)
        return Crossings(len(found), int((states == red_code).sum()),
                         int((states == amber_code).sum()), True)
    red = np.array([bool(net.red_for(np.array([e]), t)[0]) for e, t in found.values()],
                   dtype=bool)
    return Crossings(len(found), int(red.sum()), 0, False)


def _line_time(ev: Events, a: int, ahead_a: float, back: float, xn: float, yn: float,
               h: float, proj: Projection) -> float | None:
    """When the car whose event ``a`` is ``ahead_a`` m short of a node (along heading ``h``)
    crossed the stop line ``back`` m before it: forwards from ``a`` when that is short of the
    line, else between the last of its earlier events short of the line (up to
    ``LINE_LOOKBACK`` back) and the next, at constant acceleration from the reported speeds
    (see ``travel_s``); positions alone mislead at the node, where a turning car moves little
    along the light's edge, and reported positions stop at the node. None when the car
    was already past the line at its first event (placed there when the run started)."""
    back = back - LINE_TOL_M  # a car standing at its line has not crossed it
    k, ahead = a, ahead_a
    while ahead < back and k > 0 and a - k < LINE_LOOKBACK and ev.vid[k - 1] == ev.vid[a]:
        x, y = proj.xy(ev.lat[k - 1:k], ev.lon[k - 1:k])
        prev = float((xn - x[0]) * math.sin(h) + (yn - y[0]) * math.cos(h))
        if prev < ahead - 0.05 or prev > ahead + 60.0:  # not on this approach: stop here
            break
        k, ahead = k - 1, prev
    first = k == 0 or ev.vid[k - 1] != ev.vid[a]
    if ahead < back and first:
        return None
    if ahead >= back:  # k is short of the line: forwards from k, within its pair
        dt = float(ev.t[k + 1] - ev.t[k])
        acc = (ev.v[k + 1] - ev.v[k]) / max(dt, 1e-6)
        return float(ev.t[k] + min(float(travel_s(np.array(ahead - back), ev.v[k], acc)), dt))
    acc = (ev.v[k] - ev.v[k - 1]) / max(float(ev.t[k] - ev.t[k - 1]), 1e-6) \
        if k > 0 and ev.vid[k - 1] == ev.vid[k] else 0.0
    return float(ev.t[k] - float(travel_s(np.array(back - ahead), ev.v[k], -acc)))


def travel_s(d: np.ndarray, v: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Seconds to cover ``d`` m from speed ``v`` at constant acceleration ``acc`` (backwards
    in time: the speed now and minus the acceleration). A car that stops (backwards: was
    standing) before covering ``d`` takes until then: it waited past the line, so it crossed
    it before it last started, at the latest."""
    d, v, acc = np.asarray(d, float), np.maximum(np.asarray(v, float), 0.0), np.asarray(acc)
    disc = v * v + 2 * acc * d
    still = np.abs(acc) < 1e-3
    safe_acc = np.where(still, 1.0, acc)
    kin = np.where(disc >= 0, (np.sqrt(np.maximum(disc, 0.0)) - v) / safe_acc, -v / safe_acc)
    return np.where(still, d / np.maximum(v, 0.5), np.maximum(kin, 0.0))


def edge_index(net: Any, proj: Projection) -> SegmentIndex:
    f, t = np.asarray(net.edge_from), np.asarray(net.edge_to)
    lat, lon = np.asarray(net.node_lat), np.asarray(net.node_lon)
    return SegmentIndex(proj, lat[f], lon[f], lat[t], lon[t])


def way_index(ways: Ways, proj: Projection) -> SegmentIndex:
    return SegmentIndex(proj, ways.lat1, ways.lon1, ways.lat2, ways.lon2)
