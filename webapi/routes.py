"""REST handlers: the original FleetStream API plus the fleet extensions."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable
from typing import Any, Literal

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.contract import MAX_FLEET_SIZE, MAX_RATE_HZ, MIN_RATE_HZ, ProducerStatus
from webapi import csvexport
from webapi.control import ControlUnavailable
from webapi.dashboard import dashboard
from webapi.decode import Entry
from webapi.density import DENSITY_CAP, DENSITY_DEFAULT, grid, in_bbox
from webapi.keys import (
    CONSUMER,
    CONTROL,
    CORS,
    FLEET_CONSUMER,
    METRICS,
    NETWORK,
    OPENAPI,
    SETTINGS,
    STORE,
    WEBHOOKS,
)
from webapi.middleware import check_token
from webapi.network import network_response
from webapi.openapi import INSTANCE_KEYS, STATUS_KEYS
from webapi.params import (
    ApiError,
    bbox_param,
    flag_param,
    float_param,
    int_param,
    time_range,
    vehicles_param,
)
from webapi.replay import replay_handler
from webapi.webhooks import WebhookRoutes
from webapi.windows import AnalyticsUnreadable, read_rows
from webapi.ws import ws_handler

RECENT_DEFAULT, RECENT_CAP = 100, 2000
VIOLATIONS_DEFAULT, VIOLATIONS_CAP = 100, 2000
EXPORT_DEFAULT = 1000
WINDOWS_DEFAULT, WINDOWS_CAP = 100, 2000
LATEST_DEFAULT = LATEST_CAP = 10_000
"""GET /telemetry/latest: vehicles per answer (by id), streamed in chunks of LATEST_CHUNK."""
LATEST_CHUNK = 500
STALE_TRUE, STALE_FALSE = b',"stale":true}', b',"stale":false}'


def json_bytes(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def json_obj(obj: Any, status: int = 200) -> web.Response:
    return json_bytes(orjson.dumps(obj), status)


def items_response(entries: Iterable[Entry]) -> web.Response:
    return json_bytes(b'{"items":[' + b",".join(e.raw for e in entries) + b"]}")


async def health(request: web.Request) -> web.Response:
    return json_obj({"status": "ok"})


# ---------------------------------------------------------------------------- control
async def status(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    st = request.app[CONTROL].latest_status()
    if st is None:
        raise ApiError(503, f"no producer status seen in the last {settings.status_stale_s:g} s; "
                            "is the producer daemon (python -m producer) running?")
    body = st.model_dump(mode="json", include=set(STATUS_KEYS))
    if body["last_event"] is None:
        store = request.app[STORE]
        if store.recent:
            body["last_event"] = orjson.loads(store.recent[-1].raw)
    instances = request.app[CONTROL].instances()
    if len(instances) > 1:  # one fleet over several instances (or several fleets): the sums
        body.update(running=any(i.running for i in instances),
                    vehicles=sum(i.vehicles for i in instances),
                    events_sent=sum(i.events_sent for i in instances),
                    send_errors=sum(i.send_errors for i in instances),
                    lag_s=max(i.lag_s for i in instances),
                    behind_schedule=any(i.behind_schedule for i in instances))
    out = {k: body[k] for k in STATUS_KEYS}
    out["instances"] = [i.model_dump(mode="json", include=set(INSTANCE_KEYS))
                        for i in instances]
    return json_obj(out)


async def _command(request: web.Request, name: str, **kwargs: Any) -> ProducerStatus:
    metrics = request.app[METRICS]
    try:
        reply = await request.app[CONTROL].command(name, **kwargs)
    except ControlUnavailable as exc:
        metrics.control.labels(name, "unavailable").inc()
        raise ApiError(503, str(exc)) from None
    metrics.control.labels(name, reply.error or "ok").inc()
    if reply.ok:
        return reply
    if reply.error == "already_running":
        raise ApiError(409, "simulation already running")
    if reply.error == "not_running":
        raise ApiError(409, "simulation not running")
    raise ApiError(422, reply.message or f"the producer refused the command: {reply.error}")


async def start_sim(request: web.Request) -> web.Response:
    request.app[CORS].check_origin(request)
    check_token(request, request.app[SETTINGS].api_token)
    rate_hz = float_param(request.query, "rate_hz", minimum=MIN_RATE_HZ, maximum=MAX_RATE_HZ)
    fleet_size = None
    if "fleet_size" in request.query:
        fleet_size = int_param(request.query, "fleet_size", 1, minimum=1, maximum=MAX_FLEET_SIZE)
    reply = await _command(request, "start", rate_hz=rate_hz, fleet_size=fleet_size)
    return json_obj({"status": "started", "rate_hz": float(reply.rate_hz)})


async def stop_sim(request: web.Request) -> web.Response:
    request.app[CORS].check_origin(request)
    check_token(request, request.app[SETTINGS].api_token)
    await _command(request, "stop")
    return json_obj({"status": "stopped"})


# ---------------------------------------------------------------------------- telemetry
async def latest(request: web.Request) -> web.StreamResponse:
    """Streamed (:func:`stream_items`). Active vehicles only, unless ``include_stale`` (then
    every item says ``"stale": true|false``)."""
    q = request.query
    limit = int_param(q, "limit", LATEST_DEFAULT, minimum=1, cap=LATEST_CAP)
    vehicles, bbox = vehicles_param(q), bbox_param(q)
    include_stale = flag_param(q, "include_stale")
    store = request.app[STORE]
    now = time.time()
    entries = store.latest_items(vehicles, include_stale=include_stale, now=now)
    if bbox is not None:
        entries = [e for e in entries if in_bbox(e, bbox)]
    entries = entries[:limit]
    if include_stale:
        raws = [e.raw[:-1] + (STALE_TRUE if store.is_stale(e.vehicle_id, now) else STALE_FALSE)
                for e in entries]
    else:
        raws = [e.raw for e in entries]
    return await stream_items(request, raws)


async def stream_items(request: web.Request, items: Iterable[bytes]) -> web.StreamResponse:
    """``{"items":[...]}`` written LATEST_CHUNK items at a time: never held whole, so
    parallel calls cost little memory and /health stays responsive. (Streamed routes are
    registered without HEAD, which would get the body too.)"""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write(b'{"items":[')
    it, sep = iter(items), b""
    while chunk := list(itertools.islice(it, LATEST_CHUNK)):
        await response.write(sep + b",".join(chunk))
        sep = b","
    await response.write(b"]}")
    await response.write_eof()
    return response


async def density(request: web.Request) -> web.Response:
    """Active vehicles counted on a ``cells`` x ``cells`` grid over ``bbox``."""
    q = request.query
    bbox = bbox_param(q)
    if bbox is None:
        raise ApiError(422, "bbox: required: minlon,minlat,maxlon,maxlat", parameter="bbox")
    cells = int_param(q, "cells", DENSITY_DEFAULT, minimum=1, maximum=DENSITY_CAP)
    return json_obj(grid(request.app[STORE].latest_items(), bbox, cells))


async def recent(request: web.Request) -> web.Response:
    q = request.query
    limit = int_param(q, "limit", RECENT_DEFAULT, minimum=1, cap=RECENT_CAP)
    vehicles, (since, until) = vehicles_param(q), time_range(q)
    return items_response(request.app[STORE].recent_items(limit, vehicles, since, until))


async def violations(request: web.Request) -> web.Response:
    q = request.query
    limit = int_param(q, "limit", VIOLATIONS_DEFAULT, minimum=1, cap=VIOLATIONS_CAP)
    vehicles, (since, until) = vehicles_param(q), time_range(q)
    return items_response(request.app[STORE].violation_items(limit, vehicles, since, until))


async def export_csv(request: web.Request) -> web.StreamResponse:
    q = request.query
    store = request.app[STORE]
    limit = int_param(q, "limit", EXPORT_DEFAULT, minimum=1, cap=store.recent.maxlen)
    vehicles, (since, until) = vehicles_param(q), time_range(q)
    entries = store.recent_items(limit, vehicles, since, until)
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": 'attachment; filename="telemetry.csv"',
        "Cache-Control": "no-store",
    })
    await response.prepare(request)
    for chunk in csvexport.chunks(entries):
        await response.write(chunk)
    await response.write_eof()
    return response


async def trails(request: web.Request) -> web.StreamResponse:
    """Streamed, as /telemetry/latest: 10,000 vehicles' trails are tens of MB."""
    store = request.app[STORE]
    points = int_param(request.query, "points", store.trail_points, minimum=1,
                       cap=store.trail_points)
    trails = store.trail_items(vehicles_param(request.query), points)
    return await stream_items(request, (
        b'{"vehicle_id":' + orjson.dumps(vid) + b',"points":[' + b",".join(pts) + b"]}"
        for vid, pts in trails))


async def vehicles(request: web.Request) -> web.Response:
    """Ids of the active vehicles; with ``include_stale`` all tracked ones, and ``stale``."""
    store = request.app[STORE]
    if flag_param(request.query, "include_stale"):
        now = time.time()
        return json_obj({"items": store.vehicles(include_stale=True),
                         "stale": store.stale_ids(now)})
    return json_obj({"items": store.vehicles()})


async def stats(request: web.Request) -> web.Response:
    store, consumer = request.app[STORE], request.app[CONSUMER]
    reporting = store.active_count()
    return json_obj({
        "vehicles_reporting": reporting,
        "vehicles_stale": len(store.latest) - reporting,
        "events_per_s": round(store.events_per_s(), 3),
        "consumed_total": store.consumed_total,
        "malformed_total": consumer.malformed_total,
        "malformed": dict(sorted(consumer.malformed.items())),
        "violations_total": store.violations_total,
        "fleet_events": request.app[FLEET_CONSUMER].stats(),
    })


# ---------------------------------------------------------------------------- analytics
async def _windows(request: web.Request, dataset: Literal["vehicle_windows", "road_windows"],
                   with_vehicles: bool) -> web.Response:
    q = request.query
    limit = int_param(q, "limit", WINDOWS_DEFAULT, minimum=1, cap=WINDOWS_CAP)
    ids = vehicles_param(q) if with_vehicles else None
    out = request.app[SETTINGS].analytics_output_dir
    try:
        rows, available = await asyncio.to_thread(read_rows, out, dataset, limit, ids)
    except AnalyticsUnreadable as exc:
        return json_obj({"error": str(exc)}, status=503)
    return json_obj({"items": rows, "available": available})


async def vehicle_windows(request: web.Request) -> web.Response:
    return await _windows(request, "vehicle_windows", True)


async def road_windows(request: web.Request) -> web.Response:
    return await _windows(request, "road_windows", False)


# ---------------------------------------------------------------------------- documents
async def openapi(request: web.Request) -> web.Response:
    return json_obj(request.app[OPENAPI])


async def network(request: web.Request) -> web.Response:
    return network_response(request, request.app[NETWORK])


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/dashboard")


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", root)
    r.add_get("/health", health)
    r.add_get("/status", status)
    r.add_post("/start-sim", start_sim)
    r.add_post("/stop-sim", stop_sim)
    r.add_get("/telemetry/latest", latest, allow_head=False)
    r.add_get("/telemetry/density", density)
    r.add_get("/telemetry/recent", recent)
    r.add_get("/telemetry/violations", violations)
    r.add_get("/telemetry/export.csv", export_csv, allow_head=False)
    r.add_get("/telemetry/trails", trails, allow_head=False)
    r.add_get("/vehicles", vehicles)
    r.add_get("/stats", stats)
    r.add_get("/analytics/vehicle-windows", vehicle_windows)
    r.add_get("/analytics/road-windows", road_windows)
    r.add_get("/openapi.json", openapi)
    r.add_get("/metrics", metrics)
    r.add_get("/ws", ws_handler)
    r.add_get("/replay", replay_handler)
    r.add_get("/network", network)
    r.add_get("/dashboard", dashboard)
    WebhookRoutes(app[WEBHOOKS], app[CORS]).add_to(app)
