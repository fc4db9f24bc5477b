"""A geofence must be a simple polygon (common.polygons, checked by common.fleet_events.Polygon):
rings that enclose an area, cross or touch nothing, holes inside the outer ring and apart.
Every invalid shape here was accepted (201) before, and gave even-odd answers the user did
not draw."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from common.fleet_events import Geofence
from common.polygons import _candidate_pairs, polygon_problem

SQUARE = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)]
HOLE = [(0.2, 0.2), (0.4, 0.2), (0.4, 0.4), (0.2, 0.4), (0.2, 0.2)]


def circle(n: int, r: float = 1.0) -> list[tuple[float, float]]:
    ring = [(r * math.cos(2 * math.pi * k / n), r * math.sin(2 * math.pi * k / n))
            for k in range(n)]
    return [*ring, ring[0]]


@pytest.mark.parametrize(("rings", "reason"), [
    ([[(0.0, 0.0)] * 4], "outer ring encloses no area"),
    ([[(0.0, 0.0), (1.0, 0.0), (2.0, 0.0), (0.0, 0.0)]], "crosses itself"),  # on one line
    ([[(0.0, 0.0), (1.0, 1.0), (1.0, 0.0), (0.0, 1.0), (0.0, 0.0)]], "crosses itself"),  # bow-tie
    ([[(0.0, 0.0), (1.0, 0.0), (2.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)]],
     "crosses itself"),  # a spike of no width
    ([[(0, 0), (1, 0), (1, 1), (2, 1), (2, 2), (1, 2), (1, 1), (0, 1), (0, 0)]],
     "crosses itself"),  # a figure of eight, touching at one position
    ([SQUARE, [(2.0, 2.0), (3.0, 2.0), (3.0, 3.0), (2.0, 2.0)]], "hole 1 is not inside"),
    ([SQUARE, HOLE, HOLE], "hole 1 and hole 2 cross or touch"),
    ([SQUARE, [(0.1, 0.1), (0.9, 0.1), (0.9, 0.9), (0.1, 0.9), (0.1, 0.1)], HOLE],
     "hole 2 lies inside hole 1"),
    ([SQUARE, [(0.0, 0.5), (0.5, 0.4), (0.5, 0.6), (0.0, 0.5)]], "cross or touch"),
    ([circle(8), circle(8, 0.5), [(0.4, 0.0), (0.6, 0.0), (0.5, 0.1), (0.4, 0.0)]],
     "cross or touch"),  # a hole across another
])
def test_a_polygon_that_is_not_simple_is_refused(rings, reason) -> None:
    problem = polygon_problem(rings)
    assert problem is not None and reason in problem, problem
    doc = {"id": "f", "name": "F", "geometry": {"type": "Polygon", "coordinates": rings}}
    with pytest.raises(ValidationError, match=reason):
        Geofence.model_validate(doc)


@pytest.mark.parametrize("rings", [
    [SQUARE], [SQUARE[::-1]], [SQUARE, HOLE],
    [[(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (0.0, 0.0)]],  # a triangle
    [[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)]],  # repeated
    [circle(999)],  # the most vertices a geofence may have
    [[(11.5, 48.1), (11.50001, 48.1), (11.50001, 48.10001), (11.5, 48.1)]],  # about 1 m
    [[(21.0, 52.0), (21.000001, 52.0), (21.000001, 52.000001), (21.0, 52.000001),
      (21.0, 52.0)]],  # about 0.1 m, as the events job's test draws one
])
def test_simple_polygons_pass(rings) -> None:
    assert polygon_problem(rings) is None


def test_the_sweep_compares_only_edges_whose_boxes_meet() -> None:
    """A 1,000-vertex ring (the most a geofence may have) has about 500,000 pairs of edges;
    the sweep tests only those whose bounding boxes meet."""
    ring = np.asarray(circle(999))
    i, j = _candidate_pairs(ring[:-1], ring[1:])
    assert len(i) < 5_000 and bool((i < j).all())
    neighbours = {(k, k + 1) for k in range(998)} | {(0, 998)}
    assert neighbours <= set(zip(i.tolist(), j.tolist(), strict=True))
