"""The public contract: the telemetry event and the control-channel messages.

This module is the one place the event is defined. The web API, the Streamlit app and the
Spark job import it (or a schema derived from it); tests fail if any derived schema drifts.
It imports nothing from the rest of the project, so any consumer may depend on it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer

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

RoadType = Literal["urban", "rural", "highway"]


def format_timestamp(ts: datetime) -> str:
    """ISO 8601 with microseconds and an explicit UTC offset.

    e.g. ``2026-01-01T08:00:00.000000+00:00``.
    """
    return ts.isoformat(timespec="microseconds")


class Location(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lat: float = Field(ge=-90, le=90, description="WGS84 latitude, degrees, 6 decimals")
    lon: float = Field(ge=-180, le=180, description="WGS84 longitude, degrees, 6 decimals")


class TelemetryEvent(BaseModel):
    """One step of one vehicle, as published to the telemetry topic (key = vehicle_id).

    The first twelve fields are the original FleetStream event; their names and meaning are
    frozen. The rest are additive extensions.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    vehicle_id: str = Field(min_length=1, max_length=MAX_VEHICLE_ID_LEN,
                            description="e.g. TESTCAR01")
    timestamp: AwareDatetime = Field(description="ISO 8601 with UTC offset, microseconds")
    location: Location
    speed_kmh: float = Field(ge=0, le=400)
    engine_rpm: int = Field(ge=0, le=12000)
    gear: int = Field(ge=0, le=6, description="1..6 while moving; 0 = neutral when stopped")
    fuel_level_pct: float = Field(ge=0, le=100)
    fault_codes: list[str] = Field(default_factory=list, description="OBD-II DTCs, e.g. P0300")
    road_type: RoadType
    speed_limit_kmh: int = Field(ge=0, le=400)
    speeding: bool = Field(description="speed_kmh > speed_limit_kmh + SPEED_TOLERANCE_KMH")
    rpm_over_redline: bool = Field(description="engine_rpm > REDLINE_RPM")
    # --- additive extensions (schema version 1) ---
    seq: int = Field(default=0, ge=0,
                     description="per-vehicle sequence number, from 0, +1 per event")
    heading_deg: float = Field(default=0.0, ge=0, lt=360, description="0 = north, clockwise")
    odometer_km: float = Field(default=0.0, ge=0)
    trip_id: str = Field(default="", description="identifies one run of one vehicle")
    schema_version: int = Field(default=SCHEMA_VERSION)

    @field_serializer("timestamp")
    def _ser_ts(self, ts: datetime) -> str:
        return format_timestamp(ts)


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


class ProducerStatus(BaseModel):
    """A producer's state on the status topic (env KAFKA_STATUS_TOPIC).

    Published every second and right after each command; `reply_to` names the command a
    status answers, with `ok`/`error` saying whether it was applied (error codes:
    `already_running`, `not_running`, `invalid`).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    producer_id: str
    updated_at: AwareDatetime
    running: bool
    rate_hz: float
    vehicles: int
    events_sent: int = 0
    send_errors: int = 0
    lag_s: float = Field(default=0.0, description="how far publishing is behind schedule")
    behind_schedule: bool = False
    last_event: TelemetryEvent | None = None
    reply_to: str | None = None
    ok: bool = True
    error: str | None = None
    message: str | None = None

    @field_serializer("updated_at")
    def _ser_ts(self, ts: datetime) -> str:
        return format_timestamp(ts)


__all__ = [
    "CSV_COLUMNS", "EVENT_FIELDS", "MAX_FLEET_SIZE", "MAX_RATE_HZ", "MAX_VEHICLE_ID_LEN",
    "MIN_RATE_HZ", "SCHEMA_VERSION", "CommandName", "ControlCommand", "Location",
    "ProducerStatus", "RoadType", "TelemetryEvent", "format_timestamp",
]
