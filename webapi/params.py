"""Query-parameter parsing: every bad value becomes a 422 JSON error naming the parameter."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime

MAX_VEHICLE_FILTER = 1000


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
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_param(name, f"must be an integer, got {raw[:40]!r}") from None
    if value < minimum:
        raise bad_param(name, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise bad_param(name, f"must be <= {maximum}, got {value}")
    return min(value, cap) if cap is not None else value


def float_param(query: Mapping[str, str], name: str) -> float | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise bad_param(name, f"must be a number, got {raw[:40]!r}") from None
    if not math.isfinite(value):
        raise bad_param(name, f"must be a finite number, got {raw[:40]!r}")
    return value


def bool_param(query: Mapping[str, str], name: str) -> bool:
    raw = query.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise bad_param(name, f"must be 1/0 or true/false, got {raw[:40]!r}")


def vehicles_param(query: Mapping[str, str], name: str = "vehicle_id") -> frozenset[str] | None:
    """``vehicle_id=A,B`` (or repeated) -> a set of ids; absent -> None (all vehicles)."""
    if hasattr(query, "getall"):
        raws = query.getall(name, [])
    else:
        raws = [query[name]] if name in query else []
    ids = {v.strip() for raw in raws for v in raw.split(",") if v.strip()}
    if not raws:
        return None
    if not ids:
        raise bad_param(name, "must name at least one vehicle id")
    if len(ids) > MAX_VEHICLE_FILTER:
        raise bad_param(name, f"at most {MAX_VEHICLE_FILTER} vehicle ids")
    too_long = [v for v in ids if len(v) > 64]
    if too_long:
        raise bad_param(name, "vehicle ids are at most 64 characters")
    return frozenset(ids)


def time_param(query: Mapping[str, str], name: str) -> float | None:
    """An ISO 8601 timestamp (a missing offset means UTC) -> seconds since the epoch."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        ts = datetime.fromisoformat(raw.strip().replace(" ", "+"))
    except ValueError:
        raise bad_param(name, f"must be an ISO 8601 timestamp, got {raw[:60]!r}") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.timestamp()


def time_range(query: Mapping[str, str]) -> tuple[float | None, float | None]:
    since, until = time_param(query, "since"), time_param(query, "until")
    if since is not None and until is not None and since > until:
        raise bad_param("since", "must not be after until")
    return since, until
