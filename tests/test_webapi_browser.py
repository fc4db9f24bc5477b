"""The legacy /dashboard in headless Debian Chromium, fed by the real producer daemon."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from common.contract import CSV_COLUMNS
from tests.support.webapi import (
    control_settings,
    running_app,
    start_producer,
    stop_producer,
    wait_for,
)
from webapi.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def settings(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path) -> Settings:
    return control_settings(kafka_bootstrap, topic, topic_factory, tmp_path)


async def wait_text(page, selector: str, predicate, timeout: float = 60.0) -> str:
    """Poll an element's text (no page-side eval: the page's CSP forbids it)."""
    async def check():
        text = await page.text_content(selector)
        return text if text is not None and predicate(text) else None

    return await wait_for(check, timeout=timeout, interval=0.2)


async def test_dashboard_live_map_controls_and_export(settings: Settings, tmp_path: Path,
                                                      output_dir: Path) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    proc = start_producer(settings, tmp_path / "producer.log", fleet_size=6, rate_hz=4.0,
                          autostart=True)
    try:
        async with running_app(settings) as client, playwright_api.async_playwright() as pw:
            base = str(client.make_url("/"))
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1440, "height": 960},
                                              accept_downloads=True)
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(base + "dashboard?token=tok")
                assert "token=" not in page.url  # taken into storage, out of the address bar

                # markers and the followed vehicle's trail appear as events flow
                await wait_text(page, "#marker-count", lambda t: int(t) >= 6)
                await wait_text(page, "#trail-count", lambda t: int(t) >= 3)
                assert (await page.text_content("#stat-speed")) != "—"
                await page.wait_for_selector("#conn[data-state=open]")

                await page.click("#stop")
                await wait_text(page, "#message", lambda t: "stopped" in t)
                await page.wait_for_selector("#producer[data-state=stopped]", timeout=15_000)
                await page.fill("#rate", "5")
                await page.click("#start")
                await wait_text(page, "#message", lambda t: "started at 5" in t)
                await page.wait_for_selector("#producer[data-state=running]", timeout=15_000)

                async with page.expect_download() as info:
                    await page.click("#export")
                download = await info.value
                saved = tmp_path / "export.csv"
                await download.save_as(saved)
                rows = list(csv.reader(io.StringIO(saved.read_text())))
                assert tuple(rows[0]) == CSV_COLUMNS and len(rows) > 10

                # follow another vehicle with the picker: the map zooms to it, its trail grows
                await page.select_option("#vehicle-picker", index=1)
                picked = await page.input_value("#vehicle-picker")
                await wait_text(page, "#stat-vehicle", lambda t: t == picked)
                await wait_text(page, "#trail-count", lambda t: int(t) >= 8)
                await page.wait_for_timeout(1500)
                await page.screenshot(path=str(output_dir / "webapi-dashboard.png"),
                                      full_page=True)
                assert errors == []
            finally:
                await browser.close()
    finally:
        stop_producer(proc)
