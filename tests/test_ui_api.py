"""The app's HTTP client and settings, against a tiny local HTTP server (no Kafka)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from pydantic import ValidationError

from ui.api import ApiClient, ApiError, ApiUnavailable
from ui.settings import Settings
from ui.sidebar import control_error

ROUTES: dict[tuple[str, str], tuple[int, bytes]] = {
    ("GET", "/stats"): (200, b'{"vehicles_reporting": 2, "events_per_s": 1.5}'),
    ("GET", "/telemetry/latest"): (200, b'{"items": [{"vehicle_id": "A"}]}'),
    ("GET", "/vehicles"): (200, b'{"items": ["A", "B"]}'),
    ("POST", "/start-sim"): (409, b'{"error": "already running"}'),
    ("POST", "/stop-sim"): (401, b'{"error": "missing or invalid API token"}'),
    ("GET", "/status"): (503, b"<html>no</html>"),
    ("GET", "/health"): (200, b"[1, 2]"),
}


class Handler(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, dict, str | None]] = []

    def _answer(self) -> None:
        url = urlsplit(self.path)
        Handler.seen.append((self.command, url.path, parse_qs(url.query),
                             self.headers.get("Authorization")))
        status, body = ROUTES.get((self.command, url.path), (404, b'{"error": "no route"}'))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Handler.seen.clear()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_client_reads_json_and_sends_filters(server: str) -> None:
    with ApiClient(server, token="s3cret", timeout_s=2) as client:
        assert client.stats()["events_per_s"] == 1.5
        assert client.latest(["A", "B"]) == [{"vehicle_id": "A"}]
        assert client.vehicles() == ["A", "B"]
        since = datetime(2026, 1, 1, 8, tzinfo=UTC)
        with pytest.raises(ApiError):
            client.violations(10, ["A"], since=since)
    method, path, query, auth = Handler.seen[1]
    assert (method, path, query, auth) == ("GET", "/telemetry/latest", {"vehicle_id": ["A,B"]},
                                           None)  # the token goes only with control calls
    assert Handler.seen[3][2] == {"limit": ["10"], "vehicle_id": ["A"],
                                  "since": ["2026-01-01T08:00:00+00:00"]}


def test_client_errors_carry_the_apis_message(server: str) -> None:
    with ApiClient(server, token="s3cret", timeout_s=2) as client:
        with pytest.raises(ApiError) as conflict:
            client.start_sim(5.0, 20)
        assert (conflict.value.status, conflict.value.message) == (409, "already running")
        assert Handler.seen[-1][2] == {"rate_hz": ["5.0"], "fleet_size": ["20"]}
        assert Handler.seen[-1][3] == "Bearer s3cret"
        with pytest.raises(ApiError) as denied:
            client.stop_sim()
        assert denied.value.status == 401
        with pytest.raises(ApiError) as html:
            client.status()
        assert html.value.status == 503 and "no" in html.value.message
        with pytest.raises(ApiError, match="not a JSON object"):
            client.health()
    assert "409" in control_error(conflict.value)
    assert "FLEETSTREAM_API_TOKEN" in control_error(denied.value)
    assert "make run" in control_error(html.value)


def test_client_reports_an_api_that_is_down() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        with ApiClient(f"http://127.0.0.1:{port}", timeout_s=1) as client:
            with pytest.raises(ApiUnavailable) as down:
                client.stats()
    assert f"127.0.0.1:{port}" in str(down.value)
    assert "make run" in control_error(down.value)


def test_settings_env_flags_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FLEETSTREAM_API_URL", "FLEETSTREAM_API_TOKEN", "FLEETSTREAM_UI_REFRESH_S",
                 "REDLINE_RPM"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert (s.api_url, s.api_token, s.refresh_s, s.timeout_s, s.max_trails, s.page_size,
            s.redline_rpm) == ("http://127.0.0.1:8000", "", 2.0, 3.0, 25, 50, 6200)
    monkeypatch.setenv("FLEETSTREAM_API_URL", "http://127.0.0.1:9000/")
    monkeypatch.setenv("FLEETSTREAM_UI_REFRESH_S", "5")
    s = Settings.from_argv(["tests/x.py", "-q", "--max-trails", "7", "--timeout=9"])
    assert (s.api_url, s.refresh_s, s.max_trails) == ("http://127.0.0.1:9000", 5.0, 7)
    assert Settings.from_argv(["--api-url", "https://fleet.example"]).api_url == \
        "https://fleet.example"
    monkeypatch.setenv("FLEETSTREAM_UI_REFRESH_S", "0")
    with pytest.raises(ValidationError, match="FLEETSTREAM_UI_REFRESH_S"):
        Settings()
    monkeypatch.delenv("FLEETSTREAM_UI_REFRESH_S")
    monkeypatch.setenv("FLEETSTREAM_API_URL", "localhost:8000")
    with pytest.raises(ValidationError, match="FLEETSTREAM_API_URL"):
        Settings()
    with pytest.raises(ValidationError, match="REDLINE_RPM"):
        Settings(redline_rpm=10)
    assert Settings(api_url="http://h:1", max_trails=3).max_trails == 3
    json.dumps(Settings.model_json_schema())  # documented fields


class ReplayServer:
    """A stand-in web API whose WS /replay sends fixed text frames, then closes; /health
    answers ok, anything else 404. Runs on its own loop and thread."""

    def __init__(self, frames: list[str]) -> None:
        self.frames = frames
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.url = ""

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def replay(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            for frame in self.frames:
                await ws.send_str(frame)
            await ws.close()
            return ws

        async def health(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        app = web.Application()
        app.router.add_get("/replay", replay)
        app.router.add_get("/health", health)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", port).start())
        self.url = f"http://127.0.0.1:{port}"
        self.ready.set()
        self.loop.run_forever()

    def __enter__(self) -> ReplayServer:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def replay_event(vehicle_id: str, ts: str) -> dict:
    return {"vehicle_id": vehicle_id, "timestamp": ts, "location": {"lat": 48.1, "lon": 11.5},
            "speed_kmh": 50.0, "engine_rpm": 2000, "gear": 3, "fuel_level_pct": 50.0,
            "fault_codes": [], "road_type": "urban", "speed_limit_kmh": 50,
            "speeding": False, "rpm_over_redline": False}


BAD_REPLAY_FRAMES = ["not json", '{"type": "batch", "items": 5}', '{"type": "batch"}',
                     '{"type": "event", "data": [1]}', "[1, 2]", '{"type": 7}', "[" * 100_000]


def test_replay_skips_and_counts_frames_it_cannot_read() -> None:
    good = replay_event("R1", "2026-11-30T08:00:00+00:00")
    frames = [BAD_REPLAY_FRAMES[0], json.dumps({"type": "batch", "items": [good, 5]}),
              *BAD_REPLAY_FRAMES[1:], json.dumps({"type": "event", "data": good}),
              json.dumps({"type": "progress", "sent": 2}),  # a type it does not know: passed
              json.dumps({"type": "end", "count": 2})]
    since = datetime(2026, 11, 30, 7, 55, tzinfo=UTC)
    with ReplayServer(frames) as api, ApiClient(api.url) as client:
        items, truncated, bad = client.replay(since, since.replace(hour=8, minute=5))
    assert (items, truncated, bad) == ([good, good], False, len(BAD_REPLAY_FRAMES))


def test_replay_error_frame_is_the_apis_message() -> None:
    frames = ['{"type": "error", "error": "log unreadable"}']
    since = datetime(2026, 11, 30, 7, 55, tzinfo=UTC)
    with ReplayServer(frames) as api, ApiClient(api.url) as client, \
            pytest.raises(ApiError, match="log unreadable"):
        client.replay(since, since.replace(hour=8))
