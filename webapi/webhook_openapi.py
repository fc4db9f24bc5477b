"""The OpenAPI description of webhooks (webapi.webhooks, webapi.webhook_delivery), added to
the document webapi.openapi builds: the four endpoints, and the delivery itself under the
document's top-level ``webhooks`` (OpenAPI 3.1) with its headers and signature scheme."""

from __future__ import annotations

from typing import Any

from common.fleet_events import EVENT_KINDS, FLEET_EVENT
from webapi.openapi import COMMON_ERRORS, REF, _err, _ok
from webapi.settings import Settings
from webapi.webhook_delivery import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    SIGNATURE_TOLERANCE_S,
    WEBHOOK_ID_HEADER,
)
from webapi.webhooks import (
    DELIVERIES_KEPT,
    MAX_BODY_BYTES,
    MAX_SECRET_LEN,
    MAX_URL_LEN,
    MIN_SECRET_LEN,
)

SIGNATURE = (
    f"`t=<unix seconds>,v1=<hex>`: v1 is the lowercase hex HMAC-SHA256, keyed with the "
    "webhook's secret (UTF-8), of the ASCII timestamp t, a dot, and the raw request body "
    "bytes exactly as received. Receivers recompute it, compare in constant time, and "
    f"refuse a t more than {SIGNATURE_TOLERANCE_S} s from their clock (a replay). t is set "
    "per attempt, so retries carry fresh signatures.")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _schemas(schemas: dict[str, Any]) -> None:
    if "FleetEvent" not in schemas:  # webapi.fleet_openapi may have added it already
        schema = FLEET_EVENT.json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas["FleetEvent"] = schema
    ts = {"type": "string", "format": "date-time"}
    kinds = {"type": "array", "minItems": 1, "uniqueItems": True,
             "items": {"type": "string", "enum": list(EVENT_KINDS)}}
    schemas["WebhookInput"] = {
        "type": "object", "required": ["url", "secret", "kinds"], "additionalProperties": False,
        "properties": {
            "url": {"type": "string", "format": "uri", "maxLength": MAX_URL_LEN,
                    "description": "http or https, no credentials, no fragment; its host "
                                   "must resolve to public addresses only unless "
                                   "WEBAPI_WEBHOOK_ALLOW_PRIVATE=true"},
            "secret": {"type": "string", "minLength": MIN_SECRET_LEN,
                       "maxLength": MAX_SECRET_LEN, "pattern": "^[ -~]+$",
                       "description": "printable ASCII; signs the deliveries; never shown "
                                      "again"},
            "kinds": kinds}}
    schemas["Webhook"] = {
        "type": "object", "required": ["id", "url", "kinds", "created_at"],
        "properties": {"id": {"type": "string"}, "url": {"type": "string"}, "kinds": kinds,
                       "created_at": ts}}
    schemas["WebhookDelivery"] = {
        "type": "object",
        "required": ["event_id", "kind", "attempts", "status", "last_status_code",
                     "last_error", "first_attempt_at", "last_attempt_at"],
        "properties": {
            "event_id": {"type": "string"},
            "kind": {"type": "string", "enum": list(EVENT_KINDS)},
            "attempts": {"type": "integer", "minimum": 1},
            "status": {"type": "string", "enum": ["delivered", "retrying", "gave_up"]},
            "last_status_code": {"type": ["integer", "null"],
                                 "description": "null: no HTTP answer (timeout, refused)"},
            "last_error": {"type": ["string", "null"]},
            "first_attempt_at": ts, "last_attempt_at": ts}}


def document_webhooks(doc: dict[str, Any], settings: Settings) -> None:
    """Add the webhook paths, schemas and the delivery description to ``doc``."""
    _schemas(doc["components"]["schemas"])
    security: list[dict[str, list[str]]] = (
        [{"bearer": []}, {"apiToken": []}] if settings.api_token is not None else [])
    auth = {"401": _err("missing or wrong API token (FLEETSTREAM_API_TOKEN)"), **COMMON_ERRORS}
    path_id = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
    missing = {"404": _err("no webhook with this id")}
    doc["paths"]["/webhooks"] = {
        "post": {
            "summary": "register a webhook: every derived event of the given kinds is POSTed "
                       "to url, signed with secret (see the document's webhooks)",
            "security": security,
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _ref("WebhookInput")}},
                "description": f"at most {MAX_BODY_BYTES} bytes"},
            "responses": {
                "201": _ok("Webhook", "registered (the secret is not echoed)"),
                "403": _err("a cross-origin browser request (WEBAPI_CORS_ORIGINS)"),
                "409": _err(f"too many webhooks (WEBAPI_MAX_WEBHOOKS={settings.max_webhooks})"),
                "413": _err("body too large"),
                "422": _err("a bad field, named in the answer; or a target on a loopback, "
                            "private or other non-public address, or one that does not "
                            "resolve"),
                "503": _err("Kafka did not take the write"), **auth}},
        "get": {"summary": "the registered webhooks, oldest first (secrets never shown)",
                "security": security,
                "responses": {"200": _ok({"type": "object", "required": ["items"],
                                          "properties": {"items": {"type": "array",
                                                                   "items": _ref("Webhook")}}}),
                              **auth}}}
    doc["paths"]["/webhooks/{id}"] = {"delete": {
        "summary": "delete a webhook: its pending deliveries stop", "security": security,
        "parameters": path_id,
        "responses": {"204": {"description": "deleted"}, **missing,
                      "403": _err("a cross-origin browser request (WEBAPI_CORS_ORIGINS)"),
                      "503": _err("Kafka did not take the write"), **auth}}}
    doc["paths"]["/webhooks/{id}/deliveries"] = {"get": {
        "summary": f"the webhook's latest deliveries, newest first (the last {DELIVERIES_KEPT} "
                   "events; any instance answers: records travel on "
                   "WEBAPI_WEBHOOK_DELIVERIES_TOPIC)",
        "security": security, "parameters": path_id,
        "responses": {"200": _ok({"type": "object", "required": ["items"], "properties": {
            "items": {"type": "array", "items": _ref("WebhookDelivery")}}}), **missing, **auth}}}
    header = {"required": True, "schema": {"type": "string"}}
    doc["webhooks"] = {"fleetEvent": {"post": {
        "summary": "a derived event, delivered to a registered webhook",
        "description": (
            "At least once: a 2xx answer is success; anything else (a redirect too), a "
            f"timeout (WEBAPI_WEBHOOK_TIMEOUT_S={settings.webhook_timeout_s:g}) or a "
            "connection error is retried with exponential back-off and full jitter, up to "
            f"WEBAPI_WEBHOOK_MAX_ATTEMPTS={settings.webhook_max_attempts} attempts. The same "
            "event may arrive twice (a retry after a lost answer, a restart): deduplicate by "
            f"{EVENT_ID_HEADER}. Events arrive in no guaranteed order."),
        "parameters": [
            {"name": "Content-Type", "in": "header", **header,
             "schema": {"type": "string", "enum": ["application/json"]}},
            {"name": EVENT_ID_HEADER, "in": "header", **header,
             "description": "the event's deterministic event_id (deduplicate by it)"},
            {"name": WEBHOOK_ID_HEADER, "in": "header", **header,
             "description": "the id POST /webhooks answered"},
            {"name": SIGNATURE_HEADER, "in": "header", **header,
             "schema": {"type": "string", "pattern": "^t=[0-9]+,v1=[0-9a-f]{64}$"},
             "description": SIGNATURE}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": _ref("FleetEvent")}},
            "description": "the event's JSON exactly as on the events topic"},
        "responses": {"2XX": {"description": "delivered"},
                      "default": {"description": "failed: retried later"}}}}}
