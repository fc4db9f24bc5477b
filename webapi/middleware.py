"""Cross-cutting HTTP concerns: JSON errors, request metrics, CORS, the control token."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from webapi.metrics import Metrics
from webapi.params import ApiError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CORS_METHODS = "GET, POST, OPTIONS"
CORS_HEADERS = "Authorization, X-API-Token, Content-Type"


def error_middleware() -> Middleware:
    """Every error answers JSON {"error": ...}, 404s and 405s included."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return web.json_response(exc.body, status=exc.status)
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            message = exc.reason if exc.status != 404 else f"not found: {request.path}"
            return web.json_response({"error": message}, status=exc.status,
                                     headers={k: v for k, v in exc.headers.items()
                                              if k in ("Allow", "WWW-Authenticate")})
        except Exception:
            log.exception("unhandled error in %s %s", request.method, request.path)
            return web.json_response({"error": "internal server error"}, status=500)

    return errors


def metrics_middleware(metrics: Metrics) -> Middleware:
    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = request.match_info.route.resource
            name = route.canonical if route is not None else "unmatched"
            metrics.requests.labels(request.method, name, str(status)).inc()
            if name != "/ws":
                metrics.latency.labels(request.method, name).observe(time.perf_counter() - start)

    return measure


class Cors:
    """CORS for the configured origins only (``*`` allows any); nothing for the rest.

    :meth:`preflight` is a middleware answering OPTIONS preflights; :meth:`on_prepare` is an
    ``on_response_prepare`` signal, so streamed responses (the CSV export) get headers too.
    """

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.allow_any = "*" in origins
        self.allowed = frozenset(origins)

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self.allow_any or origin in self.allowed)

    @web.middleware
    async def preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return await handler(request)
        origin = request.headers.get("Origin")
        if not self.allows(origin):
            return web.json_response({"error": f"origin not allowed: {origin}"}, status=403)
        return web.Response(status=204, headers={
            "Access-Control-Allow-Origin": origin or "",
            "Access-Control-Allow-Methods": CORS_METHODS,
            "Access-Control-Allow-Headers": CORS_HEADERS,
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        })

    def check_origin(self, request: web.Request) -> None:
        """Refuse browser requests from other origins where CORS cannot protect us.

        CORS stops a foreign page from *reading* answers, not from *sending* a simple POST
        (start/stop) or from opening a WebSocket. Requests without an Origin header (curl,
        scripts) and same-origin ones (the dashboard) pass, and so do configured origins.
        """
        origin = request.headers.get("Origin")
        if origin is None or self.allows(origin) or urlsplit(origin).netloc == request.host:
            return
        raise ApiError(403, f"cross-origin request from {origin[:100]} refused; "
                            "allow the origin with WEBAPI_CORS_ORIGINS")

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if self.allows(origin) and "Access-Control-Allow-Origin" not in response.headers:
            response.headers["Access-Control-Allow-Origin"] = origin or ""
            response.headers["Vary"] = "Origin"


def check_token(request: web.Request, token: str | None) -> None:
    """Control endpoints: when a token is configured, require it (Bearer or X-API-Token)."""
    if token is None:
        return
    given = request.headers.get("X-API-Token")
    auth = request.headers.get("Authorization", "")
    if given is None and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    if given is None or not hmac.compare_digest(given.encode(), token.encode()):
        raise ApiError(401, "missing or invalid API token: send 'Authorization: Bearer <token>' "
                            "or 'X-API-Token: <token>' (FLEETSTREAM_API_TOKEN)")
