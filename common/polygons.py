"""Is a polygon simple? The checks a geofence's rings must pass (common.fleet_events.Polygon).

A geofence is a GeoJSON Polygon: an outer ring, then holes. Every reader decides "inside" by
the even-odd rule, which gives an answer for any rings at all, but not the one the user
drew when rings cross. So, as OGC Simple Features asks of a polygon (and GeoJSON, RFC 7946
§3.1.6, of its rings): each ring encloses an area, no ring crosses or touches itself or
another ring, and each hole lies inside the outer ring and outside the other holes.

Plain planar geometry on [lon, lat] degrees, as the readers' point-in-polygon test uses.
Edges are paired by a sweep over their bounding boxes and compared at once with numpy: a
1,000-vertex polygon (the most a geofence may have) takes about a millisecond; a zigzag whose
every edge spans the others is the worst case, all pairs, a few tenths of a second.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Ring = Sequence[tuple[float, float]]


def polygon_problem(rings: Sequence[Ring]) -> str | None:
    """Why ``rings`` (each closed: first position == last) are not a simple polygon with
    holes, or None when they are one. A position repeated right after itself counts once."""
    arrays = [_without_repeats(np.asarray(r, dtype=float)) for r in rings]
    for i, ring in enumerate(arrays):
        if len(ring) < 4:
            return f"{_name(i)} encloses no area (fewer than 3 distinct positions)"
    crossing = _first_crossing(arrays)
    if crossing is not None:
        return crossing
    for i, ring in enumerate(arrays):
        if _area(ring) == 0.0:  # a safety net: such a ring folds back on itself, above
            return f"{_name(i)} encloses no area (its positions lie on one line)"
    outer = arrays[0]
    for i, hole in enumerate(arrays[1:], start=1):
        if not _inside(hole[0], outer):
            return f"{_name(i)} is not inside the outer ring"
        for j, other in enumerate(arrays[1:], start=1):
            if j != i and _inside(hole[0], other):
                return f"{_name(i)} lies inside {_name(j)}"
    return None


def _without_repeats(ring: np.ndarray) -> np.ndarray:
    keep = np.ones(len(ring), dtype=bool)
    keep[1:] = (ring[1:] != ring[:-1]).any(axis=1)
    return ring[keep]


def _name(i: int) -> str:
    return "the outer ring" if i == 0 else f"hole {i}"


def _area(ring: np.ndarray) -> float:
    """Shoelace formula (signed) of a closed ring."""
    x, y = ring[:, 0], ring[:, 1]
    return float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])) / 2.0


def _inside(point: np.ndarray, ring: np.ndarray) -> bool:
    """Even-odd point-in-ring (the point is on no edge: rings neither cross nor touch)."""
    x, y = point
    ax, ay, bx, by = ring[:-1, 0], ring[:-1, 1], ring[1:, 0], ring[1:, 1]
    straddles = (ay > y) != (by > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        crosses = straddles & (x < (bx - ax) * (y - ay) / (by - ay) + ax)
    return bool(crosses.sum() % 2)


def _first_crossing(rings: list[np.ndarray]) -> str | None:
    """Where two edges cross, touch or overlap, other than consecutive edges of one ring at
    the position they share; or None."""
    a = np.concatenate([r[:-1] for r in rings])
    b = np.concatenate([r[1:] for r in rings])
    ring_of = np.concatenate([np.full(len(r) - 1, k) for k, r in enumerate(rings)])
    edge_of = np.concatenate([np.arange(len(r) - 1) for r in rings])
    size = np.concatenate([np.full(len(r) - 1, len(r) - 1) for r in rings])
    i, j = _candidate_pairs(a, b)
    same = ring_of[i] == ring_of[j]
    gap = edge_of[j] - edge_of[i]
    neighbours = same & ((gap == 1) | (gap == size[i] - 1))
    p, q, r, s = a[i], b[i], a[j], b[j]
    o1, o2 = _orient(p, q, r), _orient(p, q, s)
    o3, o4 = _orient(r, s, p), _orient(r, s, q)
    proper = (o1 * o2 < 0) & (o3 * o4 < 0)
    touch = (((o1 == 0) & _on(p, q, r)) | ((o2 == 0) & _on(p, q, s))
             | ((o3 == 0) & _on(r, s, p)) | ((o4 == 0) & _on(r, s, q)))
    # consecutive edges share one position, and may not also run back along each other
    bad = ((proper | touch) & ~neighbours) | (neighbours & _fold_back(p, q, r, s))
    hits = np.flatnonzero(bad)
    if hits.size == 0:
        return None
    k = hits[0]
    e1, e2 = (int(ring_of[i[k]]), int(edge_of[i[k]])), (int(ring_of[j[k]]), int(edge_of[j[k]]))
    if e1[0] == e2[0]:
        return f"{_name(e1[0])} crosses itself (edges {e1[1] + 1} and {e2[1] + 1})"
    return f"{_name(e1[0])} and {_name(e2[0])} cross or touch"


def _candidate_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of edges whose bounding boxes meet: a sweep over x (edges sorted by
    their west end, each paired with those starting before its east end), then y."""
    lo_x, hi_x = np.minimum(a[:, 0], b[:, 0]), np.maximum(a[:, 0], b[:, 0])
    order = np.argsort(lo_x, kind="stable")
    starts = lo_x[order]
    ends = np.searchsorted(starts, hi_x[order], side="right")
    first = np.arange(1, len(order) + 1)
    counts = np.maximum(ends - first, 0)
    t = np.repeat(np.arange(len(order)), counts)
    u = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + first[t]
    i, j = order[t], order[u]
    i, j = np.minimum(i, j), np.maximum(i, j)
    lo_y, hi_y = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    meet = (lo_y[i] <= hi_y[j]) & (lo_y[j] <= hi_y[i])
    return i[meet], j[meet]


def _orient(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Sign of the turn p -> q -> r: 1 left, -1 right, 0 on one line."""
    return np.sign((q[:, 0] - p[:, 0]) * (r[:, 1] - p[:, 1])
                   - (q[:, 1] - p[:, 1]) * (r[:, 0] - p[:, 0]))


def _on(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """r (on the line pq) lies within the segment pq."""
    return ((np.minimum(p[:, 0], q[:, 0]) <= r[:, 0]) & (r[:, 0] <= np.maximum(p[:, 0], q[:, 0]))
            & (np.minimum(p[:, 1], q[:, 1]) <= r[:, 1])
            & (r[:, 1] <= np.maximum(p[:, 1], q[:, 1])))


def _fold_back(p: np.ndarray, q: np.ndarray, r: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Edges pq and rs on one line, pointing back along each other: for consecutive edges,
    a spike of no width."""
    d1, d2 = q - p, s - r
    cross = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    dot = d1[:, 0] * d2[:, 0] + d1[:, 1] * d2[:, 1]
    return (cross == 0) & (dot < 0)
