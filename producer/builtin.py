"""The built-in road network: a schematic Warsaw, generated deterministically.

- an urban grid in the centre (17 x 17 streets, 250 m apart, 50 km/h, lights at crossings),
- an inner ring road (3.5 km radius, urban) joined to the grid by 8 avenues,
- an outer ring road (9 km radius, rural, 90 km/h) joined to the inner one by 8 radial roads,
- 4 highways (130 km/h) leaving the outer ring for 35 km out of town.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from producer.geo import WARSAW, offset_m
from producer.roads import DEFAULT_LIMITS, HIGHWAY, RURAL, URBAN, Road, RoadNetwork, build_network

GRID_HALF_M = 2000.0
GRID_STEP_M = 250.0
INNER_RING_M = 3500.0
INNER_RING_POINTS = 32
OUTER_RING_M = 9000.0
OUTER_RING_POINTS = 48
HIGHWAY_END_M = 35000.0

Point = tuple[float, float]  # metres east, metres north of the centre


def _ring_point(radius: float, k: int, points: int) -> Point:
    a = 2 * math.pi * k / points
    return radius * math.cos(a), radius * math.sin(a)


def _line(a: Point, b: Point, step_m: float) -> list[Point]:
    n = max(1, math.ceil(math.hypot(b[0] - a[0], b[1] - a[1]) / step_m))
    return [a] + [(a[0] + (b[0] - a[0]) * i / n, a[1] + (b[1] - a[1]) * i / n)
                  for i in range(1, n)] + [b]


def _road(points: list[Point], road_type: int) -> Road:
    east = np.array([p[0] for p in points])
    north = np.array([p[1] for p in points])
    lat, lon = offset_m(WARSAW[0], WARSAW[1], east, north)
    limit = DEFAULT_LIMITS[("urban", "rural", "highway")[road_type]]
    return Road(lats=lat.round(7).tolist(), lons=lon.round(7).tolist(), road_type=road_type,
                limit_kmh=limit)


def _to_latlon(p: Point) -> tuple[float, float]:
    lat, lon = offset_m(WARSAW[0], WARSAW[1], p[0], p[1])
    return float(lat), float(lon)


@lru_cache(maxsize=1)
def warsaw() -> RoadNetwork:
    """The built-in network (cached: it is immutable)."""
    roads: list[Road] = []
    ticks = np.arange(-GRID_HALF_M, GRID_HALF_M + 1, GRID_STEP_M).tolist()
    for c in ticks:
        roads.append(_road([(x, c) for x in ticks], URBAN))
        roads.append(_road([(c, y) for y in ticks], URBAN))
    inner = [_ring_point(INNER_RING_M, k, INNER_RING_POINTS) for k in range(INNER_RING_POINTS)]
    roads.append(_road(inner + inner[:1], URBAN))
    outer = [_ring_point(OUTER_RING_M, k, OUTER_RING_POINTS) for k in range(OUTER_RING_POINTS)]
    roads.append(_road(outer + outer[:1], RURAL))
    places: list[Point] = [(0.0, 0.0)]
    for j in range(8):
        a = j * math.pi / 4
        # the grid's edge in this direction: a side midpoint or a corner
        gx = GRID_HALF_M * float(np.sign(round(math.cos(a), 6)))
        gy = GRID_HALF_M * float(np.sign(round(math.sin(a), 6)))
        ring_in = inner[j * INNER_RING_POINTS // 8]
        ring_out = outer[j * OUTER_RING_POINTS // 8]
        roads.append(_road(_line((gx, gy), ring_in, 500.0), URBAN))
        roads.append(_road(_line(ring_in, ring_out, 1000.0), RURAL))
        if j % 2 == 1:
            places.append((gx, gy))
        else:
            places.append(ring_in)
            places.append(outer[j * OUTER_RING_POINTS // 8 + OUTER_RING_POINTS // 16])
    for j in range(4):
        k = 3 + j * OUTER_RING_POINTS // 4
        start = outer[k]
        a0 = 2 * math.pi * k / OUTER_RING_POINTS
        pts: list[Point] = [start]
        r = OUTER_RING_M
        while r < HIGHWAY_END_M:
            r += 2500.0
            a = a0 + 0.12 * math.sin((r - OUTER_RING_M) / 9000.0) * (1 if j % 2 else -1)
            pts.append((r * math.cos(a), r * math.sin(a)))
        roads.append(_road(pts, HIGHWAY))
        places.append(pts[-1])
    return build_network("builtin:warsaw", roads, place_points=[_to_latlon(p) for p in places])
