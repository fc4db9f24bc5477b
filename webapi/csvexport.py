"""CSV rows in the original export's columns, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from common.contract import CSV_COLUMNS
from common.spreadsheet import neutralise
from webapi.decode import Entry


def row(event: dict[str, Any]) -> list[Any]:
    loc = event["location"]
    return [
        neutralise(event["timestamp"]),
        neutralise(event["vehicle_id"]),
        loc["lat"],
        loc["lon"],
        event["speed_kmh"],
        event["engine_rpm"],
        event["gear"],
        event["fuel_level_pct"],
        neutralise(event["road_type"]),
        event["speed_limit_kmh"],
        1 if event["speeding"] else 0,
        1 if event["rpm_over_redline"] else 0,
    ]


def chunks(entries: Iterable[Entry], rows_per_chunk: int = 500) -> Iterator[bytes]:
    """The header, then the rows, as UTF-8 chunks of ``rows_per_chunk`` rows."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    n = 0
    for entry in entries:
        writer.writerow(row(orjson.loads(entry.raw)))
        n += 1
        if n % rows_per_chunk == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    if buf.tell():
        yield buf.getvalue().encode()
