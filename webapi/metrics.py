"""Prometheus instruments of one app, in the app's own CollectorRegistry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from webapi.decode import MALFORMED_KINDS


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.consumed = Counter("fleetstream_webapi_events_consumed",
                                "Telemetry events consumed and validated", registry=r)
        self.malformed = Counter("fleetstream_webapi_malformed_messages",
                                 "Telemetry messages skipped as malformed", ["kind"], registry=r)
        for kind in MALFORMED_KINDS:
            self.malformed.labels(kind)
        self.vehicles = Gauge("fleetstream_webapi_vehicles_tracked",
                              "Vehicles currently tracked by the in-memory view", registry=r)
        self.evicted = Counter("fleetstream_webapi_vehicles_evicted",
                               "Vehicles evicted (least recently seen) to bound memory", registry=r)
        self.ws_clients = Gauge("fleetstream_webapi_ws_clients",
                                "Connected WebSocket clients", registry=r)
        self.ws_dropped = Counter("fleetstream_webapi_ws_dropped_events",
                                  "Events dropped from slow WebSocket clients' queues", registry=r)
        self.ws_frames = Counter("fleetstream_webapi_ws_frames_sent",
                                 "WebSocket frames sent", ["type"], registry=r)
        self.requests = Counter("fleetstream_webapi_http_requests", "HTTP requests served",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("fleetstream_webapi_http_request_duration_seconds",
                                 "HTTP request latency", ["method", "route"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
                                          2.5, 5, 10))
        self.control = Counter("fleetstream_webapi_control_commands",
                               "Commands sent to producers, by outcome", ["command", "outcome"],
                               registry=r)
