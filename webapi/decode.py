"""Telemetry messages from Kafka -> validated store entries, or a malformed kind.

Validation is strict (issue 9): pydantic's JSON parser in strict mode (``"42.5"`` is not a
float, ``"yes"`` not a bool), finite numbers only, the contract's bounds on numbers, string
lengths and the fault-code list, printable ids, the Kafka key equal to ``vehicle_id``, and a
timestamp within a window of the consumer's clock (``WEBAPI_MAX_EVENT_AGE_S`` back,
``WEBAPI_MAX_EVENT_FUTURE_S`` ahead), so no event can pin a car in the future or fall outside
what pandas and browsers can show.

The fast path is pydantic's own JSON parser (``model_validate_json``): about 3 us per event
here, against 4 us for ``orjson.loads`` + ``model_validate`` (measured with timeit on a
353-byte event). The stored form is the event re-serialised once (about 3 us), so every
response and WebSocket frame is built by joining ready-made JSON bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from common.contract import MAX_CLOCK_SKEW_S, TelemetryEvent, format_timestamp, read_event

MALFORMED_KINDS = ("oversized", "not_utf8", "not_json", "not_object", "missing_field",
                   "wrong_type", "not_finite", "out_of_range", "unprintable", "too_old",
                   "in_future", "key_mismatch", "undecodable")
"""Kinds of skipped messages, as counted in /stats and /metrics. ``undecodable`` is a record
(or a whole record batch) the Kafka client could not decompress or verify."""

_SERIALIZER = TelemetryEvent.__pydantic_serializer__
_RANGE_ERRORS = frozenset(("greater_than", "greater_than_equal", "less_than", "less_than_equal",
                           "string_too_short", "string_too_long", "too_short", "too_long",
                           "literal_error", "enum", "datetime_object_invalid"))


@dataclass(slots=True, frozen=True)
class Limits:
    """What a message must satisfy beyond the contract (from the web API's settings)."""

    max_bytes: int = 8192
    max_age_s: float = 31_536_000.0
    max_future_s: float = MAX_CLOCK_SKEW_S


@dataclass(slots=True)
class Entry:
    """One validated event as the store keeps it. Never changed once built (not declared
    frozen: a frozen dataclass's ``__init__`` costs about 0.8 us more per event, 1,000 events
    per tick of the fleet)."""

    ts: float  # event timestamp, seconds since the epoch
    vehicle_id: str
    violation: bool  # speeding or over the redline
    raw: bytes  # the event as JSON (TelemetryEvent serialisation)
    trail_point: bytes  # {"timestamp","lat","lon","speed_kmh"} as JSON
    lat: float = 0.0  # for viewport filters and the density grid
    lon: float = 0.0
    speed_kmh: float = 0.0


class Malformed(Exception):  # noqa: N818 - it names a kind of message, not a failure of ours
    """A message that is not a valid telemetry event."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


_TS_KEY = b'"timestamp":"'


def entry_from_event(event: TelemetryEvent, ts: float | None = None) -> Entry:
    # Built with an f-string, not orjson: orjson's bytes objects carry a large spare buffer
    # (measured: ~8 kB of RSS each when kept), and the store keeps ~300,000 trail points.
    # repr of a finite float is valid JSON. The timestamp is the serialised event's own
    # (format_timestamp's), cut out of it rather than formatted twice: in JSON a bare
    # '"timestamp":"' can only be that key, as every quote inside a string is escaped.
    raw = _SERIALIZER.to_json(event)
    start = raw.index(_TS_KEY) + len(_TS_KEY)
    stamp = raw[start:raw.index(b'"', start)]
    loc = event.location
    point = b'{"timestamp":"%b","lat":%b,"lon":%b,"speed_kmh":%b}' % (
        stamp, repr(loc.lat).encode(), repr(loc.lon).encode(), repr(event.speed_kmh).encode())
    return Entry(
        event.timestamp.timestamp() if ts is None else ts,
        event.vehicle_id,
        event.speeding or event.rpm_over_redline,
        raw,
        point,
        loc.lat,
        loc.lon,
        event.speed_kmh,
    )


def decode(value: bytes | None, key: bytes | None, limits: Limits, now: float) -> Entry:
    """Validate one Kafka message (value and key) at consumer time ``now`` (epoch seconds);
    raise :class:`Malformed` naming its kind."""
    if value is None:
        raise Malformed("not_json", "empty message (tombstone)")
    if len(value) > limits.max_bytes:
        raise Malformed("oversized", f"{len(value)} bytes > {limits.max_bytes}")
    try:
        event = read_event(value)
    except ValidationError as exc:
        raise _classify(exc, value) from None
    try:
        ts = event.timestamp.timestamp()
    except (OverflowError, ValueError):  # e.g. 9999-12-31T23:59:59-01:00 has no UTC instant
        raise Malformed("in_future", f"timestamp {event.timestamp} out of range") from None
    if ts > now + limits.max_future_s:
        raise Malformed("in_future", f"timestamp {format_timestamp(event.timestamp)} is more "
                                     f"than {limits.max_future_s:g} s ahead")
    if ts < now - limits.max_age_s:
        raise Malformed("too_old", f"timestamp {format_timestamp(event.timestamp)} is more "
                                   f"than {limits.max_age_s:g} s old")
    if key is None or key != event.vehicle_id.encode():
        shown = "none" if key is None else repr(key[:80])
        raise Malformed("key_mismatch", f"Kafka key {shown} is not the vehicle_id")
    return entry_from_event(event, ts)


def _classify(exc: ValidationError, value: bytes) -> Malformed:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0] if errors else {"type": "unknown", "loc": (), "msg": str(exc)}
    kind_of = first["type"]
    where = ".".join(str(p) for p in first["loc"]) or "message"
    if kind_of == "json_invalid":
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as bad:
            return Malformed("not_utf8", f"invalid UTF-8 at byte {bad.start}")
        return Malformed("not_json", str(first["msg"]))
    if kind_of in ("model_type", "model_attributes_type") and not first["loc"]:
        return Malformed("not_object", str(first["msg"]))
    types = {e["type"] for e in errors}
    if "missing" in types:
        missing = [".".join(str(p) for p in e["loc"]) for e in errors if e["type"] == "missing"]
        return Malformed("missing_field", f"missing {', '.join(missing)}")
    detail = f"{where}: {first['msg']} ({len(errors)} error(s))"
    if "finite_number" in types:
        return Malformed("not_finite", detail)
    if "unprintable" in types:
        return Malformed("unprintable", detail)
    if types <= _RANGE_ERRORS:
        return Malformed("out_of_range", detail)
    return Malformed("wrong_type", detail)
