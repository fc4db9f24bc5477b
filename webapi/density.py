"""Fleet-scale reads for maps: a viewport filter and a density grid (pure, no I/O).

Zoomed out, a map of 50,000 cars needs counts per area, not 50,000 points: :func:`grid`
counts the vehicles on a ``cells`` x ``cells`` grid over a bounding box, with their mean
speed, listing only non-empty cells. Zoomed in, :func:`in_bbox` keeps the points of the
viewport.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from webapi.decode import Entry

DENSITY_DEFAULT, DENSITY_CAP = 64, 256
"""GET /telemetry/density: cells per side of the grid."""

BBox = tuple[float, float, float, float]  # minlon, minlat, maxlon, maxlat


def in_bbox(entry: Entry, bbox: BBox) -> bool:
    minlon, minlat, maxlon, maxlat = bbox
    return minlon <= entry.lon <= maxlon and minlat <= entry.lat <= maxlat


def grid(entries: Iterable[Entry], bbox: BBox, cells: int) -> dict[str, Any]:
    """``{"bbox","cells","cell_size_deg","total","items":[{"col","row","lon","lat","count",
    "mean_speed_kmh"}]}``: col 0 is the west edge, row 0 the south; lon/lat is the cell's
    centre; a box whose min is not below its max is empty."""
    minlon, minlat, maxlon, maxlat = bbox
    dlon, dlat = (maxlon - minlon) / cells, (maxlat - minlat) / cells
    counts: dict[tuple[int, int], list[float]] = {}
    total = 0
    empty = not (dlon > 0 and dlat > 0)
    for e in [] if empty else entries:
        if not in_bbox(e, bbox):
            continue
        col = min(int((e.lon - minlon) / dlon), cells - 1)
        row = min(int((e.lat - minlat) / dlat), cells - 1)
        cell = counts.get((col, row))
        if cell is None:
            counts[(col, row)] = [1, e.speed_kmh]
        else:
            cell[0] += 1
            cell[1] += e.speed_kmh
        total += 1
    items = [{"col": col, "row": row,
              "lon": round(minlon + (col + 0.5) * dlon, 6),
              "lat": round(minlat + (row + 0.5) * dlat, 6),
              "count": int(n), "mean_speed_kmh": round(speed / n, 2)}
             for (col, row), (n, speed) in sorted(counts.items())]
    return {"bbox": list(bbox), "cells": cells,
            "cell_size_deg": [round(dlon, 9), round(dlat, 9)],
            "total": total, "items": items}


