"""Issue 11 in a real browser: the Streamlit map reads as a city offline, a click follows a
car, and a recorded range replays.

The real stack: the session broker, the real producer (``python -m producer``, which
publishes its road network and drives the fleet on it), the web API in this process and
``streamlit run ui/app.py``; Debian's headless Chromium through Playwright, with every request
off 127.0.0.1 recorded (there must be none). Screenshots: test-output/ui-network.png and
test-output/ui-replay.png.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from tests.support.processes import stop_process
from tests.support.webapi import start_producer, stop_producer
from tests.test_ui_app import CHROMIUM_ARGS, ApiServer, wait_for
from tools.kafka import free_port
from ui.basemap import ROAD_STYLE

pytestmark = [pytest.mark.kafka, pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FLEET = 6


@pytest.fixture
def real_stack(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path):
    topics = SimpleNamespace(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                             kafka_control_topic=topic_factory("control", 1),
                             kafka_status_topic=topic_factory("status", 1),
                             kafka_network_topic=f"network-{uuid.uuid4().hex[:12]}",
                             api_token=None)
    server = ApiServer(**vars(topics), analytics_output_dir=tmp_path / "analytics").start()
    producer = start_producer(topics, tmp_path / "producer.log",  # type: ignore[arg-type]
                              fleet_size=FLEET, rate_hz=2.0, autostart=True)
    proc = log = None
    try:
        wait_for(f"{server.url}/network", lambda b: b.get("type") == "FeatureCollection",
                 timeout=90)
        wait_for(f"{server.url}/stats", lambda b: b.get("vehicles_reporting") == FLEET,
                 timeout=90)
        port = free_port()
        env = {**os.environ, "FLEETSTREAM_API_URL": server.url,
               "FLEETSTREAM_UI_REFRESH_S": "2", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
               "HOME": str(tmp_path)}
        log = (tmp_path / "streamlit.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "ui/app.py", "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(f"http://127.0.0.1:{port}/_stcore/health", bool, as_json=False)
        yield server.url, f"http://127.0.0.1:{port}"
    finally:
        if proc is not None:
            stop_process(proc)
        if log is not None:
            log.close()
        stop_producer(producer)
        server.stop()


def near(rgb: tuple[int, ...], target: tuple[int, ...], tol: int = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(rgb[:3], target[:3], strict=True))


def count_near(png: Path, target: tuple[int, ...], tol: int = 40) -> int:
    with Image.open(png) as im:
        colours = im.convert("RGB").getcolors(maxcolors=2_000_000) or []
    return sum(n for n, c in colours if near(c, target, tol))


def settle(page) -> None:
    page.wait_for_selector("[data-testid='stStatusWidget'] button", state="detached",
                           timeout=30_000)
    page.wait_for_timeout(2500)  # deck.gl draws after the element appears


def test_roads_selection_and_replay_in_chromium(real_stack, output_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    _, ui_url = real_stack
    outside: list[str] = []
    shot, replay_shot = output_dir / "ui-network.png", output_dir / "ui-replay.png"
    map_png = output_dir / "ui-network-map.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1400})
            page.on("request", lambda r: outside.append(r.url)
                    if not r.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:",
                                             "blob:")) else None)
            page.goto(ui_url)
            page.wait_for_selector("[data-testid='stMetric']", timeout=90_000)
            page.wait_for_selector("[data-testid='stDeckGlJsonChart'] canvas", timeout=60_000)
            page.get_by_text("Pause live updates", exact=True).click(force=True)
            settle(page)
            page.screenshot(path=str(shot), full_page=True)
            deck = page.locator("[data-testid='stDeckGlJsonChart']").first
            deck.screenshot(path=str(map_png))
            # 1. The road layer is drawn: the highway amber and the street grey are on the map.
            amber = count_near(map_png, ROAD_STYLE["highway"][0])
            grey = count_near(map_png, ROAD_STYLE["urban"][0], 25)
            assert amber > 200 and grey > 200, (amber, grey)

            # 2. Roads off: the amber goes (it is the road layer, not something else).
            page.get_by_text("Roads", exact=True).click(force=True)
            settle(page)
            deck.screenshot(path=str(output_dir / "ui-network-off.png"))
            assert count_near(output_dir / "ui-network-off.png",
                              ROAD_STYLE["highway"][0]) < amber / 10
            page.get_by_text("Roads", exact=True).click(force=True)
            settle(page)

            # 3. Click a car: find a vehicle-coloured pixel (moving cyan or stopped grey... any
            # state colour) and click it; the map then follows that car.
            deck.screenshot(path=str(map_png))
            box = deck.bounding_box()
            spot = vehicle_pixel(map_png)
            if spot is not None and box is not None:
                page.mouse.click(box["x"] + spot[0], box["y"] + spot[1])
                page.get_by_text("Clear selection").wait_for(timeout=30_000)
                assert page.get_by_text("following", exact=False).count() >= 1
                page.get_by_text("Clear selection").click()
                page.get_by_text("fitting the fleet", exact=False).wait_for(timeout=30_000)
            else:
                pytest.fail("no vehicle drawn on the map to click")

            # 4. Replay the last 10 minutes (the producer's recording) and play it.
            page.get_by_text("Replay", exact=True).first.click()
            page.get_by_role("button", name="Load range").click()
            slider = page.locator("[data-testid='stSlider']").filter(has_text="Replay time")
            slider.wait_for(timeout=60_000)
            heading = page.locator("h5").filter(has_text="Replay · ").first
            heading.wait_for(timeout=30_000)
            first = heading.inner_text()
            assert "· 0 vehicles" not in first, first  # playback starts at the first event
            page.get_by_role("button", name="Play").click()
            page.wait_for_function(
                "t => [...document.querySelectorAll('h5')].some("
                "h => h.innerText.startsWith('Replay · ') && h.innerText !== t)",
                arg=first, timeout=30_000)
            page.get_by_role("button", name="Pause").click()
            settle(page)
            page.screenshot(path=str(replay_shot), full_page=True)
        finally:
            browser.close()
    assert outside == [], f"the page fetched from the internet: {outside}"
    assert count_near(replay_shot, ROAD_STYLE["highway"][0]) > 200  # same layers in replay


def vehicle_pixel(png: Path) -> tuple[int, int] | None:
    """Where a car is drawn: the centre of the biggest blob of a vehicle state colour."""
    from ui.palette import STATE_COLORS

    with Image.open(png) as im:
        rgb = im.convert("RGB")
        w, h = rgb.size
        px = rgb.load()
        for colour in (STATE_COLORS["moving"], STATE_COLORS["stopped"],
                       STATE_COLORS["speeding"], STATE_COLORS["fault"]):
            hits = [(x, y) for y in range(20, h - 20, 2) for x in range(20, w - 20, 2)
                    if near(px[x, y], colour, 18)]
            if len(hits) >= 4:
                xs, ys = sorted(p[0] for p in hits), sorted(p[1] for p in hits)
                cx, cy = xs[len(xs) // 2], ys[len(ys) // 2]
                best = min(hits, key=lambda p: (p[0] - cx) ** 2 + (p[1] - cy) ** 2)
                return best
    return None
