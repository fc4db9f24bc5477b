"""GET /dashboard: the legacy live page, a template file rendered once at start-up, and
GET /static/...: its scripts, styles and images."""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from webapi.keys import DASHBOARD_HTML
from webapi.params import ApiError
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


def static_files(static_dir: Path = STATIC_DIR) -> web.RouteDef:
    """GET /static/{path}: the files under ``static_dir`` when the app starts (the vendored
    libraries, installed by ``make setup``, included), and nothing else. Any other path is a
    JSON 404 without touching the file system (aiohttp's own static route answered a
    missing file with an empty 404, and a 256-character name with a 500)."""
    files = {p.relative_to(static_dir).as_posix(): p for p in static_dir.rglob("*")
             if p.is_file() and not p.name.startswith(".")}

    async def static(request: web.Request) -> web.FileResponse:
        path = request.match_info["path"]
        file = files.get(path)
        if file is None:
            raise ApiError(404, f"not found: /static/{path[:200]}")
        return web.FileResponse(file)

    return web.get("/static/{path:.+}", static)
