"""The legacy /dashboard in headless Debian Chromium with no network: the road network is
the base layer, a silent car leaves the map, and the Trail / Heatmap / Roads toggles hide and
show their layers and are remembered across a reload. Then the page against a stand-in web
API that answers what a real one may (a car leaving while its last event is on the way,
start-up answers that are not JSON, of another shape, or never come): it keeps rendering and
its stream connects."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from producer.network import publish_network
from producer.sim import load_network
from tests.support.webapi import make_event, publish, running_app, wait_for
from webapi.dashboard import render, static_files
from webapi.keys import NETWORK
from webapi.settings import Settings

pytestmark = [pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
BACKGROUND = (0xF1, 0xF5, 0xF9)  # the map's own background (dashboard.css)


@pytest.fixture
def settings(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path) -> Settings:
    return Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                    kafka_control_topic=topic_factory("control", 1),
                    kafka_status_topic=topic_factory("status", 1),
                    kafka_network_topic=f"network-{uuid.uuid4().hex[:12]}", api_token=None,
                    analytics_output_dir=tmp_path, vehicle_timeout_s=6.0,
                    map_tile_url="https://tile.openstreetmap.org/{z}/{x}/{y}.png")


async def painted(page) -> int:
    """Pixels of the map that are not its background (roads, trail, heat, markers)."""
    from PIL import Image

    shot = await page.locator("#map").screenshot()
    rgb = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=np.int16)
    return int((np.abs(rgb - np.array(BACKGROUND)).max(axis=2) > 12).sum())


async def painted_more_than(page, floor: int, timeout: float = 15.0) -> int:
    """The map's painted pixels once they exceed ``floor`` (0 if they never do in time)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        now = await painted(page)
        if now > floor or asyncio.get_running_loop().time() > deadline:
            return now if now > floor else 0
        await page.wait_for_timeout(300)


async def wait_text(page, selector: str, predicate, timeout: float = 30.0) -> str:
    async def check():
        text = await page.text_content(selector)
        return text if text is not None and predicate(text) else None

    return await wait_for(check, timeout=timeout, interval=0.2)


@pytest.mark.kafka
async def test_dashboard_roads_no_ghosts_and_toggles(settings: Settings,
                                                     output_dir: Path) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    net = load_network(None)
    await publish_network(settings, settings.kafka_network_topic, net)
    lat0, lon0 = float(net.node_lat.mean()), float(net.node_lon.mean())
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.kafka_topic

    async def drive() -> None:  # ALIVE keeps reporting, moving east
        for i in range(10_000):
            t = datetime.now(UTC) - timedelta(milliseconds=1)
            await publish(bootstrap, topic, [make_event(
                "ALIVE", seq=i, timestamp=t, lat=lat0, lon=lon0 + 0.0004 * (i % 20),
                speed_kmh=20.0 + i % 60)])
            await asyncio.sleep(0.3)

    driver = asyncio.create_task(drive())
    try:
        async with running_app(settings) as client, playwright_api.async_playwright() as pw:
            await wait_for(lambda: client.app[NETWORK].current is not None)
            base = str(client.make_url("/"))
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context(viewport={"width": 1440, "height": 960})
                await context.set_offline(False)
                fetched: list[str] = []
                # no internet: anything not served by the web API itself fails
                await context.route("**/*", lambda route: (
                    route.continue_() if route.request.url.startswith(base)
                    else (fetched.append(route.request.url), route.abort())[1]))
                page = await context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(base + "dashboard")
                await wait_text(page, "#network-info", lambda t: "roads" in t)
                # one event from GHOST, then silence (published now: a loaded machine may
                # take longer than the timeout to start the page)
                await publish(bootstrap, topic, [make_event("GHOST", lat=lat0 + 0.002,
                                                            lon=lon0)])
                await wait_text(page, "#marker-count", lambda t: t == "2")
                # the silent car leaves the map after WEBAPI_VEHICLE_TIMEOUT_S
                await wait_text(page, "#marker-count", lambda t: t == "1", timeout=30)
                await wait_text(page, "#fleet-vehicles", lambda t: t == "1")
                await wait_text(page, "#trail-count", lambda t: int(t) >= 3)
                await page.wait_for_timeout(500)
                await page.screenshot(path=str(output_dir / "dashboard-network.png"),
                                      full_page=True)
                assert await page.is_checked("#toggle-roads")
                assert await page.is_checked("#toggle-trail")
                assert await page.is_checked("#toggle-heat")
                if not await page.is_checked("#toggle-tiles"):
                    pass  # offline default may be either; tiles are aborted anyway
                else:
                    await page.uncheck("#toggle-tiles")

                heat = page.locator("canvas.leaflet-heatmap-layer")
                assert await heat.count() == 1
                await page.uncheck("#toggle-heat")
                assert await heat.count() == 0
                await page.uncheck("#toggle-trail")
                await page.wait_for_timeout(400)
                with_roads = await painted(page)
                await page.uncheck("#toggle-roads")
                await page.wait_for_timeout(400)
                bare = await painted(page)
                assert with_roads > 5 * max(bare, 1000), (with_roads, bare)
                await page.check("#toggle-trail")
                # the trail draws again (polled: the car moves on and the map repaints on its
                # own schedule, so one fixed wait was flaky on a loaded machine)
                assert await painted_more_than(page, bare)

                # remembered: after a reload the unchecked layers stay off
                await page.reload()
                await wait_text(page, "#marker-count", lambda t: int(t) >= 1)
                assert not await page.is_checked("#toggle-heat")
                assert not await page.is_checked("#toggle-roads")
                assert await page.is_checked("#toggle-trail")
                assert await heat.count() == 0
                await page.check("#toggle-roads")
                await page.check("#toggle-heat")
                await page.wait_for_timeout(500)
                assert await heat.count() == 1
                assert await painted(page) > 5 * max(bare, 1000)
                assert errors == []
                assert all("tile.openstreetmap.org" in u for u in fetched), fetched
            finally:
                await browser.close()
    finally:
        driver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await driver


# ------------------------------------------------------------------ against a stand-in web API
# The page's own files (webapi.dashboard) behind a small aiohttp app that answers the routes
# the page calls, well or in the odd ways a real deployment can (a proxy's HTML page, an
# array, no answer at all), and drives the stream itself.

LIVE, GONE, SEEDED, SPEEDER = "B-LIVE", "A-GONE", "SEEDED", "SPEEDER"


def fake_event(vid: str, k: int = 0, speed: float = 40.0) -> dict[str, Any]:
    event = {"vehicle_id": vid, "timestamp": datetime.now(UTC).isoformat(),
             "location": {"lat": 48.14 + k * 1e-4, "lon": 11.58 + (0.01 if vid == GONE else 0)},
             "speed_kmh": speed, "engine_rpm": 2000 + 10 * (k % 100), "gear": 3,
             "fuel_level_pct": 50.0, "fault_codes": [], "road_type": "urban",
             "speed_limit_kmh": 50, "speeding": speed > 55, "rpm_over_redline": False, "seq": k}
    if vid.endswith("PARKED"):  # as the producer reports a parked car, once a minute
        event.update(speed_kmh=0.0, engine_rpm=0, gear=0, ignition=False)
    return event


@dataclass
class FakeApi:
    """``broken``: route -> how it answers instead ("nonjson": a 200 HTML page, "array":
    ``[1,2,3]``, "items-string": ``{"items": "B-LIVE"}``, "hang": never, until released).
    ``race``: /vehicles call number -> a car whose event goes out on the stream just before
    that answer, which no longer lists it. ``odd_frames``: sent on each stream first."""

    snapshot: list[str]
    vehicles: list[str]
    broken: dict[str, str] = field(default_factory=dict)
    race: dict[int, str] = field(default_factory=dict)
    odd_frames: list[str] = field(default_factory=list)
    latest: list[str] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    answered: dict[str, int] = field(default_factory=dict)
    streams: list[asyncio.Queue[str]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        page, csp = render(Settings(map_tile_url=""))

        async def dashboard(request: web.Request) -> web.Response:
            return web.Response(text=page, content_type="text/html",
                                headers={"Content-Security-Policy": csp})

        def route(path: str, good) -> web.RouteDef:
            async def handler(request: web.Request) -> web.StreamResponse:
                self.calls[path] = n = self.calls.get(path, 0) + 1
                mode = self.broken.get(path)
                if mode == "hang":
                    await self.release.wait()
                    return web.json_response({"error": "released"}, status=503)
                if mode == "slow":  # past the page's first 8 s, within its second try's 16 s
                    await asyncio.sleep(9)
                self.answered[path] = self.answered.get(path, 0) + 1
                if mode == "nonjson":
                    return web.Response(text="<html>502 from a proxy</html>",
                                        content_type="text/html")
                if mode == "array":
                    return web.json_response([1, 2, 3])
                if mode == "items-string":
                    return web.json_response({"items": LIVE})
                return web.json_response(await good(request, n))
            return web.get(path, handler)

        async def vehicles(request: web.Request, n: int) -> dict[str, Any]:
            if n in self.race:
                vid = self.race[n]
                self.vehicles = [v for v in self.vehicles if v != vid]
                for q in self.streams:
                    q.put_nowait(json.dumps({"type": "batch", "items": [fake_event(vid)]}))
                await asyncio.sleep(0.02)  # the event reaches the page first
            return {"items": list(self.vehicles)}

        async def status(request: web.Request, n: int) -> dict[str, Any]:
            return {"running": True, "rate_hz": 10.0, "vehicles": len(self.vehicles)}

        async def stats(request: web.Request, n: int) -> dict[str, Any]:
            return {"vehicles_reporting": len(self.vehicles), "events_per_s": 10.0,
                    "consumed_total": 100 * n, "violations_total": 1, "malformed_total": 0}

        async def latest(request: web.Request, n: int) -> dict[str, Any]:
            return {"items": [fake_event(v) for v in self.latest]}

        async def violations(request: web.Request, n: int) -> dict[str, Any]:
            return {"items": [fake_event(SPEEDER, speed=90.0)]}

        async def trails(request: web.Request, n: int) -> dict[str, Any]:
            vid = request.query.get("vehicle_id", "")
            return {"items": [{"vehicle_id": vid, "points": [
                {"lat": 48.139 + k * 1e-4, "lon": 11.58, "speed_kmh": 30.0 + k,
                 "timestamp": datetime.now(UTC).isoformat()} for k in range(5)]}]}

        async def recent(request: web.Request, n: int) -> dict[str, Any]:
            return {"items": [fake_event(request.query.get("vehicle_id", LIVE))]}

        async def network(request: web.Request, n: int) -> dict[str, Any]:
            return {"type": "FeatureCollection", "features": [], "name": "none",
                    "road_km": 0.0}

        async def stream(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            queue: asyncio.Queue[str] = asyncio.Queue()
            self.streams.append(queue)
            try:
                for frame in self.odd_frames:
                    await ws.send_str(frame)
                await ws.send_str(json.dumps({"type": "snapshot", "items": [
                    fake_event(v) for v in self.snapshot]}))
                k = 0
                while not ws.closed:
                    with contextlib.suppress(TimeoutError):
                        await ws.send_str(await asyncio.wait_for(queue.get(), 0.1))
                    k += 1  # within the limit: the violations table is the start-up data's
                    await ws.send_str(json.dumps({"type": "batch", "items": [
                        fake_event(LIVE, k, speed=float(20 + k % 30))]}))
            finally:
                self.streams.remove(queue)
            return ws

        async def alerts(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            for frame in self.odd_frames:
                await ws.send_str(frame)
            await ws.send_str(json.dumps({"type": "snapshot", "items": self.alerts}))
            async for _ in ws:
                pass
            return ws

        app = web.Application()
        app.add_routes([web.get("/dashboard", dashboard), static_files(),
                        web.get("/ws", stream), web.get("/ws/events", alerts),
                        route("/vehicles", vehicles), route("/status", status),
                        route("/stats", stats), route("/telemetry/latest", latest),
                        route("/telemetry/violations", violations),
                        route("/telemetry/trails", trails), route("/telemetry/recent", recent),
                        route("/network", network)])
        return app


@contextlib.asynccontextmanager
async def fake_dashboard(api: FakeApi) -> AsyncIterator[tuple[Any, list[str]]]:
    """The page in Chromium against ``api``; yields it and the errors it reported (uncaught
    exceptions, unhandled rejections and console errors)."""
    playwright_api = pytest.importorskip("playwright.async_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    async with TestServer(api.app(), host="127.0.0.1") as server:
        try:
            async with playwright_api.async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page(viewport={"width": 1280, "height": 900})
                    errors: list[str] = []
                    page.on("pageerror", lambda exc: errors.append(str(exc)))
                    page.on("console", lambda m: errors.append(m.text)
                            if m.type == "error" else None)
                    await page.goto(str(server.make_url("/dashboard")))
                    yield page, errors
                finally:
                    await browser.close()
        finally:
            api.release.set()


async def picker_ids(page) -> list[str]:
    return await page.eval_on_selector_all("#vehicle-picker option", "os => os.map(o => o.value)")


async def picker_is(page, ids: list[str]) -> bool:
    return await picker_ids(page) == ids


async def status_line_without(page, *sources: str) -> bool:
    line = await page.text_content("#data-status") or ""
    return not any(s in line for s in sources)


async def keeps_updating(page, times: int = 3) -> None:
    """The followed car's position changes on screen, again and again."""
    for _ in range(times):
        before = await page.text_content("#stat-pos")
        await wait_text(page, "#stat-pos", lambda t, b=before: t != b, timeout=15)


async def test_dashboard_survives_a_car_leaving_while_its_event_is_on_the_way(
        output_dir: Path) -> None:
    # A-GONE's last event reaches the page while the /vehicles answer computed without it
    # is on its way (three polls in a row); the old page threw in every frame from then on.
    api = FakeApi(snapshot=[GONE, LIVE], vehicles=[GONE, LIVE],
                  race={2: GONE, 3: GONE, 4: GONE})
    async with fake_dashboard(api) as (page, errors):
        await page.wait_for_selector("#conn[data-state=open]")
        await wait_for(lambda: api.calls.get("/vehicles", 0) >= 6, timeout=60)
        await wait_text(page, "#marker-count", lambda t: t == "1")
        await wait_for(lambda: picker_is(page, [LIVE]), timeout=15)
        # the followed car left: the page follows the one still reporting
        await wait_text(page, "#stat-vehicle", lambda t: t == LIVE)
        await page.select_option("#vehicle-picker", LIVE)
        await wait_text(page, "#chart-vehicle", lambda t: t == LIVE)
        await keeps_updating(page)
        await wait_text(page, "#trail-count", lambda t: int(t) >= 10)
        assert await page.is_hidden("#data-status"), await page.text_content("#data-status")
        assert await page.is_hidden("#token-box")  # shown only once a token is needed or given
        await page.screenshot(path=str(output_dir / "dashboard-ghost-race.png"))
        assert errors == []


async def test_dashboard_waits_longer_for_a_slow_answer_each_time_it_asks_again(
        output_dir: Path) -> None:
    # /telemetry/violations answers in 9 s every time (a big fleet on a busy server): the page
    # gave up after 8 s on every try, for ever; each try now waits twice as long as the last
    api = FakeApi(snapshot=[LIVE], vehicles=[LIVE], broken={"/telemetry/violations": "slow"})
    async with fake_dashboard(api) as (page, errors):
        await page.wait_for_selector("#conn[data-state=open]")
        await wait_text(page, "#data-status", lambda t: "no answer in 8 s" in t, timeout=15)
        await wait_text(page, "#violations tbody", lambda t: SPEEDER in t, timeout=30)
        assert api.calls["/telemetry/violations"] == 2
        await wait_for(lambda: status_line_without(page, "/telemetry/violations"))
        assert errors == []


PARKED = "A-PARKED"


async def _has_two(items) -> bool:
    return len(await items) == 2


async def test_dashboard_follows_a_car_that_drives_until_the_user_picks_one(
        output_dir: Path) -> None:
    # the first car by id is parked (ignition off, speed 0): the page used to follow it, and a
    # new visitor saw a flat chart; a car the user picks is kept, parked or not
    now = datetime.now(UTC)
    alerts = [{"kind": "alert", "event_id": f"{i:08d}-0000-4000-8000-000000000000",
               "time": at.isoformat(), "vehicle_id": vid, "rule_id": "r1", "message": "m"}
              for i, (at, vid) in enumerate([(now - timedelta(days=1), PARKED), (now, LIVE)])]
    api = FakeApi(snapshot=[PARKED, LIVE], vehicles=[PARKED, LIVE], latest=[PARKED, LIVE],
                  alerts=alerts)
    async with fake_dashboard(api) as (page, errors):
        await page.wait_for_selector("#conn[data-state=open]")
        await wait_text(page, "#stat-vehicle", lambda t: t == LIVE)
        # an alert of another day shows its date (the strip keeps the last 8, however old)
        async def alert_times() -> list[str]:
            return await page.eval_on_selector_all("#alerts .alert-time",
                                                   "els => els.map(e => e.textContent)")

        await wait_for(lambda: _has_two(alert_times()), timeout=15)
        times = await alert_times()
        yesterday = (now - timedelta(days=1)).strftime("%Y-%m-%d ")
        assert [t.startswith(yesterday) for t in times] == [False, True], times
        await keeps_updating(page)
        await wait_for(lambda: picker_is(page, [PARKED, LIVE]), timeout=15)
        await page.select_option("#vehicle-picker", PARKED)
        await wait_text(page, "#stat-vehicle", lambda t: t == PARKED)
        await page.wait_for_timeout(1500)  # LIVE drives all along: the user's pick stays
        assert await page.text_content("#stat-vehicle") == PARKED
        assert await page.text_content("#stat-speed") == "0.0"
        await page.screenshot(path=str(output_dir / "dashboard-follows-driving.png"))
        assert errors == []


ODD = {"/telemetry/violations": "nonjson", "/telemetry/latest": "array",
       "/vehicles": "items-string", "/status": "array", "/stats": "nonjson",
       "/telemetry/trails": "array", "/telemetry/recent": "nonjson"}
ODD_FRAMES = ["not json", "null", "[1,2,3]", json.dumps({"type": "batch", "items": 5}),
              json.dumps({"type": "snapshot", "items": [{"vehicle_id": "BAD", "location": None},
                                                        7, None]}),
              json.dumps({"type": "event", "data": None})]
HANG = {"/telemetry/violations": "hang", "/telemetry/latest": "hang"}


@pytest.mark.parametrize("case", ["odd-answers", "no-answer"])
async def test_dashboard_connects_whatever_the_start_up_answers(case: str,
                                                                output_dir: Path) -> None:
    # odd-answers: a proxy's HTML page (200) on /telemetry/violations, [1,2,3] on
    # /telemetry/latest, odd bodies on every polled route and odd frames on both streams;
    # no-answer: the two start-up requests never answer. The old page never connected.
    api = FakeApi(snapshot=[LIVE], vehicles=[LIVE, SEEDED], latest=[SEEDED],
                  broken=dict(ODD if case == "odd-answers" else HANG),
                  odd_frames=ODD_FRAMES if case == "odd-answers" else [])
    async with fake_dashboard(api) as (page, errors):
        await page.wait_for_selector("#conn[data-state=open]")
        await wait_text(page, "#marker-count", lambda t: t == "1")
        await keeps_updating(page)
        # each broken source is named in the status line; nothing came from them
        status = await wait_text(page, "#data-status", lambda t: "/telemetry/violations" in t
                                 and "/telemetry/latest" in t)
        assert (api.answered.get("/telemetry/violations", 0) > 0) == (case == "odd-answers")
        assert SPEEDER not in (await page.text_content("#violations tbody") or "")
        if case == "odd-answers":
            assert "not JSON" in status and "/ws (items)" in status, status
            # an odd /vehicles answer removes nobody; the odd polls were answered, and shown
            await wait_for(lambda: api.calls.get("/vehicles", 0) >= 3)
            assert await page.text_content("#marker-count") == "1"
            for source in ("/vehicles", "/status", "/stats"):
                await wait_text(page, "#data-status", lambda t, s=source: s + ":" in t)
        else:
            assert "no answer in" in status, status
        await page.screenshot(path=str(output_dir / f"dashboard-startup-{case}.png"))

        # the routes heal: the start-up data is asked again and shown
        api.broken.clear()
        api.release.set()
        await wait_text(page, "#violations tbody", lambda t: SPEEDER in t, timeout=60)
        await wait_for(lambda: picker_is(page, [LIVE, SEEDED]), timeout=30)
        await wait_text(page, "#fleet-consumed", lambda t: t.isdigit())
        await wait_text(page, "#producer", lambda t: t == "producer: running")
        # the followed car's trail and chart history are asked again too
        await wait_for(lambda: status_line_without(page, "/telemetry/", "/vehicles", "/stat"))
        await keeps_updating(page)
        await page.select_option("#vehicle-picker", SEEDED)
        await wait_text(page, "#stat-vehicle", lambda t: t == SEEDED)
        await wait_text(page, "#trail-count", lambda t: t == "5")  # its history, no live events
        assert errors == []
