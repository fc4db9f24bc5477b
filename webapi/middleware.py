"""Cross-cutting HTTP concerns: JSON errors, request metrics, the Host guard, CORS, the
control token, the Server header."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web, web_response
from aiohttp.typedefs import Middleware

from webapi.metrics import Metrics
from webapi.params import ApiError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, X-API-Token, Content-Type"
SERVER_NAME = "FleetStream"
"""The Server header: names no framework or version."""
LOCAL_NAMES = frozenset(("localhost", "localhost.localdomain", "ip6-localhost"))


class HostGuard:
    """Accept a request only if its Host header names this server: localhost, an IP address,
    the bound address or a name of WEBAPI_ALLOWED_HOSTS (``*``: any).

    This is the DNS-rebinding guard: a page on ``evil.example`` whose name is re-pointed at
    127.0.0.1 reaches this server with ``Host: evil.example``, and is refused with 421. IP
    literals pass because a browser only sends one when the page itself came from that IP.
    """

    def __init__(self, bound_host: str, allowed: Iterable[str]) -> None:
        names = {h.lower().rstrip(".") for h in allowed}
        self.allow_any = "*" in names
        self.names = frozenset(names | LOCAL_NAMES | {bound_host.lower().strip("[]")})

    def allows(self, host: str | None) -> bool:
        """``host`` as in a Host header or URL netloc (``name``, ``name:port``, ``[v6]:port``)."""
        if host is None:
            return False
        if self.allow_any:
            return True
        try:
            name = urlsplit("//" + host).hostname
        except ValueError:
            return False
        if not name:
            return False
        name = name.rstrip(".")
        if name in self.names or name.endswith(".localhost"):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")  # absent only from non-browser HTTP/1.0 clients
        if host is not None and not self.allows(host):
            return web.json_response(
                {"error": f"misdirected request: Host {host[:100]!r} is not a name of this server; "
                          "add it to WEBAPI_ALLOWED_HOSTS"}, status=421)
        return await handler(request)


async def server_header(request: web.Request, response: web.StreamResponse) -> None:
    """An ``on_response_prepare`` signal: replace aiohttp's ``Server: Python/… aiohttp/…``."""
    response.headers["Server"] = SERVER_NAME


def hide_server_version() -> None:
    """Also for the answers aiohttp's protocol writes itself (a malformed request's 400), which
    skip the application's signals: aiohttp takes their default ``Server`` value from this
    module global of ``aiohttp.web_response``."""
    web_response.SERVER_SOFTWARE = SERVER_NAME


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
            log.exception("unhandled error in %s %s", request.method, request.path[:200])
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
            if name not in ("/ws", "/ws/events"):  # long-lived: not a latency
                metrics.latency.labels(request.method, name).observe(time.perf_counter() - start)

    return measure


class Cors:
    """CORS for the configured origins only (``*`` allows any); nothing for the rest.

    :meth:`preflight` is a middleware answering OPTIONS preflights; :meth:`on_prepare` is an
    ``on_response_prepare`` signal, so streamed responses (the CSV export) get headers too.
    """

    def __init__(self, origins: tuple[str, ...], hosts: HostGuard | None = None) -> None:
        self.allow_any = "*" in origins
        self.allowed = frozenset(origins)
        self.hosts = hosts or HostGuard("127.0.0.1", ())

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self.allow_any or origin in self.allowed)

    @web.middleware
    async def preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return await handler(request)
        origin = request.headers.get("Origin")
        if not self.allows(origin):
            shown = "(none)" if origin is None else repr(origin[:100])
            return web.json_response({"error": f"origin not allowed: {shown}"}, status=403)
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
        scripts) pass, and so do configured origins and same-origin ones (the dashboard): an
        Origin whose host is one of this server's names (:class:`HostGuard`, never merely the
        request's own Host header) and whose host and port are the ones the request went to.
        """
        origin = request.headers.get("Origin")
        if origin is None or self.allows(origin) or self._same_origin(origin, request):
            return
        raise ApiError(403, f"cross-origin request from {origin[:100]!r} refused; "
                            "allow the origin with WEBAPI_CORS_ORIGINS")

    def _same_origin(self, origin: str, request: web.Request) -> bool:
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:
            return False
        return bool(netloc) and netloc == request.host and self.hosts.allows(netloc)

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
    # Header values are decoded as UTF-8 with surrogate escapes: encode them back the same
    # way, so a non-UTF-8 token is just a wrong token (401), not an error (500).
    if given is None or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                                token.encode()):
        raise ApiError(401, "missing or invalid API token: send 'Authorization: Bearer <token>' "
                            "or 'X-API-Token: <token>' (FLEETSTREAM_API_TOKEN)")
