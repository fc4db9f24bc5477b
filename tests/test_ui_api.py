"""The app's HTTP client and settings, against a tiny local HTTP server (no Kafka)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
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
