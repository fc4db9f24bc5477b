"""Telemetry messages from Kafka -> validated store entries, or a malformed kind.

The fast path is pydantic's own JSON parser (``model_validate_json``): about 3 us per event
here, against 4 us for ``orjson.loads`` + ``model_validate`` (measured with timeit on a
353-byte event). The stored form is the event re-serialised once (about 3 us), so every
response and WebSocket frame is built by joining ready-made JSON bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from common.contract import TelemetryEvent, format_timestamp

MALFORMED_KINDS = ("oversized", "not_json", "not_object", "missing_field", "wrong_type")
"""Kinds of skipped messages, as counted in /stats and /metrics."""

_SERIALIZER = TelemetryEvent.__pydantic_serializer__


@dataclass(slots=True, frozen=True)
class Entry:
    """One validated event as the store keeps it."""

    ts: float  # event timestamp, seconds since the epoch
    vehicle_id: str
    violation: bool  # speeding or over the redline
    raw: bytes  # the event as JSON (TelemetryEvent serialisation)
    trail_point: bytes  # {"timestamp","lat","lon","speed_kmh"} as JSON


class Malformed(Exception):  # noqa: N818 - it names a kind of message, not a failure of ours
    """A message that is not a valid telemetry event."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def entry_from_event(event: TelemetryEvent) -> Entry:
    # Built with an f-string, not orjson: orjson's bytes objects carry a large spare buffer
    # (measured: ~8 kB of RSS each when kept), and the store keeps ~300,000 trail points.
    # repr of a finite float is valid JSON; the timestamp format has no characters to escape.
    loc = event.location
    point = (f'{{"timestamp":"{format_timestamp(event.timestamp)}","lat":{loc.lat!r},'
             f'"lon":{loc.lon!r},"speed_kmh":{event.speed_kmh!r}}}').encode()
    return Entry(
        ts=event.timestamp.timestamp(),
        vehicle_id=event.vehicle_id,
        violation=event.speeding or event.rpm_over_redline,
        raw=_SERIALIZER.to_json(event),
        trail_point=point,
    )


def decode(value: bytes | None, max_bytes: int) -> Entry:
    """Validate one Kafka message value; raise :class:`Malformed` naming its kind."""
    if value is None:
        raise Malformed("not_json", "empty message (tombstone)")
    if len(value) > max_bytes:
        raise Malformed("oversized", f"{len(value)} bytes > {max_bytes}")
    try:
        event = TelemetryEvent.model_validate_json(value)
    except ValidationError as exc:
        raise _classify(exc) from None
    return entry_from_event(event)


def _classify(exc: ValidationError) -> Malformed:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0] if errors else {"type": "unknown", "loc": (), "msg": str(exc)}
    kind_of = first["type"]
    where = ".".join(str(p) for p in first["loc"]) or "message"
    if kind_of == "json_invalid":
        return Malformed("not_json", str(first["msg"]))
    if kind_of in ("model_type", "model_attributes_type") and not first["loc"]:
        return Malformed("not_object", str(first["msg"]))
    if any(e["type"] == "missing" for e in errors):
        missing = [".".join(str(p) for p in e["loc"]) for e in errors if e["type"] == "missing"]
        return Malformed("missing_field", f"missing {', '.join(missing)}")
    return Malformed("wrong_type", f"{where}: {first['msg']} ({len(errors)} error(s))")
