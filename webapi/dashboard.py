"""GET /dashboard: the legacy live page, a template file rendered once at start-up."""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from webapi.keys import DASHBOARD_HTML
from webapi.settings import Settings

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "templates" / "dashboard.html"
STATIC_DIR = HERE / "static"


def render(settings: Settings) -> tuple[str, str]:
    """The page's HTML and its Content-Security-Policy."""
    page = TEMPLATE.read_text(encoding="utf-8")
    page = page.replace("{{ tile_url }}", html.escape(settings.map_tile_url, quote=True))
    img = "'self' data:"
    tiles = urlsplit(settings.map_tile_url)
    if tiles.scheme in ("http", "https") and tiles.hostname:
        img += f" {tiles.scheme}://{tiles.netloc}"
    csp = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
           f"img-src {img}; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
           "form-action 'self'")
    return page, csp


async def dashboard(request: web.Request) -> web.Response:
    page, csp = request.app[DASHBOARD_HTML]
    return web.Response(text=page, content_type="text/html", headers={
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    })
