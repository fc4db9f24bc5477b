"""The derived-event contract: what the events job publishes, and what it reads as data.

Topic ``fleetstream.events`` (key = vehicle id, value = one JSON object): every record is one
of :data:`FleetEvent` (``trip_started``, ``trip_ended``, ``geofence_entered``,
``geofence_exited``, ``alert``), told apart by ``kind``, with a common envelope:

| field | meaning |
|---|---|
| event_id | deterministic UUID (:func:`derived_event_id`); the topic is at-least-once, |
|          | so a consumer deduplicates by it |
| kind | which of the five models |
| vehicle_id | the vehicle |
| time | when it happened, in event time (the telemetry timestamps), ISO 8601 with offset |
| location | where ({lat, lon}) |
| trip_id | the trip it happened in ("" outside a trip) |
| source_seq | ``seq`` of the telemetry event that triggered it (``silent``: the last heard) |
| schema_version | :data:`EVENTS_SCHEMA_VERSION` |

Topics ``fleetstream.geofences`` and ``fleetstream.alert-rules`` are compacted: key = the
definition's id (UTF-8), value = :class:`Geofence` / :data:`AlertRule` JSON, a tombstone
(null value) deletes it. While the rules topic holds no valid rule,
:data:`DEFAULT_ALERT_RULES` apply; once it holds any, only its enabled rules do (so writing
one disabled rule turns the defaults off). Like common.contract, this module imports nothing
else of the project but the contract and common.polygons, so any consumer may depend on it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from common.contract import (
    MAX_FAULT_CODE_LEN,
    MAX_SEQ,
    MAX_TRIP_ID_LEN,
    MAX_VEHICLE_ID_LEN,
    Location,
    PrintableId,
    format_timestamp,
)
from common.polygons import polygon_problem

EVENTS_SCHEMA_VERSION = 1
EVENTS_TOPIC = "fleetstream.events"
GEOFENCES_TOPIC = "fleetstream.geofences"
ALERT_RULES_TOPIC = "fleetstream.alert-rules"

MAX_GEOFENCE_VERTICES = 1000
"""Default cap on a geofence's vertices (all rings together); validation may be given a
lower one (``Geofence.model_validate(doc, context={"max_vertices": n})``)."""
MAX_DEFINITION_ID_LEN = 64
"""Longest geofence or rule id (it is the compacted topic's key)."""
MAX_NAME_LEN = 128
MAX_RULE_DURATION_S = 86_400.0
"""Longest duration a rule may wait for (a day)."""
MIN_SILENT_S = 1.0
"""Shortest silence a ``silent`` rule may wait for: the events job's micro-batch (1 s). A
shorter one (1e-300 was accepted) fired between any two events of every car: an alert per
car per batch."""
MAX_GEOFENCES = 1000
"""Geofences in effect at most: every reader of the geofences topic (the web API's view, the
events job) keeps the MAX_GEOFENCES valid ones with the smallest ids and counts the rest as
over the cap (:func:`within_cap`); WEBAPI_MAX_GEOFENCES (POST) cannot exceed it."""
MAX_ALERT_RULES = 200
"""Alert rules in effect at most, chosen like :data:`MAX_GEOFENCES`' (WEBAPI_MAX_ALERT_RULES
cannot exceed it): each rule costs state per vehicle in the events job."""
MAX_DEFINITION_BYTES = 64 * MAX_GEOFENCE_VERTICES + 4096
"""Largest record value of the geofences and alert-rules topics a reader parses (room for
MAX_GEOFENCE_VERTICES positions written out, like the web API's largest POST body)."""
FUEL_LOW_REARM_PCT = 5.0
"""A fuel_low alert re-arms once the level is this far above the threshold again (refuelled)."""

EVENT_ID_NAMESPACE = uuid.UUID("0f7c1e52-5b1e-4a8e-9d7a-6a1f1e7e0b12")
"""The uuid5 namespace of :func:`derived_event_id` (fixed forever: ids must not change)."""

DefinitionId = Annotated[PrintableId, Field(min_length=1, max_length=MAX_DEFINITION_ID_LEN,
                                            pattern=r"^\S(.*\S)?$")]
Name = Annotated[PrintableId, Field(min_length=1, max_length=MAX_NAME_LEN)]
Count = Annotated[int, Field(ge=0, le=MAX_SEQ)]
"""A counter of a derived event: bounded like the telemetry's seq (JSON writers such as
orjson cannot write an integer beyond 64 bits; JavaScript's numbers are exact to 2**53)."""
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
"""A UUID written canonically: lower-case hex, 8-4-4-4-12 (what ``str(uuid.UUID)`` gives)."""


def derived_event_id(kind: str, vehicle_id: str, *parts: object) -> str:
    """uuid5 of the kind, the vehicle and what makes the event unique (a trip id, a rule or
    geofence id, the triggering event's timestamp and seq): a rerun over the same telemetry,
    or a restart from the checkpoint, gives the same id."""
    name = "\x1f".join([kind, vehicle_id, *(str(p) for p in parts)])
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, name))


# ---- derived events -----------------------------------------------------------------------

class _Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: str  # each model narrows it to its Literal (kept second in the JSON)
    event_id: str = Field(min_length=36, max_length=36, pattern=UUID_PATTERN,
                          description="deterministic UUID (uuid5), lower-case canonical form")
    vehicle_id: PrintableId = Field(min_length=1, max_length=MAX_VEHICLE_ID_LEN)
    time: AwareDatetime = Field(description="when it happened (event time)")
    location: Location
    trip_id: PrintableId = Field(default="", max_length=MAX_TRIP_ID_LEN)
    source_seq: int = Field(ge=0, le=MAX_SEQ,
                            description="seq of the telemetry event that triggered it")
    schema_version: int = Field(default=EVENTS_SCHEMA_VERSION, ge=1, le=EVENTS_SCHEMA_VERSION)

    @field_serializer("time", check_fields=False)
    def _ser_time(self, ts: datetime) -> str:
        return format_timestamp(ts)


class TripStarted(_Envelope):
    """A trip began: the ignition went on, or the car started moving."""

    kind: Literal["trip_started"] = "trip_started"
    odometer_km: float = Field(ge=0)
    fuel_level_pct: float = Field(ge=0, le=100)


class Violations(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    speeding: Count = Field(description="speeding episodes (runs of speeding events)")
    speeding_s: float = Field(ge=0, description="time spent speeding")
    over_redline: Count = Field(description="over-redline episodes")
    alerts: Count = Field(description="alerts raised during the trip")


class TripSummary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    started_at: AwareDatetime
    ended_at: AwareDatetime
    end_reason: Literal["parked", "stopped", "new_trip"] = Field(
        description="parked: ignition off; stopped: stood still ANALYTICS_TRIP_END_STOP_S "
                    "(the trip ends when it stopped); new_trip: the telemetry's trip_id changed")
    duration_s: float = Field(ge=0)
    moving_s: float = Field(ge=0, description="time between events while moving")
    idle_s: float = Field(ge=0, description="time standing with the ignition on")
    distance_km: float = Field(ge=0, description="odometer delta (haversine without odometer)")
    max_speed_kmh: float = Field(ge=0)
    avg_speed_kmh: float = Field(ge=0, description="distance_km / moving time")
    stops: Count = Field(description="times the car stood still and drove on")
    fuel_used_pct: float = Field(ge=0, description="sum of the fuel level's drops")
    violations: Violations
    start_location: Location
    end_location: Location
    samples: int = Field(ge=1, le=MAX_SEQ, description="telemetry events in the trip")

    @field_serializer("started_at", "ended_at")
    def _ser_ts(self, ts: datetime) -> str:
        return format_timestamp(ts)


class TripEnded(_Envelope):
    """A trip ended; ``time`` is its end (``summary.ended_at``)."""

    kind: Literal["trip_ended"] = "trip_ended"
    summary: TripSummary


class GeofenceEntered(_Envelope):
    kind: Literal["geofence_entered"] = "geofence_entered"
    geofence_id: DefinitionId
    geofence_name: Name


class GeofenceExited(_Envelope):
    kind: Literal["geofence_exited"] = "geofence_exited"
    geofence_id: DefinitionId
    geofence_name: Name
    entered_at: AwareDatetime
    dwell_s: float = Field(ge=0, description="time from entering to leaving")

    @field_serializer("entered_at")
    def _ser_entered(self, ts: datetime) -> str:
        return format_timestamp(ts)


RuleKind = Literal["speeding_sustained", "harsh_brake", "harsh_accel", "over_redline",
                   "fuel_low", "new_fault_code", "silent"]


class Alert(_Envelope):
    """A rule fired. One alert per episode: the condition must clear before it fires again."""

    kind: Literal["alert"] = "alert"
    rule_id: DefinitionId
    rule_kind: RuleKind
    message: str = Field(max_length=256)
    value: float | None = Field(default=None, description="what was measured (unit per rule)")
    threshold: float | None = Field(default=None, description="the rule's limit, same unit")
    fault_code: str | None = Field(default=None, max_length=MAX_FAULT_CODE_LEN,
                                   description="new_fault_code: the code")


FleetEvent = Annotated[TripStarted | TripEnded | GeofenceEntered | GeofenceExited | Alert,
                       Field(discriminator="kind")]
FLEET_EVENT: TypeAdapter[Any] = TypeAdapter(FleetEvent)
"""``FLEET_EVENT.validate_json(record.value)`` -> the model of its kind."""
EventKind = Literal["trip_started", "trip_ended", "geofence_entered", "geofence_exited", "alert"]
EVENT_KINDS: tuple[str, ...] = ("trip_started", "trip_ended", "geofence_entered",
                                "geofence_exited", "alert")


# ---- geofences ----------------------------------------------------------------------------

Position = tuple[float, float]
"""GeoJSON position: [longitude, latitude]."""


class Polygon(BaseModel):
    """A GeoJSON Polygon: an outer ring, then holes; each ring closed (first == last), at
    least four positions, [lon, lat] within range; and simple (common.polygons): each ring
    encloses an area, no ring crosses or touches itself or another, holes lie inside the
    outer ring and outside each other."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    type: Literal["Polygon"]
    coordinates: list[list[Position]] = Field(min_length=1)

    @field_validator("coordinates")
    @classmethod
    def _rings(cls, rings: list[list[Position]], info: ValidationInfo) -> list[list[Position]]:
        limit = int((info.context or {}).get("max_vertices", MAX_GEOFENCE_VERTICES))
        total = 0
        for i, ring in enumerate(rings):
            where = "outer ring" if i == 0 else f"hole {i}"
            if len(ring) < 4:
                raise ValueError(f"{where}: a ring needs at least 4 positions, got {len(ring)}")
            if ring[0] != ring[-1]:
                raise ValueError(f"{where}: ring is not closed (first position {list(ring[0])} "
                                 f"!= last {list(ring[-1])})")
            for lon, lat in ring:
                if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                    raise ValueError(f"{where}: position [{lon}, {lat}] out of range "
                                     "(longitude -180..180, latitude -90..90)")
            total += len(ring) - 1
        if total > limit:
            raise ValueError(f"too many vertices: {total} > {limit}")
        problem = polygon_problem(rings)
        if problem is not None:
            raise ValueError(problem)
        return rings


class Geofence(BaseModel):
    """A named area (value on ``fleetstream.geofences``, key = ``id``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: DefinitionId
    name: Name
    geometry: Polygon


# ---- alert rules --------------------------------------------------------------------------

class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    id: DefinitionId
    name: Name | None = None
    enabled: bool = True


class SpeedingSustainedRule(_Rule):
    """``speeding`` true on every event for at least ``duration_s``."""

    kind: Literal["speeding_sustained"] = "speeding_sustained"
    duration_s: float = Field(gt=0, le=MAX_RULE_DURATION_S)


class HarshBrakeRule(_Rule):
    """Deceleration between consecutive events of at least ``threshold_mps2``."""

    kind: Literal["harsh_brake"] = "harsh_brake"
    threshold_mps2: float = Field(gt=0, le=100)


class HarshAccelRule(_Rule):
    """Acceleration between consecutive events of at least ``threshold_mps2``."""

    kind: Literal["harsh_accel"] = "harsh_accel"
    threshold_mps2: float = Field(gt=0, le=100)


class OverRedlineRule(_Rule):
    """``rpm_over_redline`` true."""

    kind: Literal["over_redline"] = "over_redline"


class FuelLowRule(_Rule):
    """``fuel_level_pct`` below ``threshold_pct``; re-arms above threshold + FUEL_LOW_REARM_PCT."""

    kind: Literal["fuel_low"] = "fuel_low"
    threshold_pct: float = Field(gt=0, le=100)


class NewFaultCodeRule(_Rule):
    """A fault code that the vehicle's previous event did not have (one alert per code)."""

    kind: Literal["new_fault_code"] = "new_fault_code"


class SilentRule(_Rule):
    """No telemetry from the vehicle for ``duration_s`` of the job's (processing) clock."""

    kind: Literal["silent"] = "silent"
    duration_s: float = Field(ge=MIN_SILENT_S, le=MAX_RULE_DURATION_S)


AlertRule = Annotated[SpeedingSustainedRule | HarshBrakeRule | HarshAccelRule | OverRedlineRule
                      | FuelLowRule | NewFaultCodeRule | SilentRule, Field(discriminator="kind")]
ALERT_RULE: TypeAdapter[Any] = TypeAdapter(AlertRule)
"""``ALERT_RULE.validate_json(value)`` -> the rule model of its kind."""

DEFAULT_ALERT_RULES: tuple[Any, ...] = (
    SpeedingSustainedRule(id="default-speeding-30s", name="Speeding for 30 s", duration_s=30),
    HarshBrakeRule(id="default-harsh-brake", name="Harsh braking", threshold_mps2=4.0),
    HarshAccelRule(id="default-harsh-accel", name="Harsh acceleration", threshold_mps2=3.5),
    OverRedlineRule(id="default-over-redline", name="Over the redline"),
    FuelLowRule(id="default-fuel-low", name="Fuel below 10 %", threshold_pct=10),
    NewFaultCodeRule(id="default-new-fault-code", name="New fault code"),
    SilentRule(id="default-silent-5min", name="Silent for 5 minutes", duration_s=300),
)
"""The rules in effect while ``fleetstream.alert-rules`` holds none."""


# ---- reading the definitions topics -------------------------------------------------------

class DefinitionRejected(ValueError):
    """A record of the geofences or alert-rules topic that no reader takes; ``detail`` says
    why, without the record's content (at most a couple of hundred characters)."""


def error_summary(exc: ValidationError, limit: int = 200) -> str:
    """``loc: message`` of the first error, without the input, truncated to ``limit``."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if not errors:
        return str(exc)[:limit]
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "record"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    text = f"{where}: {first['msg']}"
    return text[:limit - len(more)] + more


def decode_definition(key: bytes | None, value: bytes,
                      parse: Callable[[bytes], Any]) -> Any:
    """The one rule for a record of ``fleetstream.geofences`` / ``fleetstream.alert-rules``,
    applied by every reader (the web API's view, the events job): the key is valid UTF-8;
    the value at most MAX_DEFINITION_BYTES and valid in pydantic's strict JSON mode (as a
    POST must be); the definition's id equals the key. ``parse`` is :func:`parse_geofence`
    or :func:`parse_rule`. Raises :class:`DefinitionRejected`."""
    if key is None:
        raise DefinitionRejected("record without a key")
    try:
        ident = key.decode("utf-8")
    except UnicodeDecodeError:
        raise DefinitionRejected(f"key {key[:40]!r} is not UTF-8") from None
    if len(value) > MAX_DEFINITION_BYTES:
        raise DefinitionRejected(f"{len(value)} bytes > {MAX_DEFINITION_BYTES}")
    try:
        model = parse(value)
    except ValidationError as exc:
        raise DefinitionRejected(error_summary(exc)) from None
    if model.id != ident:
        raise DefinitionRejected(f"its id {model.id[:80]!r} is not its key")
    return model


def parse_geofence(value: bytes) -> Geofence:
    return Geofence.model_validate_json(value, strict=True)


def parse_rule(value: bytes) -> Any:
    return ALERT_RULE.validate_json(value, strict=True)


T = TypeVar("T")


def within_cap(items: Mapping[str, T], cap: int) -> tuple[dict[str, T], int]:
    """The definitions in effect when a topic holds more than ``cap`` valid ones: those with
    the ``cap`` smallest ids (every reader picks the same ones, whatever order it read the
    partitions in); and how many were left out."""
    if len(items) <= cap:
        return dict(items), 0
    kept = sorted(items)[:cap]
    return {k: items[k] for k in kept}, len(items) - cap


@dataclass(frozen=True, slots=True)
class DefinitionKind:
    """What a reader needs to know of one definitions topic."""

    what: str  # "geofence", "alert rule": for messages
    parse: Callable[[bytes], Any]
    cap: int


GEOFENCE_DEFINITIONS = DefinitionKind("geofence", parse_geofence, MAX_GEOFENCES)
ALERT_RULE_DEFINITIONS = DefinitionKind("alert rule", parse_rule, MAX_ALERT_RULES)


__all__ = [
    "ALERT_RULES_TOPIC", "ALERT_RULE", "ALERT_RULE_DEFINITIONS", "DEFAULT_ALERT_RULES",
    "EVENTS_SCHEMA_VERSION", "GEOFENCE_DEFINITIONS", "MAX_ALERT_RULES",
    "MAX_DEFINITION_BYTES", "MAX_GEOFENCES", "UUID_PATTERN", "DefinitionKind",
    "DefinitionRejected", "decode_definition", "error_summary", "parse_geofence",
    "parse_rule", "within_cap",
    "EVENTS_TOPIC", "EVENT_ID_NAMESPACE", "EVENT_KINDS", "FLEET_EVENT", "FUEL_LOW_REARM_PCT",
    "GEOFENCES_TOPIC", "MAX_DEFINITION_ID_LEN", "MAX_GEOFENCE_VERTICES", "MAX_NAME_LEN",
    "MAX_RULE_DURATION_S", "Alert", "AlertRule", "EventKind", "FleetEvent", "FuelLowRule",
    "Geofence", "GeofenceEntered", "GeofenceExited", "HarshAccelRule", "HarshBrakeRule",
    "NewFaultCodeRule", "OverRedlineRule", "Polygon", "RuleKind", "SilentRule",
    "SpeedingSustainedRule", "TripEnded", "TripStarted", "TripSummary", "Violations",
    "derived_event_id",
]
