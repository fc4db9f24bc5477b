"""The web API's configuration: one frozen object, read once at the entry point."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import field_validator
from pydantic_settings import NoDecode

from common.contract import MAX_CLOCK_SKEW_S
from common.fleet_events import (
    ALERT_RULES_TOPIC,
    EVENTS_TOPIC,
    GEOFENCES_TOPIC,
    MAX_ALERT_RULES,
    MAX_GEOFENCE_VERTICES,
    MAX_GEOFENCES,
)
from common.settings import ServiceSettings, env_names, kafka_topics, locations, not_blank
from common.settings import setting as _f

DEFAULT_TILE_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"


class Settings(ServiceSettings):
    """Each field is an env var (its ``validation_alias``) and a flag of ``python -m webapi``."""


    kafka_bootstrap_servers: str = _f("localhost:9092", "KAFKA_BOOTSTRAP_SERVERS",
                                      "Kafka bootstrap.servers")
    kafka_topic: str = _f("vehicle.telemetry.raw", "KAFKA_TOPIC", "telemetry topic to consume")
    kafka_control_topic: str = _f("fleetstream.control", "KAFKA_CONTROL_TOPIC",
                                  "topic the web API sends producer commands to")
    kafka_status_topic: str = _f("fleetstream.status", "KAFKA_STATUS_TOPIC",
                                 "topic producers publish their status on")
    kafka_network_topic: str = _f("fleetstream.network", "KAFKA_NETWORK_TOPIC",
                                  "compacted topic of the producer's road network (GET /network)")
    kafka_events_topic: str = _f(EVENTS_TOPIC, "KAFKA_EVENTS_TOPIC",
                                 "derived events: trips, geofence crossings, alerts (key = "
                                 "vehicle id); the web API serves them at /events, /trips")
    kafka_geofences_topic: str = _f(GEOFENCES_TOPIC, "KAFKA_GEOFENCES_TOPIC",
                                    "compacted topic of geofences (key = id, a tombstone "
                                    "deletes); the web API's /geofences writes it")
    kafka_alert_rules_topic: str = _f(ALERT_RULES_TOPIC, "KAFKA_ALERT_RULES_TOPIC",
                                      "compacted topic of alert rules (key = id; empty: the "
                                      "default rules); /alert-rules writes it")
    host: str = _f("127.0.0.1", "WEBAPI_HOST", "address to bind")
    port: int = _f(8000, "WEBAPI_PORT", "TCP port to bind", ge=0, le=65535)
    api_token: str | None = _f(None, "FLEETSTREAM_API_TOKEN",
                               "when set, POST /start-sim and /stop-sim, writes to "
                               "/geofences and /alert-rules, and /webhooks require it")
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = _f(
        (), "WEBAPI_ALLOWED_HOSTS",
        "comma-separated host names accepted in the Host header besides localhost, IP "
        "addresses and WEBAPI_HOST (DNS-rebinding guard; *: any)")
    cors_origins: Annotated[tuple[str, ...], NoDecode] = _f(
        (), "WEBAPI_CORS_ORIGINS", "comma-separated origins allowed by CORS (empty: none; *: any)")
    analytics_output_dir: Path = _f(Path("data/analytics"), "ANALYTICS_OUTPUT_DIR",
                                    "where the Spark job writes vehicle_windows/, road_windows/")
    recent_size: int = _f(10_000, "WEBAPI_RECENT_SIZE", "events kept in the recent ring buffer",
                          ge=100, le=1_000_000)
    violations_size: int = _f(2_000, "WEBAPI_VIOLATIONS_SIZE", "violation events kept",
                              ge=10, le=1_000_000)
    max_vehicles: int = _f(10_000, "WEBAPI_MAX_VEHICLES",
                           "vehicles tracked; the least recently seen is evicted",
                           ge=1, le=1_000_000)
    trail_points: int = _f(30, "WEBAPI_TRAIL_POINTS", "trail points kept per vehicle",
                           ge=2, le=1_000)
    backfill_seconds: float = _f(300.0, "WEBAPI_BACKFILL_SECONDS",
                                 "on start, replay this much history from Kafka", ge=0, le=86_400)
    backfill_max_per_partition: int = _f(5_000, "WEBAPI_BACKFILL_MAX_PER_PARTITION",
                                         "... and at most this many events per partition",
                                         ge=0, le=10_000_000)
    max_message_bytes: int = _f(8_192, "WEBAPI_MAX_MESSAGE_BYTES",
                                "larger telemetry messages are skipped as oversized "
                                "(an event is about 400 bytes)", ge=1_024, le=1_048_576)
    max_event_age_s: float = _f(31_536_000.0, "WEBAPI_MAX_EVENT_AGE_S",
                                "events older than this (by their timestamp, against this "
                                "server's clock) are skipped as too_old; 365 days by default, "
                                "so backfill and replays of recorded runs pass",
                                ge=60, le=3_153_600_000)
    max_event_future_s: float = _f(MAX_CLOCK_SKEW_S, "WEBAPI_MAX_EVENT_FUTURE_S",
                                   "events timestamped further ahead of this server's clock "
                                   "are skipped as in_future (allows for clock skew)",
                                   ge=0, le=86_400)
    ws_queue_size: int = _f(5_000, "WEBAPI_WS_QUEUE_SIZE",
                            "per-WebSocket-client queue; the oldest is dropped when full",
                            ge=1, le=1_000_000)
    ws_max_clients: int = _f(500, "WEBAPI_WS_MAX_CLIENTS",
                             "concurrent WebSocket clients (503 beyond)", ge=1, le=100_000)
    ws_max_per_address: int = _f(20, "WEBAPI_WS_MAX_PER_ADDRESS",
                                 "concurrent WebSocket clients from one IP address (503 beyond)",
                                 ge=1, le=100_000)
    ws_snapshot_size: int = _f(100, "WEBAPI_WS_SNAPSHOT_SIZE",
                               "recent events in the WebSocket snapshot frame of "
                               "?snapshot=recent (the default snapshot is the latest event "
                               "per active vehicle)", ge=0, le=10_000)
    ws_batch_ms: int = _f(100, "WEBAPI_WS_BATCH_MS",
                          "tick of ?batch=1 WebSocket clients, milliseconds", ge=10, le=10_000)
    stall_s: float = _f(15.0, "WEBAPI_STALL_S",
                        "a Kafka client that takes nothing this long while the topic has "
                        "records past its positions is replaced, seconds", ge=1, le=3_600)
    metadata_refresh_s: float = _f(5.0, "WEBAPI_METADATA_REFRESH_S",
                                   "check the telemetry topic's partitions this often, "
                                   "seconds: partitions added while the web API runs are "
                                   "read from their beginning", ge=0.1, le=3_600)
    vehicle_timeout_s: float = _f(120.0, "WEBAPI_VEHICLE_TIMEOUT_S",
                                  "a vehicle not heard from for this long (by this server's "
                                  "clock of receipt) leaves the live view: /telemetry/latest, "
                                  "/vehicles, /stats, the WebSocket snapshot and the maps "
                                  "(?include_stale=true shows it); keep it above a parked car's "
                                  "heartbeat (the producer's SIM_HEARTBEAT_S, 60 s)",
                                  ge=1, le=604_800)
    replay_max_range_s: float = _f(86_400.0, "WEBAPI_REPLAY_MAX_RANGE_S",
                                   "longest until - since of one WS /replay, seconds",
                                   ge=1, le=31_536_000)
    replay_max_clients: int = _f(4, "WEBAPI_REPLAY_MAX_CLIENTS",
                                 "concurrent Kafka range reads, WS /replay streams and GET "
                                 "/trips/{id} routes together (503 beyond); each reads Kafka "
                                 "with a consumer of its own", ge=1, le=100)
    control_timeout_s: float = _f(3.0, "WEBAPI_CONTROL_TIMEOUT_S",
                                  "wait this long for a producer's answer, then 503", gt=0, le=60)
    status_stale_s: float = _f(3.0, "WEBAPI_STATUS_STALE_S",
                               "no producer status for this long: /status answers 503",
                               gt=0, le=600)
    events_keep: int = _f(10_000, "WEBAPI_EVENTS_KEEP",
                          "derived events kept in memory for /events and the WS /ws/events "
                          "snapshot (the topic is read from its beginning)", ge=10, le=1_000_000)
    trips_keep: int = _f(5_000, "WEBAPI_TRIPS_KEEP",
                         "trips kept for /trips; the oldest is forgotten", ge=10, le=1_000_000)
    trip_route_points: int = _f(2_000, "WEBAPI_TRIP_ROUTE_POINTS",
                                "most route points of GET /trips/{id} (longer routes are "
                                "downsampled evenly)", ge=10, le=100_000)
    max_geofences: int = _f(MAX_GEOFENCES, "WEBAPI_MAX_GEOFENCES",
                            "geofences stored at most (POST beyond: 409)", ge=1, le=MAX_GEOFENCES)
    max_alert_rules: int = _f(MAX_ALERT_RULES, "WEBAPI_MAX_ALERT_RULES",
                              "alert rules stored at most (POST beyond: 409)", ge=1,
                              le=MAX_ALERT_RULES)
    max_geofence_vertices: int = _f(MAX_GEOFENCE_VERTICES, "WEBAPI_MAX_GEOFENCE_VERTICES",
                                    "vertices of one geofence at most (all rings)", ge=3,
                                    le=MAX_GEOFENCE_VERTICES)
    map_tile_url: str = _f(DEFAULT_TILE_URL, "WEBAPI_MAP_TILE_URL",
                           "dashboard map tiles ({z}/{x}/{y}); empty: a plain background")
    webhooks_topic: str = _f("fleetstream.webhooks", "WEBAPI_WEBHOOKS_TOPIC",
                             "compacted topic of the registered webhooks, secrets included "
                             "(guard it with ACLs)")
    webhook_deliveries_topic: str = _f("fleetstream.webhook-deliveries",
                                       "WEBAPI_WEBHOOK_DELIVERIES_TOPIC",
                                       "topic of webhook delivery records (7 days' retention; "
                                       "GET /webhooks/{id}/deliveries on any instance)")
    webhook_group: str = _f("fleetstream-webhooks", "WEBAPI_WEBHOOK_GROUP",
                            "consumer group delivering webhooks: instances sharing it share "
                            "the deliveries")
    webhook_allow_private: bool = _f(False, "WEBAPI_WEBHOOK_ALLOW_PRIVATE",
                                     "allow webhook targets on loopback, private, link-local "
                                     "and other non-public addresses")
    max_webhooks: int = _f(100, "WEBAPI_MAX_WEBHOOKS", "webhooks registered at most "
                           "(POST beyond: 409)", ge=1, le=10_000)
    webhook_max_attempts: int = _f(8, "WEBAPI_WEBHOOK_MAX_ATTEMPTS",
                                   "attempts per webhook delivery before it is given up",
                                   ge=1, le=1_000)
    webhook_timeout_s: float = _f(10.0, "WEBAPI_WEBHOOK_TIMEOUT_S",
                                  "timeout of one webhook request, seconds", gt=0, le=300)
    webhook_backoff_s: float = _f(1.0, "WEBAPI_WEBHOOK_BACKOFF_S",
                                  "back-off before a webhook's second attempt, doubling per "
                                  "attempt (full jitter: a random wait up to it)", gt=0, le=3_600)
    webhook_backoff_max_s: float = _f(300.0, "WEBAPI_WEBHOOK_BACKOFF_MAX_S",
                                      "longest back-off between webhook attempts, seconds",
                                      gt=0, le=86_400)
    webhook_concurrency: int = _f(4, "WEBAPI_WEBHOOK_CONCURRENCY",
                                  "concurrent requests to one webhook", ge=1, le=100)
    webhook_max_in_flight: int = _f(1_000, "WEBAPI_WEBHOOK_MAX_IN_FLIGHT",
                                    "webhook deliveries pending on one instance; beyond, it "
                                    "stops fetching events until some finish", ge=1, le=100_000)

    _topics = kafka_topics("kafka_topic", "kafka_control_topic", "kafka_status_topic",
                           "kafka_network_topic", "kafka_events_topic", "kafka_geofences_topic",
                           "kafka_alert_rules_topic", "webhooks_topic",
                           "webhook_deliveries_topic")
    _names = not_blank("kafka_bootstrap_servers", "host", "webhook_group")
    _locations = locations("analytics_output_dir")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(o.strip().rstrip("/") for o in value.split(",") if o.strip())
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            return tuple(str(h).strip().lower().rstrip(".") for h in value if str(h).strip())
        return value

    @field_validator("api_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value


ENV_NAMES: dict[str, str] = env_names(Settings)
"""Settings field -> environment variable."""
