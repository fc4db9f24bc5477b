"""The app factory: settings in, a ready aiohttp Application out.

Each long-lived resource is one ``cleanup_ctx``: the telemetry consumer and the control
channel start their background task, ``yield``, then cancel it, wait for it and stop
their Kafka clients. Open WebSockets are closed on shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, web

from webapi import openapi
from webapi.consumer import TelemetryConsumer
from webapi.control import ControlChannel
from webapi.dashboard import render, static_files
from webapi.definitions import Definitions
from webapi.fleet_events import EventHub, EventStore, FleetEventMetrics, FleetEventsConsumer
from webapi.fleet_openapi import document_fleet
from webapi.fleet_routes import add_fleet_routes
from webapi.hub import Hub
from webapi.keys import (
    CONSUMER,
    CONTROL,
    CORS,
    DASHBOARD_HTML,
    DEFINITIONS,
    EVENT_HUB,
    FLEET_CONSUMER,
    FLEET_EVENTS,
    HUB,
    METRICS,
    NETWORK,
    OPENAPI,
    REPLAYS,
    SETTINGS,
    STORE,
    WEBHOOK_WORKER,
    WEBHOOKS,
    WEBSOCKETS,
)
from webapi.metrics import Metrics
from webapi.middleware import (
    Cors,
    HostGuard,
    error_middleware,
    hide_server_version,
    metrics_middleware,
    server_header,
)
from webapi.network import NetworkReader
from webapi.params import MAX_REQUEST_LINE
from webapi.ratelog import install_malformed_request_filter
from webapi.routes import LATEST_CAP, RECENT_CAP, VIOLATIONS_CAP, add_routes
from webapi.settings import Settings
from webapi.store import TelemetryStore
from webapi.webhook_delivery import DeliveryWorker
from webapi.webhook_openapi import document_webhooks
from webapi.webhooks import WebhookStore


def create_app(settings: Settings) -> web.Application:
    install_malformed_request_filter()
    metrics = Metrics()
    hosts = HostGuard(settings.host, settings.allowed_hosts)
    cors = Cors(settings.cors_origins, hosts)
    app = web.Application(
        middlewares=[metrics_middleware(metrics), hosts.middleware, cors.preflight,
                     error_middleware()],
        client_max_size=64 * 1024,
        handler_args={"max_line_size": MAX_REQUEST_LINE},
    )
    store = TelemetryStore(recent_size=settings.recent_size,
                           violations_size=settings.violations_size,
                           max_vehicles=settings.max_vehicles,
                           trail_points=settings.trail_points,
                           timeout_s=settings.vehicle_timeout_s)
    hub = Hub(metrics, settings.ws_queue_size, settings.ws_max_clients,
              settings.ws_max_per_address)
    app[SETTINGS] = settings
    app[CORS] = cors
    app[METRICS] = metrics
    app[STORE] = store
    app[HUB] = hub
    app[CONSUMER] = TelemetryConsumer(settings, store, hub, metrics)
    app[CONTROL] = ControlChannel(settings)
    app[WEBSOCKETS] = set()
    app[NETWORK] = NetworkReader(settings)
    app[REPLAYS] = set()
    app[WEBHOOKS] = WebhookStore(settings)
    app[WEBHOOK_WORKER] = DeliveryWorker(settings, app[WEBHOOKS], metrics)
    fleet_metrics = FleetEventMetrics(metrics)
    app[FLEET_EVENTS] = EventStore(keep=settings.events_keep, trips_keep=settings.trips_keep)
    app[EVENT_HUB] = EventHub(fleet_metrics, settings.ws_queue_size, settings.ws_max_clients,
                              settings.ws_max_per_address)
    app[FLEET_CONSUMER] = FleetEventsConsumer(settings, app[FLEET_EVENTS], app[EVENT_HUB],
                                              fleet_metrics)
    app[DEFINITIONS] = Definitions(settings)
    app[DASHBOARD_HTML] = render(settings)
    app[OPENAPI] = openapi.build(recent_cap=RECENT_CAP, export_cap=settings.recent_size,
                                 latest_cap=LATEST_CAP,
                                 violations_cap=VIOLATIONS_CAP,
                                 trail_points=settings.trail_points,
                                 token_required=settings.api_token is not None,
                                 vehicle_timeout_s=settings.vehicle_timeout_s,
                                 replay_max_range_s=settings.replay_max_range_s)
    document_fleet(app[OPENAPI], settings)
    document_webhooks(app[OPENAPI], settings)
    app.cleanup_ctx.append(_telemetry_consumer)
    app.cleanup_ctx.append(_control_channel)
    app.cleanup_ctx.append(_network_reader)
    app.cleanup_ctx.append(_webhooks)
    app.cleanup_ctx.append(_fleet_events)
    app.on_shutdown.append(_close_websockets)
    app.on_response_prepare.append(cors.on_prepare)
    app.on_response_prepare.append(server_header)
    hide_server_version()
    add_routes(app)
    add_fleet_routes(app)
    app.router.add_routes([static_files()])
    return app


async def _telemetry_consumer(app: web.Application) -> AsyncIterator[None]:
    consumer = app[CONSUMER]
    consumer.start()
    yield
    await consumer.close()


async def _control_channel(app: web.Application) -> AsyncIterator[None]:
    control = app[CONTROL]
    control.start()
    yield
    await control.close()


async def _network_reader(app: web.Application) -> AsyncIterator[None]:
    reader = app[NETWORK]
    reader.start()
    yield
    await reader.close()


async def _fleet_events(app: web.Application) -> AsyncIterator[None]:
    consumer, definitions = app[FLEET_CONSUMER], app[DEFINITIONS]
    consumer.start()
    definitions.start()
    yield
    await consumer.close()
    await definitions.close()


async def _webhooks(app: web.Application) -> AsyncIterator[None]:
    store, worker = app[WEBHOOKS], app[WEBHOOK_WORKER]
    store.start()
    worker.start()
    yield
    await worker.close()  # first: its last delivery records still go out through the store
    await store.close()


async def _close_websockets(app: web.Application) -> None:
    app[HUB].close_all()
    app[EVENT_HUB].close_all()
    sockets: set[web.WebSocketResponse] = app[WEBSOCKETS]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
