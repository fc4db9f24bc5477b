"""The public contract: the telemetry event and the control-channel messages.

This module is the one place the event is defined. The web API, the Streamlit app and the
Spark job import it (or a schema derived from it); tests fail if any derived schema drifts.
It imports nothing from the rest of the project, so any consumer may depend on it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import unicodedata
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_serializer,
)
from pydantic_core import PydanticCustomError, SchemaValidator, core_schema

SCHEMA_VERSION = 1
"""Bumped only for a breaking change; additive fields keep the version."""

# --- limits: every validator, OpenAPI document, UI input and test reads them from here ---
MIN_RATE_HZ = 0.01
"""Slowest per-vehicle event rate (one event per 100 s)."""
MAX_RATE_HZ = 50.0
"""Fastest per-vehicle event rate."""
MAX_FLEET_SIZE = 100_000
"""Largest fleet one producer simulates."""
MAX_VEHICLE_ID_LEN = 64
"""Longest vehicle id on the wire (``VEHICLE_ID`` itself is capped lower, leaving room for a
fleet number)."""
MAX_SEQ = 2**53 - 1
"""Largest ``seq`` (the largest integer a JavaScript number holds exactly)."""
MAX_ODOMETER_KM = 10_000_000.0
"""Largest ``odometer_km`` (25 times the distance to the Moon)."""
MAX_FAULT_CODES = 32
"""Most fault codes in one event."""
MAX_FAULT_CODE_LEN = 16
"""Longest fault code (OBD-II DTCs are five characters)."""
MAX_TRIP_ID_LEN = 64
"""Longest ``trip_id`` (the producer's are 36-character UUIDs)."""
MAX_CLOCK_SKEW_S = 300.0
"""How far ahead of the reader's clock (or of its Kafka record's time) an event may be
stamped: clock skew. Later, it is in the future (a stray year-9999 event), and every reader
sets it aside: the web API (WEBAPI_MAX_EVENT_FUTURE_S), the Spark jobs
(ANALYTICS_MAX_EVENT_FUTURE_S) and the producer taking over a shard's cars."""

_UNPRINTABLE = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
"""Unicode categories refused in ids: controls (NUL, ANSI escapes), format characters (bidi
and RTL overrides, zero-width), surrogates, private-use and unassigned code points, line and
paragraph separators."""


def is_printable_id(value: str) -> bool:
    """True if ``value`` holds no control, format (bidi/RTL override), surrogate, private-use,
    unassigned or line-separator character. Plain spaces are allowed."""
    if value.isascii():  # the usual id: in ASCII only controls (Cc) are unprintable
        return value.isprintable()
    return all(unicodedata.category(c) not in _UNPRINTABLE for c in value)


def printable_id(value: str) -> str:
    """A validator (``Annotated[str, AfterValidator(printable_id)]``) refusing what
    :func:`is_printable_id` refuses, with the error type ``unprintable``."""
    if not is_printable_id(value):
        bad = next(c for c in value if unicodedata.category(c) in _UNPRINTABLE)
        raise PydanticCustomError("unprintable", "must be printable, found {char}",
                                  {"char": f"U+{ord(bad):04X}"})
    return value


PrintableId = Annotated[str, AfterValidator(printable_id)]
"""A string of printable characters only (see :func:`printable_id`)."""

RoadType = Literal["urban", "rural", "highway"]
VehicleType = Literal["car", "van", "truck"]


def format_timestamp(ts: datetime) -> str:
    """ISO 8601 with microseconds and an explicit UTC offset.

    e.g. ``2026-01-01T08:00:00.000000+00:00``.
    """
    return ts.isoformat(timespec="microseconds")


_ISO_DATE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ]")
_DATETIME = SchemaValidator(core_schema.datetime_schema(tz_constraint="aware"))


def iso_8601(value: object, handler: ValidatorFunctionWrapHandler) -> datetime:
    """A validator (``WrapValidator``) reading a string only as an ISO 8601 date and time:
    pydantic would also read a string of digits (``"1767254400"``) as seconds since the
    epoch, which the contract does not document and the Spark jobs refuse (error type
    ``iso_8601``). Other spellings are pydantic's own reading; any other value is left to
    the field (a datetime passes, a number is refused in strict mode)."""
    if not isinstance(value, str):
        return handler(value)
    if not _ISO_DATE_TIME.match(value):
        raise PydanticCustomError("iso_8601", "must be an ISO 8601 date and time with a UTC "
                                  "offset, e.g. 2026-01-01T08:00:00+00:00")
    # the field would get a Python string, which strict mode refuses for a datetime: the
    # string is read here, by the same parser that reads a JSON string (0.2 us)
    return _DATETIME.validate_python(value)


EventTime = Annotated[AwareDatetime, WrapValidator(iso_8601)]
"""An event's time: ISO 8601 with an explicit UTC offset (see :func:`iso_8601`)."""


class Location(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    lat: float = Field(ge=-90, le=90, description="WGS84 latitude, degrees, 6 decimals")
    lon: float = Field(ge=-180, le=180, description="WGS84 longitude, degrees, 6 decimals")


class TelemetryEvent(BaseModel):
    """One step of one vehicle, as published to the telemetry topic (key = vehicle_id).

    The first twelve fields are the original FleetStream event; their names and meaning are
    frozen. The rest are additive extensions.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    vehicle_id: PrintableId = Field(min_length=1, max_length=MAX_VEHICLE_ID_LEN,
                                    description="e.g. TESTCAR01")
    timestamp: EventTime = Field(description="ISO 8601 with UTC offset, microseconds")
    location: Location
    speed_kmh: float = Field(ge=0, le=400)
    engine_rpm: int = Field(ge=0, le=12000)
    gear: int = Field(ge=0, le=6, description="1..6 while moving; 0 = neutral when stopped")
    fuel_level_pct: float = Field(ge=0, le=100)
    fault_codes: list[Annotated[PrintableId, Field(max_length=MAX_FAULT_CODE_LEN)]] = Field(
        default_factory=list, max_length=MAX_FAULT_CODES, description="OBD-II DTCs, e.g. P0300")
    road_type: RoadType
    speed_limit_kmh: int = Field(ge=0, le=400)
    speeding: bool = Field(description="speed_kmh > speed_limit_kmh + SPEED_TOLERANCE_KMH")
    rpm_over_redline: bool = Field(description="engine_rpm > REDLINE_RPM")
    # --- additive extensions (schema version 1) ---
    seq: int = Field(default=0, ge=0, le=MAX_SEQ,
                     description="per-vehicle sequence number, from 0, +1 per event")
    heading_deg: float = Field(default=0.0, ge=0, lt=360, description="0 = north, clockwise")
    odometer_km: float = Field(default=0.0, ge=0, le=MAX_ODOMETER_KM)
    trip_id: PrintableId = Field(default="", max_length=MAX_TRIP_ID_LEN,
                                 description="identifies one trip of one vehicle")
    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    ignition: bool = Field(default=True, description="false: parked, engine off (a heartbeat)")
    vehicle_type: VehicleType = Field(default="car", description="car, van or truck")

    @field_serializer("timestamp")
    def _ser_ts(self, ts: datetime) -> str:
        return format_timestamp(ts)


def read_event(value: bytes | str) -> TelemetryEvent:
    """One telemetry record as every reader of the topic reads it (the web API, replay, a
    producer taking a shard over): strict JSON, so ``"12.5"`` is not a speed, ``"false"`` not
    a boolean and a number not a timestamp. Raises pydantic's ``ValidationError``."""
    return TelemetryEvent.model_validate_json(value, strict=True)


EVENT_FIELDS: tuple[str, ...] = tuple(TelemetryEvent.model_fields)
"""Top-level field names, in contract order."""

CSV_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "vehicle_id",
    "lat",
    "lon",
    "speed_kmh",
    "engine_rpm",
    "gear",
    "fuel_level_pct",
    "road_type",
    "speed_limit_kmh",
    "speeding",
    "rpm_over_redline",
)
"""The original export.csv columns, in order (booleans as 1/0). Tested against the model."""


# --------------------------------------------------------------------------------------
# Control channel: the web API sends commands to the control topic, producers answer on
# the status topic. Every producer instance reads every command (no consumer group).
# --------------------------------------------------------------------------------------

CommandName = Literal["start", "stop", "configure", "status"]


class ControlCommand(BaseModel):
    """A command on the control topic (env KAFKA_CONTROL_TOPIC)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: str = Field(min_length=1, max_length=64)
    command: CommandName
    rate_hz: float | None = Field(default=None, ge=MIN_RATE_HZ, le=MAX_RATE_HZ, allow_inf_nan=False)
    fleet_size: int | None = Field(default=None, ge=1, le=MAX_FLEET_SIZE)
    issued_at: float | None = Field(default=None, allow_inf_nan=False,
                                    description="unix seconds when signed (see sign_command)")
    signature: str | None = Field(default=None, max_length=128,
                                  description="hex HMAC-SHA256(token, signing_payload(cmd))")


COMMAND_MAX_AGE_S = 30.0
"""A signed command older (or further in the future) than this is refused as stale."""


def signing_payload(msg: ControlCommand | ProducerStatus) -> bytes:
    """The canonical JSON a signature covers: every field but ``signature`` (as the JSON
    the message is sent as), sorted keys."""
    doc = msg.model_dump(mode="json", exclude={"signature"})
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _mac(token: str, msg: ControlCommand | ProducerStatus) -> str:
    return hmac.new(token.encode(), signing_payload(msg), hashlib.sha256).hexdigest()


def _signed_by(msg: ControlCommand | ProducerStatus, token: str) -> bool:
    return msg.signature is not None and hmac.compare_digest(
        msg.signature.encode(), _mac(token, msg).encode())


def sign_command(cmd: ControlCommand, token: str, now: float) -> ControlCommand:
    """``cmd`` stamped ``issued_at=now`` and signed with ``token`` (FLEETSTREAM_API_TOKEN)."""
    stamped = cmd.model_copy(update={"issued_at": float(now), "signature": None})
    return stamped.model_copy(update={"signature": _mac(token, stamped)})


def verify_command(cmd: ControlCommand, token: str, now: float,
                   max_age_s: float = COMMAND_MAX_AGE_S) -> str | None:
    """None if ``cmd`` is signed with ``token`` and fresh; else why not (for the log)."""
    if cmd.signature is None or cmd.issued_at is None:
        return "unsigned"
    if not _signed_by(cmd, token):
        return "bad signature"
    if abs(now - cmd.issued_at) > max_age_s:
        return f"stale (issued {now - cmd.issued_at:+.0f} s ago)"
    return None


MAX_PRODUCER_ID_LEN = 128
"""Longest producer id (``PRODUCER_ID``, default ``producer-<host>-<pid>``) and group name
(``PRODUCER_GROUP``) on the status topic."""
MAX_SHARDS = 10_000
"""Most shards (telemetry partitions) one producer status may list."""
MAX_STATUS_TEXT_LEN = 1024
"""Longest ``message`` of a producer status (the producer cuts its own to this)."""


def _rate_or_zero(value: float) -> float:
    if value != 0 and not MIN_RATE_HZ <= value <= MAX_RATE_HZ:
        raise PydanticCustomError(
            "rate_range", "must be 0 or between {lo} and {hi}",
            {"lo": MIN_RATE_HZ, "hi": MAX_RATE_HZ})
    return value


class ProducerStatus(BaseModel):
    """A producer's state on the status topic (env KAFKA_STATUS_TOPIC).

    Published every second and right after each command; `reply_to` names the command a
    status answers, with `ok`/`error` saying whether it was applied (error codes:
    `already_running`, `not_running`, `invalid`, `unauthorized`). Every field is bounded
    (:func:`read_status` reads one strictly). With FLEETSTREAM_API_TOKEN set the producer
    signs it (`signature`, see :func:`sign_status`); readers holding the token trust only
    signed statuses. The signature covers the fields this model defines: a field added
    later is covered only once every reader knows it.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    producer_id: PrintableId = Field(min_length=1, max_length=MAX_PRODUCER_ID_LEN)
    updated_at: EventTime
    running: bool
    rate_hz: Annotated[float, AfterValidator(_rate_or_zero)] = Field(
        description=f"per-vehicle events/s: {MIN_RATE_HZ} to {MAX_RATE_HZ} (0: not set)")
    vehicles: int = Field(ge=0, le=MAX_FLEET_SIZE)
    events_sent: int = Field(default=0, ge=0, le=MAX_SEQ)
    send_errors: int = Field(default=0, ge=0, le=MAX_SEQ)
    lag_s: float = Field(default=0.0, ge=0, description="how far publishing is behind schedule")
    behind_schedule: bool = False
    last_event: TelemetryEvent | None = None
    reply_to: str | None = Field(default=None, min_length=1, max_length=64)
    ok: bool = True
    error: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, max_length=MAX_STATUS_TEXT_LEN)
    # --- one fleet, many producer instances (PRODUCER_GROUP); additive ---
    fleet_size: int | None = Field(default=None, ge=1, le=MAX_FLEET_SIZE,
                                   description="cars in the whole fleet")
    group: PrintableId | None = Field(default=None, min_length=1, max_length=MAX_PRODUCER_ID_LEN,
                                      description="the instances' group (PRODUCER_GROUP)")
    shards: list[Annotated[int, Field(ge=0, lt=MAX_SHARDS)]] | None = Field(
        default=None, max_length=MAX_SHARDS,
        description="the shards (telemetry partitions) this instance drives; "
        "`vehicles` counts their cars")
    # --- additive: with FLEETSTREAM_API_TOKEN set ---
    signature: str | None = Field(default=None, max_length=128,
                                  description="hex HMAC-SHA256(token, signing_payload(status))")

    @field_serializer("updated_at")
    def _ser_ts(self, ts: datetime) -> str:
        return format_timestamp(ts)


def read_status(value: bytes | str) -> ProducerStatus:
    """One record of the status topic as every reader reads it: strict JSON (``"12"`` is not
    a count, ``"true"`` not a boolean), every field within its bounds. Raises pydantic's
    ``ValidationError``."""
    return ProducerStatus.model_validate_json(value, strict=True)


def sign_status(status: ProducerStatus, token: str) -> ProducerStatus:
    """``status`` signed with ``token`` (FLEETSTREAM_API_TOKEN)."""
    unsigned = status.model_copy(update={"signature": None})
    return unsigned.model_copy(update={"signature": _mac(token, unsigned)})


def status_signed(status: ProducerStatus, token: str) -> bool:
    """True if ``status`` carries a valid signature made with ``token``."""
    return _signed_by(status, token)


def status_in_future(status: ProducerStatus, now: datetime) -> bool:
    """True if ``status`` is stamped more than MAX_CLOCK_SKEW_S after ``now``: every reader
    sets it aside (a stray year-9999 status would otherwise look fresh forever)."""
    return (status.updated_at - now).total_seconds() > MAX_CLOCK_SKEW_S


__all__ = [
    "COMMAND_MAX_AGE_S", "sign_command", "signing_payload", "verify_command",
    "CSV_COLUMNS", "EVENT_FIELDS", "MAX_FAULT_CODES", "MAX_FAULT_CODE_LEN", "MAX_FLEET_SIZE",
    "MAX_ODOMETER_KM", "MAX_RATE_HZ", "MAX_SEQ", "MAX_TRIP_ID_LEN", "MAX_VEHICLE_ID_LEN",
    "MIN_RATE_HZ", "SCHEMA_VERSION", "CommandName", "ControlCommand", "Location", "PrintableId",
    "EventTime", "is_printable_id", "iso_8601", "printable_id", "read_event",
    "ProducerStatus", "read_status", "sign_status", "status_signed", "status_in_future",
    "MAX_PRODUCER_ID_LEN", "MAX_SHARDS", "MAX_STATUS_TEXT_LEN", "RoadType", "VehicleType",
    "TelemetryEvent", "format_timestamp",
]
