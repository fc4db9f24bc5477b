"""The Streamlit app end to end under AppTest: real web API, real broker, real events.

The web API runs in this process on its own thread and event loop
(``webapi.app.create_app``), consuming a fresh topic of the session broker; events are
``TelemetryEvent`` instances published with aiokafka. The app itself only talks HTTP.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from aiokafka import AIOKafkaProducer
from streamlit.testing.v1 import AppTest

from common.contract import TelemetryEvent
from tests.support.processes import stop_process
from tests.support.synthetic import fleet_events
from tools.kafka import free_port

APP = str(Path(__file__).resolve().parent.parent / "ui" / "app.py")
FLEET = 12
STEPS = 30


class ApiServer:
    """webapi.create_app(settings) served on 127.0.0.1 from a background thread."""

    def __init__(self, **settings: object) -> None:
        from aiohttp import web

        from webapi.app import create_app
        from webapi.settings import Settings

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # a network topic of its own: a road network another test published must not show
        settings.setdefault("kafka_network_topic", f"network-{uuid.uuid4().hex[:12]}")
        self._app = create_app(Settings(host="127.0.0.1", port=self.port, **settings))
        self._runner = web.AppRunner(self._app)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._web = web

    def start(self) -> ApiServer:
        self._thread.start()
        self._call(self._runner.setup())
        self._call(self._web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        return self

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    def stop(self) -> None:
        try:
            self._call(self._runner.cleanup())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()


def publish(bootstrap: str, topic: str, events: list[TelemetryEvent]) -> None:
    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for e in events:
                await producer.send(topic, key=e.vehicle_id.encode(),
                                    value=e.model_dump_json().encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(run())


def wait_for(url: str, predicate, timeout: float = 60.0, *, as_json: bool = True):
    deadline = time.monotonic() + timeout
    body: object = {}
    while time.monotonic() < deadline:
        try:
            resp = requests.get(url, timeout=2)
            body = resp.json() if as_json else resp.ok
            if predicate(body):
                return body
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never satisfied the condition; last answer {body}")


def write_windows(folder: Path, start: datetime) -> None:
    """A tiny dataset in the Spark job's output layout (part-*.parquet files)."""
    ts = pa.timestamp("us", tz="UTC")
    starts = [start + timedelta(minutes=m) for m in range(3)]
    veh = folder / "vehicle_windows"
    veh.mkdir(parents=True)
    pq.write_table(pa.table({
        "window_start": pa.array([s for s in starts for _ in range(2)], ts),
        "window_end": pa.array([s + timedelta(minutes=1) for s in starts for _ in range(2)], ts),
        "vehicle_id": ["CAR00000", "CAR00001"] * 3, "samples": pa.array([30] * 6, pa.int64()),
        "avg_speed_kmh": [40.0, 80.0, 42.0, 82.0, 44.0, 84.0], "max_speed_kmh": [50.0] * 6,
        "speeding_count": pa.array([0, 3] * 3, pa.int64()),
        "redline_count": pa.array([0] * 6, pa.int64()),
        "distance_km": [0.5] * 6, "fuel_used_pct": [0.1] * 6,
    }), veh / "part-00000-a.snappy.parquet")
    road = folder / "road_windows"
    road.mkdir(parents=True)
    pq.write_table(pa.table({
        "window_start": pa.array(starts, ts),
        "window_end": pa.array([s + timedelta(minutes=1) for s in starts], ts),
        "road_type": ["urban", "rural", "highway"], "samples": pa.array([30] * 3, pa.int64()),
        "vehicles": pa.array([4] * 3, pa.int64()), "avg_speed_kmh": [40.0, 80.0, 110.0],
        "max_speed_kmh": [60.0, 100.0, 140.0], "speeding_count": pa.array([1] * 3, pa.int64()),
        "redline_count": pa.array([0] * 3, pa.int64()),
    }), road / "part-00000-b.snappy.parquet")


@pytest.fixture
def live_api(kafka_bootstrap: str, topic: str, topic_factory,
             tmp_path: Path) -> Iterator[tuple[ApiServer, list[TelemetryEvent], Path]]:
    analytics = tmp_path / "analytics"
    server = ApiServer(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                       kafka_control_topic=topic_factory("control", 1),
                       kafka_status_topic=topic_factory("status", 1),
                       analytics_output_dir=analytics).start()
    try:
        wait_for(f"{server.url}/health", lambda b: b.get("status") == "ok")
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=2 * STEPS)
        yield server, fleet_events(FLEET, STEPS, start, dt_s=2.0), analytics
    finally:
        server.stop()


def run_app(url: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("FLEETSTREAM_API_URL", url)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def deck_specs(at: AppTest) -> list[dict]:
    return [json.loads(d.proto.json) for d in at.get("deck_gl_json_chart")]


def vega_specs(at: AppTest) -> list[dict]:
    return [json.loads(v.proto.spec) for v in at.get("vega_lite_chart")]


def test_api_down_is_a_message_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        at = run_app(url, monkeypatch)
    errors = [e.value for e in at.error]
    assert f"Cannot reach the web API at `{url}`." in errors
    assert any("Disconnected" in e for e in errors)
    hint = [i.value for i in at.info if "make run" in i.value]
    assert hint and "FLEETSTREAM_API_URL" in hint[0] and "sidebar" not in hint[0]  # read-only
    assert not at.get("deck_gl_json_chart") and not at.get("vega_lite_chart")
    assert at.sidebar.text_input(key="api_url").value == url


def test_api_errors_are_a_message_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """An API that answers 500 on data routes (a stand-in HTTP server: only the app is real)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Failing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            ok = self.path == "/health"
            body = b'{"status": "ok"}' if ok else b'{"error": "store exploded"}'
            self.send_response(200 if ok else 500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        at = run_app(f"http://127.0.0.1:{httpd.server_address[1]}", monkeypatch)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    errors = [e.value for e in at.error]
    assert any("answered with an error" in e and "store exploded" in e for e in errors), errors
    assert any("Analytics unavailable" in w.value for w in at.warning)
    assert not at.get("deck_gl_json_chart")


class Switchable:
    """Stand-in routes (tests/test_hardening_ui.py) of which some can be made to fail."""

    def __init__(self, ids: list[str]) -> None:
        from tests.test_hardening_ui import StandIn, event, hostile_routes
        routes = hostile_routes([event(v, speeding=False) for v in ids])
        routes["/status"] = lambda: (200, {"running": True, "rate_hz": 1.0, "vehicles": 2}, {})
        self.failing: set[str] = set()

        def switch(path: str, answer):  # noqa: ANN001, ANN202
            return lambda: (500, {"error": "store exploded"}, {}) if path in self.failing \
                else answer()
        self.server = StandIn({p: switch(p, a) for p, a in routes.items()})
        self.url = self.server.url


@pytest.fixture
def switchable() -> Iterator[Switchable]:
    api = Switchable(["CAR-A", "CAR-B", "=HYPERLINK(\"http://e.com\")", "@@=("])
    yield api
    api.server.close()


def test_a_failed_vehicle_list_keeps_the_filter_and_follow(
        switchable: Switchable, monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_app(switchable.url, monkeypatch)
    at.sidebar.multiselect(key="vehicle_filter").select("CAR-A").select("CAR-B").run()
    at.sidebar.selectbox(key="follow").select("CAR-B").run()
    assert not [c for c in at.sidebar.caption if "stale" in c.value]
    switchable.failing.add("/vehicles")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.sidebar.multiselect(key="vehicle_filter").value == ["CAR-A", "CAR-B"]
    assert at.sidebar.selectbox(key="follow").value == "CAR-B"
    stale = [c.value for c in at.sidebar.caption if "stale" in c.value]
    assert len(stale) == 1 and "HTTP 500" in stale[0] and " UTC" in stale[0], stale
    switchable.failing.clear()
    at.run()
    assert at.sidebar.multiselect(key="vehicle_filter").value == ["CAR-A", "CAR-B"]
    assert at.sidebar.selectbox(key="follow").value == "CAR-B"
    assert not [c for c in at.sidebar.caption if "stale" in c.value]


def test_a_failed_first_vehicle_list_is_stale_not_a_crash(
        switchable: Switchable, monkeypatch: pytest.MonkeyPatch) -> None:
    switchable.failing.add("/vehicles")
    at = run_app(switchable.url, monkeypatch)
    stale = [c.value for c in at.sidebar.caption if "stale" in c.value]
    assert len(stale) == 1 and "none received yet" in stale[0]
    assert at.sidebar.multiselect(key="vehicle_filter").options == []
    assert at.get("deck_gl_json_chart")  # the live panels do not need the list


@pytest.mark.parametrize("path", ["/telemetry/trails", "/telemetry/recent",
                                  "/telemetry/violations"])
def test_a_failing_auxiliary_call_leaves_the_rest_of_the_live_panel(
        switchable: Switchable, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    switchable.failing.add(path)
    at = run_app(switchable.url, monkeypatch)
    assert not at.error, [e.value for e in at.error]
    spec = deck_specs(at)[0]
    vehicles = next(ly for ly in spec["layers"] if ly["id"] == "vehicles")
    assert len(vehicles["data"]) == 4  # the map, the KPIs and the table are drawn
    assert len(at.dataframe[0].value) == 4 and at.metric
    warning = [w.value for w in at.warning if "Not available in this refresh" in w.value]
    names = {"/telemetry/trails": "trails (HTTP 500)",
             "/telemetry/recent": "recent events (HTTP 500)",
             "/telemetry/violations": "violations (HTTP 500)"}
    assert len(warning) == 1 and names[path] in warning[0], warning


def test_tables_show_and_export_formulas_as_text_and_the_map_as_data(
        switchable: Switchable, monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_app(switchable.url, monkeypatch)
    fleet = at.dataframe[0].value  # what its "Download as CSV" writes
    assert sorted(fleet["vehicle_id"]) == ["'=HYPERLINK(\"http://e.com\")", "'@@=(", "CAR-A",
                                           "CAR-B"]
    spec = deck_specs(at)[0]
    ids = {d["vehicle_id"] for d in next(ly for ly in spec["layers"]
                                         if ly["id"] == "vehicles")["data"]}
    assert ids == {"=HYPERLINK(\"http://e.com\")", "\u200b@@=(", "CAR-A", "CAR-B"}


@pytest.mark.kafka
def test_app_shows_the_live_fleet_from_the_real_api(
        live_api, kafka_bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    server, events, analytics = live_api
    # 1. Empty fleet, no analytics: clear states with hints.
    at = run_app(server.url, monkeypatch)
    infos = " ".join(i.value for i in at.info)
    assert "No vehicles are reporting yet" in infos and "make run" in infos
    assert "make analytics" in infos

    # 2. Live data: events through the real broker into the real API.
    publish(kafka_bootstrap, topic, events)
    wait_for(f"{server.url}/stats", lambda b: b.get("vehicles_reporting") == FLEET)
    wait_for(f"{server.url}/telemetry/recent?limit=2000",
             lambda b: len(b["items"]) == FLEET * STEPS)
    write_windows(analytics, events[0].timestamp)
    at = run_app(server.url, monkeypatch)
    assert not at.error, [e.value for e in at.error]

    latest = {e.vehicle_id: e for e in events}  # events are oldest first
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Vehicles reporting"] == str(FLEET)
    assert metrics["Low fuel"] == str(sum(e.fuel_level_pct <= 15 for e in latest.values()))
    assert metrics["Active fault codes"] == str(sum(len(e.fault_codes) for e in latest.values()))
    n_viol = sum(e.speeding or e.rpm_over_redline for e in events)
    assert metrics["Violations (5 min)"] == str(n_viol)

    (deck,) = deck_specs(at)
    layers = {layer["id"]: layer for layer in deck["layers"]}
    assert [layer["@@type"] for layer in deck["layers"]] == [
        "HeatmapLayer", "PathLayer", "ScatterplotLayer", "ScatterplotLayer"]
    assert deck["mapStyle"].startswith("data:")  # no tiles from the internet
    vehicles = {p["vehicle_id"]: p for p in layers["vehicles"]["data"]}
    assert set(vehicles) == set(latest)
    for vid, e in latest.items():
        assert (vehicles[vid]["lat"], vehicles[vid]["lon"]) == (e.location.lat, e.location.lon)
    assert len(layers["violations"]["data"]) == n_viol
    assert len(layers["heatmap"]["data"]) == FLEET * STEPS
    assert {p["vehicle_id"] for p in layers["trails"]["data"]} == set(latest)

    specs = vega_specs(at)
    titles = [s.get("title") for s in specs]
    for title in ("Speed (dashed: speed limit)", "Engine RPM (redline 6200)",
                  "Speed distribution by road type", "Violations over time", "Fuel level",
                  "Average speed per window by road type"):
        assert title in titles, titles
    speed = specs[titles.index("Speed (dashed: speed limit)")]
    assert [layer["encoding"]["y"]["field"] for layer in speed["layer"]] == [
        "speed_kmh", "speed_limit_kmh"]

    frames = [df.value for df in at.dataframe]
    fleet = frames[0]
    assert sorted(fleet["vehicle_id"]) == sorted(latest)
    assert fleet.loc[fleet["vehicle_id"] == "CAR00003", "state"].item() == "speeding"
    viol = frames[1]
    assert len(viol) == n_viol and viol["timestamp"].is_monotonic_decreasing
    assert any(len(df) == 3 and "road_type" in df.columns for df in frames)  # analytics
    (download,) = at.get("download_button")
    assert download.proto.label == "Download violations (CSV)"

    # 3. Follow one vehicle: the view centres on it, charts narrow to it first.
    at.sidebar.selectbox(key="follow").select("CAR00005").run()
    assert not at.exception
    (deck,) = deck_specs(at)
    e = latest["CAR00005"]
    view = deck["initialViewState"]
    assert (view["latitude"], view["longitude"], view["zoom"]) == (
        e.location.lat, e.location.lon, 14.0)
    assert any("following ` CAR00005 `" in m.value for m in at.markdown)
    assert any(f"gear {e.gear}" in c.value and f"limit {e.speed_limit_kmh}" in c.value
               for c in at.caption)

    # 4. A second refresh keeps deltas against the previous one in session state.
    at.run()
    assert all(m.proto.delta in ("0", "0.0", "") for m in at.metric
               if m.label in ("Vehicles reporting", "Low fuel"))


@pytest.mark.kafka
def test_start_without_a_producer_is_a_clear_message(
        live_api, monkeypatch: pytest.MonkeyPatch) -> None:
    server, _, _ = live_api
    at = run_app(server.url, monkeypatch)
    at.sidebar.button[0].click().run()  # Start; no producer listens on the control topic
    assert not at.exception
    errors = " ".join(e.value for e in at.sidebar.error)
    assert "503" in errors and "make run" in errors


class LivePublisher(threading.Thread):
    """Publishes each event once the wall clock reaches its timestamp: a live feed."""

    def __init__(self, bootstrap: str, topic: str, events: list[TelemetryEvent]) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.events = bootstrap, topic, events
        self._stop_flag = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._feed())
        except BaseException as exc:  # reported by stop()
            self.error = exc

    async def _feed(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            pending = list(self.events)
            while pending and not self._stop_flag.is_set():
                now = datetime.now(UTC)
                due = [e for e in pending if e.timestamp <= now]
                pending = pending[len(due):]
                for e in due:
                    await producer.send(self.topic, key=e.vehicle_id.encode(),
                                        value=e.model_dump_json().encode())
                await producer.flush()
                await asyncio.sleep(0.25)
        finally:
            await producer.stop()

    def stop(self) -> None:
        self._stop_flag.set()
        self.join(30)
        if self.error is not None:
            raise self.error


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--enable-unsafe-swiftshader"]


@pytest.fixture
def streamlit_server(live_api, kafka_bootstrap: str, topic: str, tmp_path: Path):
    """`streamlit run ui/app.py` against the live test API, with the fleet's events in it."""
    import os
    import subprocess
    import sys

    server, _, analytics = live_api
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=STEPS)
    write_windows(analytics, start)
    events = fleet_events(FLEET, STEPS + 120, start, dt_s=1.0)
    feeder = LivePublisher(kafka_bootstrap, topic, events)
    feeder.start()
    wait_for(f"{server.url}/stats", lambda b: b.get("vehicles_reporting") == FLEET)
    port = free_port()
    env = {**os.environ, "FLEETSTREAM_API_URL": server.url, "FLEETSTREAM_UI_REFRESH_S": "2",
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "HOME": str(tmp_path)}
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "ui/app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port)],
        cwd=Path(APP).parent.parent, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(f"http://127.0.0.1:{port}/_stcore/health", bool, as_json=False)
        yield f"http://127.0.0.1:{port}", events
    finally:
        feeder.stop()
        stop_process(proc)
        log.close()


@pytest.mark.kafka
@pytest.mark.browser
def test_browser_screenshot_of_the_live_dashboard(streamlit_server, output_dir: Path) -> None:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    url, _ = streamlit_server
    outside: list[str] = []
    shot = output_dir / "ui-dashboard.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 2900})
            page.on("request", lambda r: outside.append(r.url)
                    if not r.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:",
                                             "blob:")) else None)
            page.goto(url)
            page.wait_for_selector("[data-testid='stMetric']", timeout=90_000)
            page.wait_for_selector("[data-testid='stDeckGlJsonChart'] canvas", timeout=60_000)
            page.wait_for_selector("[data-testid='stVegaLiteChart'] canvas, "
                                   "[data-testid='stVegaLiteChart'] svg", timeout=60_000)
            metrics = page.locator("[data-testid='stMetric']").all_inner_texts()
            assert any(t.startswith("Vehicles reporting") and f"\n{FLEET}\n" in f"{t}\n"
                       for t in metrics), metrics
            # The live fragment refreshes by itself (no page reload): its caption changes.
            caption = page.get_by_text("Updated ", exact=False).first
            first = caption.inner_text()
            page.wait_for_function(
                "t => [...document.querySelectorAll('p')].some("
                "p => p.innerText.startsWith('Updated ') && p.innerText !== t)",
                arg=first, timeout=30_000)
            # Pause (a user control): live panels stop re-running, the page settles.
            # force: the live page never stands still long enough for "stable" checks
            page.get_by_text("Pause live updates", exact=True).click(force=True)
            page.wait_for_timeout(1000)
            page.wait_for_selector("[data-testid='stStatusWidget'] button", state="detached",
                                   timeout=30_000)
            page.wait_for_timeout(2000)  # let deck.gl and vega finish drawing
            page.screenshot(path=str(shot), full_page=True)
            map_png = output_dir / "ui-map.png"
            page.locator("[data-testid='stDeckGlJsonChart']").first.screenshot(path=str(map_png))
        finally:
            browser.close()
    print(f"screenshot: {shot}")
    assert outside == [], f"the page fetched from the internet: {outside}"
    # The map drew something: the state colours of the vehicles are on the canvas.
    with Image.open(map_png) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 50, "the map looks blank"
