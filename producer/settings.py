"""The producer's configuration: one frozen object, read once at the entry point.

Every field is an environment variable of the same name in upper case (``FLEET_SIZE``,
``SIM_RATE_HZ``, ...) and a command-line flag of ``python -m producer`` (``--fleet-size``,
with the short aliases ``--vehicles``, ``--rate-hz``, ``--seed``, ``--roads``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.settings import between


class Settings(BaseSettings):
    """Producer settings (env var = field name in upper case)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", case_sensitive=False)

    kafka_bootstrap_servers: str = Field(
        default="localhost:9092", description="Kafka bootstrap servers, comma separated")
    kafka_topic: str = Field(default="vehicle.telemetry.raw", description="telemetry topic")
    kafka_control_topic: str = Field(
        default="fleetstream.control", description="topic the producer reads commands from")
    kafka_status_topic: str = Field(
        default="fleetstream.status", description="topic the producer publishes its status to")
    kafka_partitions: int = Field(
        default=6, description="partitions of the telemetry topic when the producer creates it")
    kafka_linger_ms: int = Field(
        default=5, description="how long a batch may wait for more records (ms)")
    kafka_batch_bytes: int = Field(
        default=256 * 1024, description="maximum size of one record batch (bytes)")
    kafka_max_in_flight_events: int = Field(
        default=100_000, description="bound on events sent but not yet acknowledged")
    vehicle_id: str = Field(
        default="TESTCAR01", description="id of the first (or only) vehicle; others count up")
    fleet_size: int = Field(default=1, description="number of simulated vehicles")
    sim_rate_hz: float = Field(default=1.0, description="events per second per vehicle")
    sim_seed: int | None = Field(
        default=None, description="random seed (unset: a fresh seed each start, logged)")
    sim_autostart: bool = Field(
        default=False, description="start publishing at once, without a start command")
    sim_sport_mode: bool = Field(default=False, description="sport mode: higher shift points")
    sim_roads_file: Path | None = Field(
        default=None, description="GeoJSON of roads to drive on (default: built-in Warsaw)")
    sim_max_lag_s: float = Field(
        default=30.0, description="lag after which the schedule skips ahead instead of bursting")
    speed_tolerance_kmh: float = Field(
        default=5.0, description="speeding = speed above limit plus this tolerance")
    redline_rpm: int = Field(default=6200, description="rpm_over_redline above this rpm")
    producer_id: str | None = Field(
        default=None, description="id on the status topic (default: vehicle id + pid)")
    status_interval_s: float = Field(default=1.0, description="period of status messages (s)")

    _fleet = between("fleet_size", "FLEET_SIZE", 1, 100_000)

    @field_validator("sim_rate_hz")
    @classmethod
    def _rate(cls, v: float) -> float:
        if not 0 < v <= 50:
            raise ValueError(f"SIM_RATE_HZ must be > 0 and <= 50 events/s per vehicle, got {v}")
        return v

    @field_validator("kafka_partitions")
    @classmethod
    def _partitions(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"KAFKA_PARTITIONS must be >= 1, got {v}")
        return v

    _linger = between("kafka_linger_ms", "KAFKA_LINGER_MS", 0, 10_000)

    @field_validator("kafka_batch_bytes")
    @classmethod
    def _batch(cls, v: int) -> int:
        if not 1024 <= v <= 16 * 1024 * 1024:
            raise ValueError(f"KAFKA_BATCH_BYTES must be between 1024 and 16 MiB, got {v}")
        return v

    @field_validator("kafka_max_in_flight_events")
    @classmethod
    def _inflight(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"KAFKA_MAX_IN_FLIGHT_EVENTS must be >= 1, got {v}")
        return v

    @field_validator("vehicle_id")
    @classmethod
    def _vid(cls, v: str) -> str:
        if not v or len(v) > 48 or not v.isprintable():
            raise ValueError(f"VEHICLE_ID must be 1..48 printable characters, got {v!r}")
        return v

    _tol = between("speed_tolerance_kmh", "SPEED_TOLERANCE_KMH", 0, 100)

    _redline = between("redline_rpm", "REDLINE_RPM", 2000, 12000)

    @field_validator("sim_max_lag_s", "status_interval_s")
    @classmethod
    def _positive(cls, v: float, info: object) -> float:
        if v <= 0:
            name = getattr(info, "field_name", "value") or "value"
            raise ValueError(f"{name.upper()} must be > 0, got {v}")
        return v
