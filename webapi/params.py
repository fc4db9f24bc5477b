"""Query-parameter parsing: every bad value becomes a 422 JSON error naming the parameter.

A parameter given empty (``limit=``) is refused like any other bad value: the OpenAPI
document types each one, and an empty string is none of those types. A single-valued
parameter given twice (``limit=5&limit=abc``) is refused too: which one to use would be a
guess. Only ``vehicle_id`` (and the ``kind`` filters) may be repeated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime

from common.contract import MAX_VEHICLE_ID_LEN, is_printable_id

MAX_VEHICLE_FILTER = 1000
MAX_VEHICLE_FILTER_CHARS = 4096
"""Longest ``vehicle_id`` parameter value (repeat the parameter for more ids)."""
MAX_REQUEST_LINE = 65_536
"""aiohttp's request-line limit (its default, 8190, is less than a percent-encoded maximal
``vehicle_id`` filter)."""


_FRACTION = r"(\.[0-9]{1,12})?"
BBOX_LON = rf"-?((0?[0-9]{{1,2}}|1[0-7][0-9]){_FRACTION}|180(\.0{{1,12}})?)"
BBOX_LAT = rf"-?(0?[0-8]?[0-9]{_FRACTION}|0?90(\.0{{1,12}})?)"
BBOX_RE = re.compile(f"{BBOX_LON},{BBOX_LAT},{BBOX_LON},{BBOX_LAT}")
"""Longitudes within -180..180, latitudes within -90..90, as plain decimals (the OpenAPI
document's pattern too, so a schema-valid box is a valid one)."""
NUMBER_RE = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
"""A decimal number as JSON and every client write it (Python's ``float`` alone would also
take ``5_0``, spaces around it, ``nan`` and ``inf``)."""
FLAGS = {"true": True, "1": True, "false": False, "0": False}


def one_value(query: Mapping[str, str], name: str) -> str | None:
    """The parameter's value (absent: None); given more than once, a 422."""
    if hasattr(query, "getall"):
        values = query.getall(name, [])
        if len(values) > 1:
            raise bad_param(name, f"given {len(values)} times; give it once")
        return values[0] if values else None
    return query.get(name)


def flag_param(query: Mapping[str, str], name: str) -> bool:
    """A boolean flag: exactly ``true``/``1`` or ``false``/``0``; absent: False."""
    raw = one_value(query, name)
    if raw is None:
        return False
    if raw not in FLAGS:
        raise bad_param(name, f"must be true, false, 1 or 0, got {raw[:40]!r}")
    return FLAGS[raw]


class ApiError(Exception):
    """Raised by handlers; the error middleware answers {"error": message, **extra}."""

    def __init__(self, code: int, message: str, **extra: object) -> None:
        super().__init__(message)
        self.status = code
        self.body = {"error": message, **extra}


def bad_param(name: str, message: str) -> ApiError:
    return ApiError(422, f"{name}: {message}", parameter=name)


def int_param(query: Mapping[str, str], name: str, default: int, *, minimum: int,
              cap: int | None = None, maximum: int | None = None) -> int:
    """An integer >= minimum; values above ``cap`` are clamped, above ``maximum`` refused."""
    raw = one_value(query, name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.lstrip("+-").isdigit() or len(raw) > 4000:
        raise bad_param(name, f"must be an integer, got {raw[:40]!r}")
    try:
        value = int(raw)
    except ValueError:
        raise bad_param(name, f"must be an integer, got {raw[:40]!r}") from None
    if value < minimum:
        raise bad_param(name, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise bad_param(name, f"must be <= {maximum}, got {value}")
    return min(value, cap) if cap is not None else value


def float_param(query: Mapping[str, str], name: str, *, minimum: float | None = None,
                maximum: float | None = None) -> float | None:
    """A finite number (absent: None), optionally within ``minimum..maximum`` inclusive."""
    raw = one_value(query, name)
    if raw is None:
        return None
    if len(raw) > 40 or not NUMBER_RE.fullmatch(raw):
        raise bad_param(name, f"must be a number, got {raw[:40]!r}")
    value = float(raw)
    if not math.isfinite(value):
        raise bad_param(name, f"must be a finite number, got {raw[:40]!r}")
    if minimum is not None and value < minimum:
        raise bad_param(name, f"must be >= {minimum:g}, got {raw[:40]!r}")
    if maximum is not None and value > maximum:
        raise bad_param(name, f"must be <= {maximum:g}, got {raw[:40]!r}")
    return value


def bool_param(query: Mapping[str, str], name: str) -> bool:
    """A boolean: ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``, any case;
    absent: False."""
    raw = one_value(query, name)
    if raw is None:
        return False
    raw = raw.strip().lower()
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise bad_param(name, f"must be 1/0 or true/false, got {raw[:40]!r}")


def vehicles_param(query: Mapping[str, str], name: str = "vehicle_id") -> frozenset[str] | None:
    """``vehicle_id=A,B`` (or repeated) -> a set of ids, matched exactly (spaces are part of an
    id); absent -> None (all vehicles)."""
    if hasattr(query, "getall"):
        raws = query.getall(name, [])
    else:
        raws = [query[name]] if name in query else []
    if not raws:
        return None
    if any(len(raw) > MAX_VEHICLE_FILTER_CHARS for raw in raws):
        raise bad_param(name, f"at most {MAX_VEHICLE_FILTER_CHARS} characters")
    ids = {v for raw in raws for v in raw.split(",") if v}
    if not ids:
        raise bad_param(name, "must name at least one vehicle id")
    if len(ids) > MAX_VEHICLE_FILTER:
        raise bad_param(name, f"at most {MAX_VEHICLE_FILTER} vehicle ids")
    # An id no event can have (too long, or not printable: see common.contract) matches
    # nothing; it is dropped here, so it never reaches a lookup, a log line or an answer.
    return frozenset(v for v in ids if len(v) <= MAX_VEHICLE_ID_LEN and is_printable_id(v))


def time_param(query: Mapping[str, str], name: str) -> float | None:
    """An ISO 8601 timestamp (a missing offset means UTC) -> seconds since the epoch."""
    raw = one_value(query, name)
    if raw is None:
        return None
    try:
        ts = datetime.fromisoformat(raw.strip().replace(" ", "+"))
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        return ts.timestamp()
    except (ValueError, OverflowError):
        raise bad_param(name, f"must be an ISO 8601 timestamp, got {raw[:60]!r}") from None


def time_range(query: Mapping[str, str]) -> tuple[float | None, float | None]:
    """``since`` and ``until``; a range with since after until is empty, not an error."""
    return time_param(query, "since"), time_param(query, "until")


def bbox_param(query: Mapping[str, str], name: str = "bbox"
               ) -> tuple[float, float, float, float] | None:
    """``bbox=minlon,minlat,maxlon,maxlat`` (WGS84 degrees as plain decimals) -> the four
    numbers, longitudes within -180..180 and latitudes within -90..90; absent -> None. A box
    with a min not below its max matches nothing (like an empty since..until range); one
    across the antimeridian is not supported."""
    raw = one_value(query, name)
    if raw is None:
        return None
    if not BBOX_RE.fullmatch(raw):
        raise bad_param(name, f"must be four decimal numbers minlon,minlat,maxlon,maxlat "
                              f"(e.g. 20.9,52.1,21.1,52.3), longitudes within -180..180 and "
                              f"latitudes within -90..90, got {raw[:80]!r}")
    minlon, minlat, maxlon, maxlat = (float(p) for p in raw.split(","))
    return minlon, minlat, maxlon, maxlat
