"""Typed keys of the app's shared state."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from webapi.consumer import TelemetryConsumer
from webapi.control import ControlChannel
from webapi.definitions import Definitions
from webapi.fleet_events import EventHub, EventStore, FleetEventsConsumer
from webapi.hub import Hub
from webapi.metrics import Metrics
from webapi.middleware import Cors
from webapi.network import NetworkReader
from webapi.settings import Settings
from webapi.store import TelemetryStore
from webapi.webhook_delivery import DeliveryWorker
from webapi.webhooks import WebhookStore

SETTINGS = web.AppKey("settings", Settings)
CORS = web.AppKey("cors", Cors)
STORE = web.AppKey("store", TelemetryStore)
HUB = web.AppKey("hub", Hub)
METRICS = web.AppKey("metrics", Metrics)
CONSUMER = web.AppKey("consumer", TelemetryConsumer)
CONTROL = web.AppKey("control", ControlChannel)
OPENAPI = web.AppKey("openapi", dict[str, Any])
DASHBOARD_HTML = web.AppKey("dashboard_html", tuple[str, str])  # (html, CSP)
WEBSOCKETS = web.AppKey("websockets", set[web.WebSocketResponse])
NETWORK = web.AppKey("network", NetworkReader)
REPLAYS = web.AppKey("replays", set[object])  # one token per running WS /replay
FLEET_EVENTS = web.AppKey("fleet_events", EventStore)  # derived events and trips
FLEET_CONSUMER = web.AppKey("fleet_consumer", FleetEventsConsumer)
EVENT_HUB = web.AppKey("event_hub", EventHub)  # WS /ws/events clients
DEFINITIONS = web.AppKey("definitions", Definitions)  # geofences and alert rules
WEBHOOKS = web.AppKey("webhooks", WebhookStore)  # registry + delivery records
WEBHOOK_WORKER = web.AppKey("webhook_worker", DeliveryWorker)
