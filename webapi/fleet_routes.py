"""Handlers of the fleet-event endpoints: /events, WS /ws/events, /trips, /geofences and
/alert-rules (issue 12). Reads come from :mod:`webapi.fleet_events` and
:mod:`webapi.definitions`; writes need the control token, like /start-sim."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from aiohttp import WSMsgType, web
from pydantic import TypeAdapter, ValidationError

from common.contract import is_printable_id
from common.fleet_events import (
    ALERT_RULE,
    DEFAULT_ALERT_RULES,
    EVENT_KINDS,
    MAX_DEFINITION_ID_LEN,
    Geofence,
)
from webapi.definitions import DefinitionView
from webapi.fleet_events import FleetEntry, public_trip
from webapi.hub import Subscriber, items_frame
from webapi.keys import CORS, DEFINITIONS, EVENT_HUB, FLEET_EVENTS, METRICS, SETTINGS, WEBSOCKETS
from webapi.lifecycle import cancel_and_wait
from webapi.metrics import Metrics
from webapi.middleware import check_token
from webapi.params import ApiError, bad_param, int_param, time_param, time_range, vehicles_param
from webapi.replay import range_read_slot
from webapi.trip_route import downsample, read_route, violation_segments
from webapi.ws import admit

EVENTS_DEFAULT, EVENTS_CAP = 100, 2000
TRIPS_DEFAULT, TRIPS_CAP = 100, 2000
RULE_BODY_BYTES = 16 * 1024
MAX_ERRORS = 20
GEOFENCE: TypeAdapter[Geofence] = TypeAdapter(Geofence)


def geofence_body_bytes(max_vertices: int) -> int:
    """Largest POST /geofences body: room for ``max_vertices`` positions written out."""
    return max(16 * 1024, 64 * max_vertices + 4096)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def _items(entries: list[FleetEntry]) -> web.Response:
    return web.Response(body=b'{"items":[' + b",".join(e.raw for e in entries) + b"]}",
                        content_type="application/json")


def kinds_param(query: Any) -> frozenset[str] | None:
    """``kind=a,b`` (or repeated): each one of EVENT_KINDS; absent: all."""
    raws = query.getall("kind", []) if hasattr(query, "getall") else []
    if not raws:
        return None
    kinds = {k for raw in raws for k in raw.split(",")}
    bad = sorted(k for k in kinds if k not in EVENT_KINDS)
    if bad:
        raise bad_param("kind", f"must be one of {', '.join(EVENT_KINDS)}, got {bad[0][:40]!r}")
    return frozenset(kinds)


# ---------------------------------------------------------------------------- events
async def events(request: web.Request) -> web.Response:
    q = request.query
    limit = int_param(q, "limit", EVENTS_DEFAULT, minimum=1, cap=EVENTS_CAP)
    kinds, vehicles, since = kinds_param(q), vehicles_param(q), time_param(q, "since")
    return _items(request.app[FLEET_EVENTS].events(limit, kinds, vehicles, since))


async def ws_events(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    settings, hub = app[SETTINGS], app[EVENT_HUB]
    app[CORS].check_origin(request)
    kinds, vehicles = kinds_param(request.query), vehicles_param(request.query)
    address = admit(request, hub)
    sub = hub.subscribe(kinds, vehicles, address)  # with the snapshot: no gap, no duplicate
    snapshot = app[FLEET_EVENTS].events(settings.ws_snapshot_size, kinds, vehicles)
    ws = web.WebSocketResponse(heartbeat=30, compress=False, max_msg_size=4096)
    sender: asyncio.Task[None] | None = None
    try:
        await ws.prepare(request)
        app[WEBSOCKETS].add(ws)
        sender = asyncio.create_task(_send(ws, sub, snapshot, app[METRICS]))
        async for _msg in ws:  # nothing to say; this notices the client's close
            pass
    finally:
        hub.unsubscribe(sub)
        app[WEBSOCKETS].discard(ws)
        await cancel_and_wait(sender)
    return ws


async def _send(ws: web.WebSocketResponse, sub: Subscriber, snapshot: list[FleetEntry],
                metrics: Metrics) -> None:
    text = WSMsgType.TEXT
    try:
        await ws.send_frame(items_frame(b"snapshot", snapshot), text)
        metrics.ws_frames.labels("snapshot").inc()
        while not ws.closed:
            await sub.wake.wait()
            sub.wake.clear()
            while sub.queue:
                await ws.send_frame(sub.queue.popleft(), text)
                metrics.ws_frames.labels("event").inc()
    except (ConnectionError, RuntimeError):
        return


# ---------------------------------------------------------------------------- trips
async def trips(request: web.Request) -> web.Response:
    q = request.query
    limit = int_param(q, "limit", TRIPS_DEFAULT, minimum=1, cap=TRIPS_CAP)
    vehicles, (since, until) = vehicles_param(q), time_range(q)
    return _json({"items": request.app[FLEET_EVENTS].trip_list(limit, vehicles, since, until)})


async def trip(request: web.Request) -> web.Response:
    trip_id = request.match_info["trip_id"]
    vehicles = vehicles_param(request.query)
    found = request.app[FLEET_EVENTS].find_trips(trip_id, vehicles)
    settings = request.app[SETTINGS]
    if not found:
        raise ApiError(404, f"unknown trip {trip_id[:80]!r}" + (
            " of the vehicle(s) asked for" if vehicles is not None else "")
            + f" (this server keeps the {settings.trips_keep} most recent trips, "
              "WEBAPI_TRIPS_KEEP)")
    if len(found) > 1:
        raise ApiError(409, f"trip id {trip_id[:80]!r} is used by several vehicles "
                            f"({', '.join(sorted(t['vehicle_id'] for t in found)[:10])}); "
                            "add ?vehicle_id=", parameter="vehicle_id")
    chosen = found[0]
    with range_read_slot(request.app):
        route = await read_route(settings, chosen["vehicle_id"], chosen["_since"],
                                 chosen["_until"])
    body = public_trip(chosen)
    body["violation_segments"] = violation_segments(route)
    body["route"] = downsample(route, settings.trip_route_points)
    return _json(body)


# ---------------------------------------------------------------------------- definitions
async def read_body(request: web.Request, cap: int) -> bytes:
    """The request body, refused with 413 beyond ``cap`` bytes (before reading it all)."""
    if request.content_length is not None and request.content_length > cap:
        raise ApiError(413, f"body larger than {cap} bytes")
    chunks, size = [], 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            break
        size += len(chunk)
        if size > cap:
            raise ApiError(413, f"body larger than {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _validation_error(exc: ValidationError) -> ApiError:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    shown = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
             for e in errors[:MAX_ERRORS]]
    first = shown[0] if shown else {"loc": [], "msg": str(exc)}
    where = ".".join(first["loc"])
    message = f"body: {where}: {first['msg']}" if where else f"body: {first['msg']}"
    return ApiError(422, message, parameter="body", errors=shown)


async def _document(request: web.Request, cap: int) -> tuple[str, bytes]:
    """The posted JSON object with an ``id`` (a fresh uuid4 hex if absent) -> (id, JSON)."""
    body = await read_body(request, cap)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, f"body: not valid JSON: {str(exc)[:120]}", parameter="body") from None
    if not isinstance(doc, dict):
        raise ApiError(422, "body: must be a JSON object", parameter="body")
    if "id" not in doc:
        doc["id"] = uuid.uuid4().hex
    elif not isinstance(doc["id"], str):
        raise ApiError(422, "body.id: must be a string (leave it out to have one made)",
                       parameter="body")
    return doc["id"], orjson.dumps(doc)


def _ident(request: web.Request) -> str:
    ident = request.match_info["id"]
    if not (0 < len(ident) <= MAX_DEFINITION_ID_LEN and is_printable_id(ident)):
        raise ApiError(404, "no such id (ids are 1 to "
                            f"{MAX_DEFINITION_ID_LEN} printable characters)")
    return ident


def _guard(request: web.Request) -> None:
    request.app[CORS].check_origin(request)
    check_token(request, request.app[SETTINGS].api_token)


async def _create(request: web.Request, view: DefinitionView, model: Any, cap: int,
                  max_items: int, setting: str) -> web.Response:
    _guard(request)
    view.require_ready()
    _, data = await _document(request, cap)
    try:
        item = model.validate_json(data, strict=True, context={
            "max_vertices": request.app[SETTINGS].max_geofence_vertices})
    except ValidationError as exc:
        raise _validation_error(exc) from None

    def room() -> None:
        if item.id not in view.items and len(view.items) >= max_items:
            raise ApiError(409, f"{max_items} {view.what}s stored already ({setting}); "
                                "delete one first")

    await request.app[DEFINITIONS].write(view, item.id, item.model_dump_json().encode(), room)
    return _json(item.model_dump(mode="json"), status=201)


async def _delete(request: web.Request, view: DefinitionView) -> web.Response:
    _guard(request)
    ident = _ident(request)
    view.require_ready()

    def exists() -> None:  # one over the readers' cap too (view.valid), so it can be removed
        if ident not in view.valid:
            raise ApiError(404, f"no {view.what} {ident!r}")

    await request.app[DEFINITIONS].write(view, ident, None, exists)
    return web.Response(status=204)


def _raw(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")


async def geofences(request: web.Request) -> web.Response:
    view = request.app[DEFINITIONS].geofences
    view.require_ready()
    items = view.items
    return _raw(b'{"items":[' + b",".join(items[k] for k in sorted(items)) + b"]}")


async def geofence(request: web.Request) -> web.Response:
    view = request.app[DEFINITIONS].geofences
    ident = _ident(request)
    view.require_ready()
    if ident not in view.items:
        raise ApiError(404, f"no geofence {ident!r}")
    return _raw(view.items[ident])


async def create_geofence(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    return await _create(request, request.app[DEFINITIONS].geofences, GEOFENCE,
                         geofence_body_bytes(s.max_geofence_vertices), s.max_geofences,
                         "WEBAPI_MAX_GEOFENCES")


async def delete_geofence(request: web.Request) -> web.Response:
    return await _delete(request, request.app[DEFINITIONS].geofences)


def _rules_shown(view: DefinitionView) -> list[dict[str, Any]]:
    if view.items:
        return [{**orjson.loads(view.items[k]), "default": False} for k in sorted(view.items)]
    return [{**r.model_dump(mode="json"), "default": True} for r in DEFAULT_ALERT_RULES]


async def alert_rules(request: web.Request) -> web.Response:
    view = request.app[DEFINITIONS].rules
    view.require_ready()
    return _json({"items": _rules_shown(view)})


async def alert_rule(request: web.Request) -> web.Response:
    view = request.app[DEFINITIONS].rules
    ident = _ident(request)
    view.require_ready()
    for rule in _rules_shown(view):
        if rule["id"] == ident:
            return _json(rule)
    raise ApiError(404, f"no alert rule {ident!r}")


async def create_alert_rule(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    return await _create(request, request.app[DEFINITIONS].rules, ALERT_RULE, RULE_BODY_BYTES,
                         s.max_alert_rules, "WEBAPI_MAX_ALERT_RULES")


async def delete_alert_rule(request: web.Request) -> web.Response:
    view = request.app[DEFINITIONS].rules
    ident = _ident(request)
    view.require_ready()
    if not view.items and any(r.id == ident for r in DEFAULT_ALERT_RULES):
        _guard(request)
        raise ApiError(409, f"{ident!r} is a default rule: defaults are not stored, so they "
                            "cannot be deleted; they apply while no rule is stored. POST a "
                            "rule to replace them all (a disabled one turns alerts off)")
    return await _delete(request, view)


def add_fleet_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/events", events)
    r.add_get("/ws/events", ws_events)
    r.add_get("/trips", trips)
    r.add_get("/trips/{trip_id}", trip)
    r.add_get("/geofences", geofences)
    r.add_post("/geofences", create_geofence)
    r.add_get("/geofences/{id}", geofence)
    r.add_delete("/geofences/{id}", delete_geofence)
    r.add_get("/alert-rules", alert_rules)
    r.add_post("/alert-rules", create_alert_rule)
    r.add_get("/alert-rules/{id}", alert_rule)
    r.add_delete("/alert-rules/{id}", delete_alert_rule)
