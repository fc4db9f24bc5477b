"""Issue 9, item 7 in a real browser: hostile vehicle ids render as inert text on both pages.

Events with hostile ids go through the real broker into the real web API (in this process),
and Debian's Chromium opens the legacy /dashboard and the Streamlit app (`streamlit run`).
A listener on 127.0.0.1 records any fetch of the leak URLs the ids point at, and a dialog
handler records any script the ids manage to run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from common.contract import MAX_VEHICLE_ID_LEN
from tests.support.processes import stop_process
from tests.support.webapi import make_event
from tests.test_ui_app import CHROMIUM_ARGS, ApiServer, publish, wait_for
from tools.kafka import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.browser]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
HOSTILE_FAULTS = ("![](/fault)", "<b>P0300</b>")  # fault codes are at most 16 characters
LEAK_PATHS = ("/html", "/markdown", "/fault")


class LeakListener:
    """An HTTP listener on 127.0.0.1 that records every path fetched from it."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.paths.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"//127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def leak() -> Iterator[LeakListener]:
    listener = LeakListener()
    yield listener
    listener.close()


def hostile_ids(leak: LeakListener) -> dict[str, str]:
    ids = {
        "html": f"<img src={leak.base}/html onerror=alert(1)>",
        "svg": "<svg onload=alert(2)></svg>",
        "markdown": f"![x](http:{leak.base}/markdown)",
        "long": "L" + "W" * (MAX_VEHICLE_ID_LEN - 1),
        "rtl": "\u05e8\u05db\u05d1-\u0661\u0662 car",  # right-to-left script, printable
    }
    assert all(len(v) <= MAX_VEHICLE_ID_LEN for v in ids.values())
    return ids


@pytest.fixture
def hostile_stack(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path,
                  leak: LeakListener):
    """The real API fed hostile ids through the broker, and `streamlit run` reading it."""
    ids = hostile_ids(leak)
    server = ApiServer(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                       kafka_control_topic=topic_factory("control", 1),
                       kafka_status_topic=topic_factory("status", 1),
                       analytics_output_dir=tmp_path / "analytics").start()
    proc = log = None
    try:
        wait_for(f"{server.url}/health", lambda b: b.get("status") == "ok")
        start = datetime.now(UTC) - timedelta(seconds=20)
        events = [make_event(vid, seq=k, timestamp=start + timedelta(seconds=2 * k),
                             speed_kmh=40.0 + 20 * k, lat=52.20 + 0.01 * n + 0.0005 * k,
                             lon=21.00 + 0.01 * n, fault_codes=list(HOSTILE_FAULTS))
                  for k in range(6) for n, vid in enumerate(ids.values())]
        publish(kafka_bootstrap, topic, events)
        # an RTL *override* is no id at all: the API refuses it (counted), nothing shows it
        override = make_event("CAR_RTL", timestamp=start).model_dump_json().replace(
            "CAR_RTL", "CAR\u202eRTL").encode()
        publish_raw(kafka_bootstrap, topic, override, key="CAR\u202eRTL".encode())
        wait_for(f"{server.url}/vehicles", lambda b: sorted(b["items"]) == sorted(ids.values()))
        port = free_port()
        env = {**os.environ, "FLEETSTREAM_API_URL": server.url, "FLEETSTREAM_UI_REFRESH_S": "30",
               "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "HOME": str(tmp_path)}
        log = (tmp_path / "streamlit.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "ui/app.py", "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(f"http://127.0.0.1:{port}/_stcore/health", bool, as_json=False)
        yield server.url, f"http://127.0.0.1:{port}", ids
    finally:
        if proc is not None:
            stop_process(proc)
        if log is not None:
            log.close()
        server.stop()


def publish_raw(bootstrap: str, topic: str, value: bytes, key: bytes) -> None:
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, key=key, value=value)
        finally:
            await producer.stop()

    asyncio.run(run())


def test_hostile_ids_are_inert_text_on_both_pages(hostile_stack, leak: LeakListener,
                                                  output_dir: Path) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    api_url, ui_url, ids = hostile_stack
    dialogs: list[str] = []
    leaked: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 2400})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("request", lambda r: leaked.append(r.url)
                    if leak.base in r.url or r.url.endswith(LEAK_PATHS) else None)

            # 1. the legacy dashboard: every id is an <option> whose text is the id itself
            page.goto(f"{api_url}/dashboard")
            page.wait_for_function(
                "n => document.querySelectorAll('#vehicle-picker option').length >= n",
                arg=len(ids), timeout=60_000)
            options = page.locator("#vehicle-picker option").all_text_contents()
            assert set(ids.values()) <= set(options), options
            page.select_option("#vehicle-picker", ids["html"])
            page.wait_for_function(
                "t => document.getElementById('stat-vehicle').textContent === t",
                arg=ids["html"], timeout=30_000)
            page.wait_for_timeout(1500)
            assert page.locator("img[src*='/html'], svg[onload]").count() == 0
            page.screenshot(path=str(output_dir / "hardening-dashboard.png"), full_page=True)

            # 2. the Streamlit app: the chart heading names the ids, as text
            page.goto(ui_url)
            page.wait_for_selector("[data-testid='stMetric']", timeout=90_000)
            heading = page.locator("h5").filter(has_text="LWWW").first
            heading.wait_for(timeout=60_000)
            text = heading.inner_text()
            for name in ("html", "svg", "markdown", "long"):
                assert ids[name] in text, (name, text)
            # follow the Markdown-image id: the map heading and caption name it, as text
            page.get_by_text("Pause live updates", exact=True).click(force=True)
            main = page.locator("[data-testid='stMain']")
            body = main.inner_text()
            assert "\u202e" not in body and "\u202e" not in page.content()
            assert main.locator("img[src*='/markdown'], img[src*='/fault'], img[src*='/html'], "
                                "a[href*='/markdown'], a[href*='/fault']").count() == 0
            page.wait_for_timeout(3000)  # anything lazy would have fetched by now
            page.screenshot(path=str(output_dir / "hardening-streamlit.png"), full_page=True)
        finally:
            browser.close()
    assert dialogs == [], f"a hostile id ran script: {dialogs}"
    assert leaked == [] and leak.paths == [], f"fetched: {leaked} {leak.paths}"
    stats = requests.get(f"{api_url}/stats", timeout=5).json()
    assert stats["vehicles_reporting"] == len(ids) and stats["malformed_total"] >= 1
