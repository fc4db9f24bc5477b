"""The producer's configuration: one frozen object, read once at the entry point.

Every field is an environment variable (its ``validation_alias``: ``FLEET_SIZE``,
``SIM_RATE_HZ``, ...) and a command-line flag of ``python -m producer`` (``--fleet-size``,
with the short aliases ``--vehicles``, ``--rate-hz``, ``--seed``, ``--roads``).
New fields follow the same pattern: ``name: type = setting(default, "ENV_NAME", "meaning",
ge=..., le=...)``, or ``between(...)`` for a bound whose message says more.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationInfo, field_validator

from common.contract import (
    MAX_FLEET_SIZE,
    MAX_PRODUCER_ID_LEN,
    MAX_RATE_HZ,
    MAX_VEHICLE_ID_LEN,
    MIN_RATE_HZ,
    is_printable_id,
)
from common.settings import (
    ServiceSettings,
    between,
    env_name,
    kafka_topics,
    locations,
    not_blank,
    setting,
)

VEHICLE_ID_MAX_LEN = MAX_VEHICLE_ID_LEN - 16
"""``VEHICLE_ID`` leaves room on the wire for the fleet number appended to it."""


class Settings(ServiceSettings):
    """Producer settings; each field is the env var of its ``validation_alias``."""

    kafka_bootstrap_servers: str = setting(
        "localhost:9092", "KAFKA_BOOTSTRAP_SERVERS", "Kafka bootstrap servers, comma separated")
    kafka_topic: str = setting("vehicle.telemetry.raw", "KAFKA_TOPIC", "telemetry topic")
    kafka_control_topic: str = setting(
        "fleetstream.control", "KAFKA_CONTROL_TOPIC", "topic the producer reads commands from")
    kafka_status_topic: str = setting(
        "fleetstream.status", "KAFKA_STATUS_TOPIC", "topic the producer publishes its status to")
    kafka_network_topic: str = setting(
        "fleetstream.network", "KAFKA_NETWORK_TOPIC",
        "compacted topic the producer publishes its road network to (GeoJSON) at start")
    kafka_partitions: int = setting(
        6, "KAFKA_PARTITIONS", "partitions of the telemetry topic when the producer creates it",
        ge=1)
    kafka_linger_ms: int = setting(
        5, "KAFKA_LINGER_MS", "how long a batch may wait for more records (ms)")
    kafka_batch_bytes: int = setting(
        256 * 1024, "KAFKA_BATCH_BYTES", "maximum size of one record batch (bytes)")
    kafka_max_in_flight_events: int = setting(
        100_000, "KAFKA_MAX_IN_FLIGHT_EVENTS", "bound on events sent but not yet acknowledged",
        ge=1)
    vehicle_id: str = setting(
        "TESTCAR01", "VEHICLE_ID", "id of the first (or only) vehicle; others count up")
    fleet_size: int = setting(1, "FLEET_SIZE", "number of simulated vehicles")
    sim_rate_hz: float = setting(1.0, "SIM_RATE_HZ", "events per second per vehicle")
    sim_seed: int | None = setting(
        None, "SIM_SEED", "random seed (unset: a fresh seed each start, logged)")
    sim_autostart: bool = setting(
        False, "SIM_AUTOSTART", "start publishing at once, without a start command")
    sim_sport_mode: bool = setting(False, "SIM_SPORT_MODE", "sport mode: higher shift points")
    sim_roads_file: Path | None = setting(
        None, "SIM_ROADS_FILE", "GeoJSON of roads to drive on (default: built-in Warsaw)")
    sim_max_lag_s: float = setting(
        30.0, "SIM_MAX_LAG_S", "lag after which the schedule skips ahead instead of bursting",
        gt=0)
    sim_trips: bool = setting(
        True, "SIM_TRIPS",
        "cars drive trips and park between them (false: all drive all the time)")
    sim_fleet_mix: str = setting(
        "0.8,0.15,0.05", "SIM_FLEET_MIX", "shares of cars, vans and trucks, comma separated")
    sim_repair_s: float = setting(
        86_400.0, "SIM_REPAIR_S",
        "a fault code stays until the car's depot visit or this many seconds", gt=0)
    sim_phase_jitter: bool = setting(
        True, "SIM_PHASE_JITTER",
        "each car reports at its own fixed phase within the tick (deterministic per seed)")
    sim_heartbeat_s: float = setting(
        60.0, "SIM_HEARTBEAT_S", "a parked car (ignition off) reports once per this many seconds",
        gt=0, le=3600)
    speed_tolerance_kmh: float = setting(
        5.0, "SPEED_TOLERANCE_KMH", "speeding = speed above limit plus this tolerance")
    redline_rpm: int = setting(6200, "REDLINE_RPM", "rpm_over_redline above this rpm")
    producer_id: str | None = setting(
        None, "PRODUCER_ID", "id on the status topic (default: vehicle id + pid)")
    producer_group: str | None = setting(
        None, "PRODUCER_GROUP",
        "Kafka consumer group of the producer instances that share one fleet, each driving "
        "the cars of its shards (unset: this producer alone drives the whole fleet)")
    kafka_shards_topic: str = setting(
        "fleetstream.shards", "KAFKA_SHARDS_TOPIC",
        "topic whose partitions are the fleet's shards (group membership only, never written)")
    producer_session_timeout_s: float = setting(
        10.0, "PRODUCER_SESSION_TIMEOUT_S",
        "with PRODUCER_GROUP: a silent instance's shards go to the others after this (s)",
        ge=1, le=300)
    status_interval_s: float = setting(
        1.0, "STATUS_INTERVAL_S", "period of status messages (s)", gt=0)
    api_token: str | None = setting(
        None, "FLEETSTREAM_API_TOKEN",
        "when set, control commands must be signed with it (the web API does)")

    _fleet = between("fleet_size", "FLEET_SIZE", 1, MAX_FLEET_SIZE)
    _rate = between("sim_rate_hz", "SIM_RATE_HZ", MIN_RATE_HZ, MAX_RATE_HZ)  # NaN, inf fail too
    _linger = between("kafka_linger_ms", "KAFKA_LINGER_MS", 0, 10_000)
    _batch = between("kafka_batch_bytes", "KAFKA_BATCH_BYTES", 1024, 16 * 1024 * 1024)
    _tol = between("speed_tolerance_kmh", "SPEED_TOLERANCE_KMH", 0, 100)
    _redline = between("redline_rpm", "REDLINE_RPM", 2000, 12000)
    _servers = not_blank("kafka_bootstrap_servers")
    _topics = kafka_topics("kafka_topic", "kafka_control_topic", "kafka_status_topic",
                           "kafka_network_topic", "kafka_shards_topic")
    _roads = locations("sim_roads_file")

    @field_validator("api_token", "producer_group", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("producer_id", "producer_group")
    @classmethod
    def _names_on_the_status_topic(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not (0 < len(value) <= MAX_PRODUCER_ID_LEN
                                      and is_printable_id(value)):
            raise ValueError(f"{env_name(cls, str(info.field_name))} must be 1 to "
                             f"{MAX_PRODUCER_ID_LEN} printable characters (it names this "
                             f"producer on the status topic), got {value[:80]!r}")
        return value

    @field_validator("sim_fleet_mix")
    @classmethod
    def _mix(cls, v: str) -> str:
        fleet_mix(v)
        return v

    @field_validator("vehicle_id")
    @classmethod
    def _vid(cls, v: str) -> str:
        if not v or len(v) > VEHICLE_ID_MAX_LEN or not v.isprintable():
            raise ValueError(f"VEHICLE_ID must be 1..{VEHICLE_ID_MAX_LEN} printable characters, "
                             f"got {v!r}")
        return v


def fleet_mix(text: str) -> tuple[float, float, float]:
    """``SIM_FLEET_MIX`` ("0.8,0.15,0.05": cars, vans, trucks) -> shares summing to 1."""
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(0 <= x < float("inf") for x in parts) or sum(parts) <= 0:
        raise ValueError(f"SIM_FLEET_MIX must be three shares >= 0 (cars, vans, trucks) with a "
                         f"positive sum, e.g. 0.8,0.15,0.05; got {text!r}")
    total = sum(parts)
    return parts[0] / total, parts[1] / total, parts[2] / total
