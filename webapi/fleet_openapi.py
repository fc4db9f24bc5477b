"""The OpenAPI paths of the fleet-event endpoints (webapi.fleet_routes), added to the
document webapi.openapi builds. Event, geofence, rule and trip-summary schemas come from the
pydantic models of common.fleet_events."""

from __future__ import annotations

import copy
from typing import Any, get_args

from pydantic import TypeAdapter

from common.fleet_events import (
    ALERT_RULE,
    EVENT_KINDS,
    FLEET_EVENT,
    MAX_DEFINITION_ID_LEN,
    Geofence,
    RuleKind,
    TripSummary,
)
from webapi.openapi import COMMON_ERRORS, REF, SINCE, UNTIL, VEHICLES, WS_HANDSHAKE, _err, _ok, _q
from webapi.settings import Settings


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _add(schemas: dict[str, Any], name: str, adapter: TypeAdapter[Any]) -> None:
    schema = adapter.json_schema(ref_template=REF)
    schemas.update(schema.pop("$defs", {}))
    schemas[name] = schema


def _schemas(schemas: dict[str, Any]) -> None:
    _add(schemas, "FleetEvent", FLEET_EVENT)
    _add(schemas, "Geofence", TypeAdapter(Geofence))
    _add(schemas, "AlertRule", ALERT_RULE)
    _add(schemas, "TripSummary", TypeAdapter(TripSummary))
    _tighten(schemas)
    schemas["GeofenceInput"] = _input(schemas["Geofence"], "GeofenceInput")
    rules = schemas["AlertRule"]
    inputs = {}
    for kind, ref in rules["discriminator"]["mapping"].items():
        name = ref.rsplit("/", 1)[1]
        schemas[f"{name}Input"] = _input(schemas[name], f"{name}Input")
        inputs[kind] = REF.format(model=f"{name}Input")
    schemas["AlertRuleInput"] = {"oneOf": [{"$ref": r} for r in inputs.values()],
                                 "discriminator": {"propertyName": "kind", "mapping": inputs}}
    loc = {"type": "object", "required": ["lat", "lon"],
           "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}}}
    ts = {"type": "string", "format": "date-time"}
    trip: dict[str, Any] = {"type": "object",
            "required": ["trip_id", "vehicle_id", "status", "started_at", "ended_at",
                         "start_location", "end_location", "summary"],
            "properties": {
                "trip_id": {"type": "string"}, "vehicle_id": {"type": "string"},
                "status": {"type": "string", "enum": ["in_progress", "ended"]},
                "started_at": ts, "ended_at": {"anyOf": [ts, {"type": "null"}]},
                "start_location": loc, "end_location": {"anyOf": [loc, {"type": "null"}]},
                "summary": {"anyOf": [_ref("TripSummary"), {"type": "null"}]}}}
    schemas["Trip"] = trip
    point = {"type": "object",
             "required": ["timestamp", "lat", "lon", "speed_kmh", "speeding", "rpm_over_redline",
                          "seq"],
             "properties": {"timestamp": ts, "lat": {"type": "number"},
                            "lon": {"type": "number"}, "speed_kmh": {"type": "number"},
                            "speeding": {"type": "boolean"},
                            "rpm_over_redline": {"type": "boolean"},
                            "seq": {"type": ["integer", "null"]}}}
    segment = {"type": "object",
               "required": ["kind", "started_at", "ended_at", "points", "max_speed_kmh"],
               "properties": {"kind": {"type": "string", "enum": ["speeding", "over_redline"]},
                              "started_at": ts, "ended_at": ts,
                              "points": {"type": "array", "items": {
                                  "type": "array", "items": {"type": "number"},
                                  "minItems": 2, "maxItems": 2}},
                              "max_speed_kmh": {"type": "number"}}}
    detail = copy.deepcopy(trip)
    detail["required"] += ["route", "violation_segments"]
    detail["properties"]["route"] = {"type": "array", "items": point}
    detail["properties"]["violation_segments"] = {"type": "array", "items": segment}
    schemas["TripDetail"] = detail
    schemas["AlertRuleShown"] = {
        "type": "object", "required": ["id", "kind", "enabled", "default"],
        "description": "an AlertRule plus default: true for the built-in rules shown while "
                       "the rules topic holds none",
        "properties": {"id": {"type": "string"}, "kind": {"enum": list(get_args(RuleKind))},
                       "name": {"type": ["string", "null"]}, "enabled": {"type": "boolean"},
                       "default": {"type": "boolean"}}}


ID_PATTERN = r"^\S(.*\S)?$"


def _tighten(schemas: dict[str, Any]) -> None:
    """What the validators check beyond the generated schema, where JSON Schema can say it:
    rings of at least 4 positions, [lon, lat] ranges, ids without surrounding space, and
    ``kind`` always present (it tells the rule models apart)."""
    ring = schemas["Polygon"]["properties"]["coordinates"]["items"]
    ring["minItems"] = 4
    ring["items"]["prefixItems"] = [{"type": "number", "minimum": -180, "maximum": 180},
                                    {"type": "number", "minimum": -90, "maximum": 90}]
    ring["description"] = "closed: the last position equals the first"
    for name in ("Geofence", *(r.rsplit("/", 1)[1] for r in
                               schemas["AlertRule"]["discriminator"]["mapping"].values())):
        schema = schemas[name]
        schema["properties"]["id"]["pattern"] = ID_PATTERN
        if "kind" in schema["properties"] and "kind" not in schema["required"]:
            schema["required"].append("kind")


def _input(schema: dict[str, Any], title: str) -> dict[str, Any]:
    """A request body's schema: ``id`` optional (a uuid4 hex is made)."""
    given = copy.deepcopy(schema)
    given["required"] = [k for k in given["required"] if k != "id"]
    given["title"] = title
    return given


def _items(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["items"],
            "properties": {"items": {"type": "array", "items": item}}}


def document_fleet(doc: dict[str, Any], settings: Settings) -> None:
    """Add the fleet-event paths and schemas to ``doc`` (webapi.openapi.build's result)."""
    _schemas(doc["components"]["schemas"])
    security: list[dict[str, list[str]]] = (
        [{"bearer": []}, {"apiToken": []}] if settings.api_token is not None else [])
    bad = _err("a bad query parameter, named in the answer")
    unready = {"503": _err("not read from Kafka yet, or Kafka unavailable")}
    ident = {"name": "id", "in": "path", "required": True,
             "schema": {"type": "string", "minLength": 1, "maxLength": MAX_DEFINITION_ID_LEN}}
    write_err = {"401": _err("missing or wrong API token (FLEETSTREAM_API_TOKEN)"),
                 "403": _err("a cross-origin browser request (WEBAPI_CORS_ORIGINS)"),
                 **unready, **COMMON_ERRORS}
    kind = _q("kind", {"type": "string", "enum": list(EVENT_KINDS)},
              "only events of this kind (comma-separated or repeated for several)")
    limit = _q("limit", {"type": "integer", "minimum": 1, "default": 100},
               "number of items; larger values are capped at 2000")

    def get(summary: str, params: list[dict[str, Any]], ok: dict[str, Any],
            **more: dict[str, Any]) -> dict[str, Any]:
        responses = {"200": ok, **more, **COMMON_ERRORS}
        if params:
            responses["422"] = bad
        return {"summary": summary, "parameters": params, "responses": responses}

    def post(what: str, body: str, cap_setting: str) -> dict[str, Any]:
        return {"summary": f"store a {what} (id optional: a uuid4 hex is made); replaces one "
                           "with the same id", "security": security,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _ref(body)}}},
                "responses": {"201": _ok(body.replace("Input", ""), "stored"),
                              "409": _err(f"too many stored ({cap_setting})"),
                              "413": _err("body too large"),
                              "422": _err("not valid: pydantic's message, and errors"),
                              **write_err}}

    def delete(what: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"summary": f"delete a {what} (a tombstone on its topic)", "security": security,
                "parameters": [ident],
                "responses": {"204": {"description": "deleted"},
                              "404": _err(f"no such {what}"), **(extra or {}), **write_err}}

    fleet_ref = _ref("FleetEvent")
    doc["paths"].update({
        "/events": {"get": get(
            "derived fleet events (trips, geofence crossings, alerts) as on the events topic, "
            f"oldest first; the newest limit of the {settings.events_keep} kept "
            "(WEBAPI_EVENTS_KEEP)", [kind, VEHICLES, SINCE, limit], _ok(_items(fleet_ref)))},
        "/ws/events": {"get": get(
            "WebSocket: {type: snapshot, items} (recent matching events), then {type: event, "
            "data} per new derived event", [kind, VEHICLES, *WS_HANDSHAKE],
            {"description": "101 Switching Protocols"},
            **{"400": _err("not a WebSocket handshake (no Upgrade: websocket)"),
               "403": _err("a cross-origin browser request (WEBAPI_CORS_ORIGINS)"),
               "503": _err("too many WebSocket clients (WEBAPI_WS_MAX_CLIENTS, "
                           "WEBAPI_WS_MAX_PER_ADDRESS)")})},
        "/trips": {"get": get(
            f"trips overlapping [since, until], newest first (the {settings.trips_keep} most "
            "recent kept, WEBAPI_TRIPS_KEEP)", [VEHICLES, SINCE, UNTIL, limit],
            _ok(_items(_ref("Trip"))))},
        "/trips/{trip_id}": {"get": get(
            "a trip with its route (the vehicle's telemetry from Kafka, at most "
            f"{settings.trip_route_points} points, WEBAPI_TRIP_ROUTE_POINTS) and its "
            "violation segments",
            [{"name": "trip_id", "in": "path", "required": True, "schema": {"type": "string"}},
             {**VEHICLES, "description": "the vehicle, when several share the trip id"}],
            _ok("TripDetail"), **{"404": _err("unknown trip"),
                                  "409": _err("several vehicles have this trip id: add "
                                              "vehicle_id"),
                                  "503": _err("Kafka did not answer in time")})},
        "/geofences": {"get": get("the stored geofences (GeoJSON Polygons)", [],
                                  _ok(_items(_ref("Geofence"))), **unready),
                       "post": post("geofence", "GeofenceInput", "WEBAPI_MAX_GEOFENCES")},
        "/geofences/{id}": {"get": get("one geofence", [ident], _ok("Geofence"),
                                       **{"404": _err("no such geofence"), **unready}),
                            "delete": delete("geofence")},
        "/alert-rules": {"get": get("the alert rules in effect: the stored ones, or while "
                                    "none is stored the defaults (default: true)", [],
                                    _ok(_items(_ref("AlertRuleShown"))), **unready),
                         "post": post("alert rule", "AlertRuleInput",
                                      "WEBAPI_MAX_ALERT_RULES")},
        "/alert-rules/{id}": {"get": get("one alert rule", [ident], _ok("AlertRuleShown"),
                                         **{"404": _err("no such rule"), **unready}),
                              "delete": delete("alert rule", {"409": _err(
                                  "a default rule: defaults are not stored")})},
    })
    ws = doc["paths"]["/ws/events"]["get"]["responses"]
    ws["101"] = ws.pop("200")
