"""The OpenAPI 3.1 document served at /openapi.json.

Paths are written here by hand; the event and producer-status schemas come from the
pydantic models (``model_json_schema``), so they cannot drift from the contract.
"""

from __future__ import annotations

from typing import Any

from common.contract import (
    MAX_FLEET_SIZE,
    MAX_RATE_HZ,
    MAX_VEHICLE_ID_LEN,
    MIN_RATE_HZ,
    ProducerStatus,
    TelemetryEvent,
)
from webapi.params import BBOX_RE, MAX_VEHICLE_FILTER, MAX_VEHICLE_FILTER_CHARS
from webapi.ws import MAX_WS_HZ, MIN_WS_HZ

REF = "#/components/schemas/{model}"
STATUS_KEYS = ("running", "last_event", "rate_hz", "vehicles", "events_sent", "send_errors",
               "lag_s", "behind_schedule", "producer_id", "updated_at")
"""GET /status answers these fields of the freshest ProducerStatus (with several producer
instances: running if any runs, vehicles, events_sent and send_errors summed, the worst lag),
and ``instances``."""
INSTANCE_KEYS = ("producer_id", "running", "rate_hz", "vehicles", "fleet_size", "shards",
                 "group", "events_sent", "send_errors", "lag_s", "updated_at")
"""GET /status lists each producer instance heard from within WEBAPI_STATUS_STALE_S with
these fields of its latest ProducerStatus."""


def _schemas() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in (TelemetryEvent, ProducerStatus):
        schema = model.model_json_schema(ref_template=REF)
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    producer = out["ProducerStatus"]
    instance = {"type": "object", "title": "ProducerInstance", "required": list(INSTANCE_KEYS),
                "properties": {k: producer["properties"][k] for k in INSTANCE_KEYS}}
    out["Status"] = {"type": "object", "title": "Status",
                     "required": [*STATUS_KEYS, "instances"],
                     "properties": {**{k: producer["properties"][k] for k in STATUS_KEYS},
                                    "instances": {"type": "array", "items": instance}}}
    ref = {"$ref": REF.format(model="TelemetryEvent")}
    out["Items"] = {"type": "object", "required": ["items"],
                    "properties": {"items": {"type": "array", "items": ref}}}
    out["Error"] = {"type": "object", "required": ["error"],
                    "properties": {"error": {"type": "string"}, "parameter": {"type": "string"}}}
    out["TrailPoint"] = {"type": "object", "required": ["timestamp", "lat", "lon", "speed_kmh"],
                         "properties": {"timestamp": {"type": "string", "format": "date-time"},
                                        "lat": {"type": "number"}, "lon": {"type": "number"},
                                        "speed_kmh": {"type": "number"}}}
    return out


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _ok(schema: dict[str, Any] | str, description: str = "OK",
        media: str = "application/json") -> dict[str, Any]:
    if isinstance(schema, str):
        schema = {"$ref": REF.format(model=schema)}
    return {"description": description, "content": {media: {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": REF.format(model="Error")}}}}


ERR = _err("a bad query parameter, named in the answer")
COMMON_ERRORS = {
    "405": _err("method not allowed on this path"),
    "421": _err("the Host header is not a name of this server (WEBAPI_ALLOWED_HOSTS)"),
}
"""Answers any operation may give."""
VEHICLES = _q("vehicle_id", {"type": "string", "minLength": 1,
                             "maxLength": MAX_VEHICLE_FILTER_CHARS},
              "comma-separated vehicle ids (or the parameter repeated), at most "
              f"{MAX_VEHICLE_FILTER}, matched exactly (spaces included); an id no event can "
              f"have (longer than {MAX_VEHICLE_ID_LEN} characters, or not printable) matches "
              "nothing")
SINCE = _q("since", {"type": "string", "format": "date-time"}, "ISO 8601, inclusive")
UNTIL = _q("until", {"type": "string", "format": "date-time"}, "ISO 8601, inclusive")


INCLUDE_STALE = _q("include_stale", {"type": "string", "enum": ["true", "false", "1", "0"],
                                     "default": "false"},
                   "also vehicles silent longer than WEBAPI_VEHICLE_TIMEOUT_S; each item then "
                   "has \"stale\": true|false")
BBOX = _q("bbox", {"type": "string", "pattern": f"^{BBOX_RE.pattern}$"},
          "minlon,minlat,maxlon,maxlat in WGS84 degrees, plain decimals; a box whose min is "
          "not below its max matches nothing (no boxes across the antimeridian)")
DENSITY = {"type": "object", "required": ["bbox", "cells", "cell_size_deg", "total", "items"],
           "properties": {
               "bbox": {"type": "array", "items": {"type": "number"}},
               "cells": {"type": "integer"},
               "cell_size_deg": {"type": "array", "items": {"type": "number"}},
               "total": {"type": "integer"},
               "items": {"type": "array", "items": {
                   "type": "object",
                   "required": ["col", "row", "lon", "lat", "count", "mean_speed_kmh"],
                   "properties": {"col": {"type": "integer"}, "row": {"type": "integer"},
                                  "lon": {"type": "number"}, "lat": {"type": "number"},
                                  "count": {"type": "integer"},
                                  "mean_speed_kmh": {"type": "number"}}}}}}
NETWORK = {"type": "object", "required": ["type", "network_id", "features"],
           "properties": {"type": {"const": "FeatureCollection"},
                          "network_id": {"type": "string"}, "name": {"type": "string"},
                          "road_km": {"type": "number"},
                          "features": {"type": "array", "items": {"type": "object"}}}}


def _h(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": True, "schema": schema}


WS_HANDSHAKE = [_h("Upgrade", {"type": "string", "enum": ["websocket"]}),
                _h("Connection", {"type": "string", "enum": ["Upgrade"]}),
                _h("Sec-WebSocket-Version", {"type": "string", "enum": ["13"]}),
                _h("Sec-WebSocket-Key", {"type": "string", "pattern": "^[A-Za-z0-9+/]{22}==$"})]
"""The WebSocket handshake (RFC 6455); without it /ws answers 400."""


def _limit(default: int, cap: int) -> dict[str, Any]:
    return _q("limit", {"type": "integer", "minimum": 1, "default": default},
              f"number of items; larger values are capped at {cap}")


def _get(summary: str, params: list[dict[str, Any]], ok: dict[str, Any],
         **more: dict[str, Any]) -> dict[str, Any]:
    responses = {"200": ok, **more, **COMMON_ERRORS}
    if params:
        responses["422"] = ERR
    return {"get": {"summary": summary, "parameters": params, "responses": responses}}


def build(*, recent_cap: int, export_cap: int, violations_cap: int, trail_points: int,
          token_required: bool, latest_cap: int = 10_000, vehicle_timeout_s: float = 120.0,
          replay_max_range_s: float = 86_400.0) -> dict[str, Any]:
    obj = {"type": "object"}
    items_obj = {"type": "object", "properties": {"items": {"type": "array"},
                                                   "available": {"type": "boolean"}}}
    security: list[dict[str, list[str]]] = (
        [{"bearer": []}, {"apiToken": []}] if token_required else [])
    control_err = {"401": _err("missing or wrong API token (FLEETSTREAM_API_TOKEN)"),
                   "403": _err("a cross-origin browser request (WEBAPI_CORS_ORIGINS)"),
                   "409": _err("already running / not running"), "422": ERR,
                   "503": _err("no producer answered"), **COMMON_ERRORS}
    paths: dict[str, Any] = {
        "/health": _get("liveness", [], _ok(obj)),
        "/status": {"get": {"summary": "the producer daemon's state",
                            "responses": {"200": _ok("Status"),
                                          "503": _err("no fresh producer status"),
                                          **COMMON_ERRORS}}},
        "/start-sim": {"post": {
            "summary": "start the producer", "security": security,
            "parameters": [_q("rate_hz", {"type": "number", "minimum": MIN_RATE_HZ,
                                          "maximum": MAX_RATE_HZ},
                              "events per second per vehicle"),
                           _q("fleet_size", {"type": "integer", "minimum": 1,
                                             "maximum": MAX_FLEET_SIZE}, "vehicles")],
            "responses": {"200": _ok(obj), **control_err}}},
        "/stop-sim": {"post": {"summary": "stop the producer", "security": security,
                               "responses": {"200": _ok(obj), **control_err}}},
        "/telemetry/latest": _get(
            f"latest event per active vehicle (heard from within {vehicle_timeout_s:g} s, "
            "WEBAPI_VEHICLE_TIMEOUT_S), by vehicle id",
            [VEHICLES, _q("limit", {"type": "integer", "minimum": 1, "default": latest_cap},
                          f"at most this many vehicles; larger values are capped at "
                          f"{latest_cap}"), INCLUDE_STALE, BBOX],
            _ok("Items")),
        "/telemetry/density": _get(
            "active vehicles counted on a cells x cells grid over bbox, with their mean "
            "speed; only non-empty cells are listed (col 0 = west, row 0 = south; lon/lat: "
            "the cell's centre)",
            [{**BBOX, "required": True},
             _q("cells", {"type": "integer", "minimum": 1, "maximum": 256, "default": 64},
                "cells per side of the grid")],
            _ok(DENSITY)),
        "/network": {"get": {
            "summary": "the road network the producer drives, as GeoJSON (features: road "
                       "LineStrings with class, road_type, limit_kmh, oneway; light, place "
                       "and depot Points); gzip when accepted; ETag = network id",
            "parameters": [{"name": "If-None-Match", "in": "header", "required": False,
                            "schema": {"type": "string"},
                            "description": "the ETag of a copy held: 304 if still current"}],
            "responses": {"200": _ok(NETWORK, media="application/geo+json"),
                          "304": {"description": "not modified (If-None-Match)"},
                          "404": _err("no network published yet"), **COMMON_ERRORS}}},
        "/replay": _get(
            "WebSocket: the recorded events of [since, until] from Kafka, in event-time "
            "order, paced at speed x real time: event frames {type: event, data} (batch=1: "
            "{type: batch, items} per 100 ms of event time), then {type: end, count, "
            "skipped}, or {type: error, error}",
            [{**_q("since", {"type": "string", "format": "date-time"},
                   "start of the range, ISO 8601, inclusive"), "required": True},
             {**_q("until", {"type": "string", "format": "date-time"},
                   f"end of the range, inclusive; after since, at most "
                   f"{replay_max_range_s:g} s later (WEBAPI_REPLAY_MAX_RANGE_S)"),
              "required": True},
             _q("speed", {"oneOf": [{"type": "number", "minimum": 1, "maximum": 100},
                                    {"type": "string", "enum": ["max"]}], "default": 1},
                "times real time, 1..100, or max (no pacing)"),
             VEHICLES, _q("batch", {"type": "integer", "enum": [0, 1]}, "batch frames"),
             *WS_HANDSHAKE],
            {"description": "101 Switching Protocols"},
            **{"400": _err("not a WebSocket handshake (no Upgrade: websocket)"),
               "403": _err("a cross-origin browser request (WEBAPI_CORS_ORIGINS)"),
               "404": _err("nothing recorded: the telemetry topic does not exist"),
               "410": _err("the range starts before the oldest event the topic still "
                           "holds (retention); the answer has earliest_available"),
               "503": _err("too many replays (WEBAPI_REPLAY_MAX_CLIENTS) or Kafka did not "
                           "answer")}),
        "/telemetry/recent": _get("recent events, oldest first",
                                  [_limit(100, recent_cap), VEHICLES, SINCE, UNTIL], _ok("Items")),
        "/telemetry/violations": _get("recent speeding / over-redline events, newest first",
                                      [_limit(100, violations_cap), VEHICLES, SINCE, UNTIL],
                                      _ok("Items")),
        "/telemetry/export.csv": _get(
            "recent events as CSV (booleans 1/0; formula-like text cells prefixed with ')",
            [_limit(1000, export_cap), VEHICLES, SINCE, UNTIL],
            _ok({"type": "string"}, media="text/csv")),
        "/telemetry/trails": _get(
            "a short trail per vehicle",
            [VEHICLES, _q("points", {"type": "integer", "minimum": 1, "default": trail_points},
                          f"points per vehicle, at most {trail_points}")],
            _ok({"type": "object", "properties": {"items": {"type": "array", "items": {
                "type": "object", "properties": {
                    "vehicle_id": {"type": "string"},
                    "points": {"type": "array",
                               "items": {"$ref": REF.format(model="TrailPoint")}}}}}}})),
        "/vehicles": _get("ids of the active vehicles (include_stale: of all tracked ones, "
                          "and the stale ones in stale)", [INCLUDE_STALE],
                          _ok({"type": "object", "required": ["items"], "properties": {
                              "items": {"type": "array", "items": {"type": "string"}},
                              "stale": {"type": "array", "items": {"type": "string"}}}})),
        "/stats": _get("consumer statistics", [], _ok(obj)),
        "/analytics/vehicle-windows": _get("windowed aggregates per vehicle, newest first",
                                           [_limit(100, 2000), VEHICLES], _ok(items_obj),
                                           **{"503": _err("analytics output unreadable")}),
        "/analytics/road-windows": _get("windowed aggregates per road type, newest first",
                                        [_limit(100, 2000)], _ok(items_obj),
                                        **{"503": _err("analytics output unreadable")}),
        "/ws": _get("WebSocket: a snapshot frame (the latest event per active vehicle; "
                    "snapshot=recent: the most recent events), then event (or ?batch=1: "
                    "batch) frames",
                    [VEHICLES, _q("batch", {"type": "integer", "enum": [0, 1]}, "batch frames"),
                     _q("snapshot", {"type": "string", "enum": ["latest", "recent"],
                                     "default": "latest"}, "what the snapshot frame holds"),
                     _q("max_hz", {"type": "number", "minimum": MIN_WS_HZ, "maximum": MAX_WS_HZ},
                        "at most this many frames per second"), *WS_HANDSHAKE],
                    {"description": "101 Switching Protocols"},
                    **{"400": _err("not a WebSocket handshake (no Upgrade: websocket)"),
                       "403": _err("a cross-origin browser request (WEBAPI_CORS_ORIGINS)"),
                       "503": _err("too many WebSocket clients (WEBAPI_WS_MAX_CLIENTS, "
                                   "WEBAPI_WS_MAX_PER_ADDRESS)")}),
        "/dashboard": _get("the legacy live page", [], _ok({"type": "string"},
                                                             media="text/html")),
        "/metrics": _get("Prometheus metrics", [], _ok({"type": "string"}, media="text/plain")),
        "/openapi.json": _get("this document", [], _ok(obj)),
    }
    for path in ("/ws", "/replay"):
        ws = paths[path]["get"]["responses"]
        ws["101"] = ws.pop("200")
    return {
        "openapi": "3.1.0",
        "info": {"title": "FleetStream web API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiToken": {"type": "apiKey", "in": "header", "name": "X-API-Token"},
            },
        },
    }
