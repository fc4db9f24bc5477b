"""Pure tests of the palette, frames and pydeck builders (no Streamlit, no network)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html.parser import HTMLParser
from urllib.parse import unquote

import pandas as pd
import pydeck as pdk
import pytest

from tests.support.synthetic import as_items, fleet_events, trail_items
from ui import maps
from ui.frames import events_frame, trails_frame
from ui.palette import (
    SPEED_BAND_COLORS,
    STATE_COLORS,
    VIOLATION_COLOR,
    speed_band,
    speed_color,
)

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)
GREEN, BLUE, YELLOW, ORANGE, RED = (list(c) for c in SPEED_BAND_COLORS)


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return events_frame(as_items(fleet_events(18, 20, T0)))


@pytest.fixture(scope="module")
def latest(events: pd.DataFrame) -> pd.DataFrame:
    return events.groupby("vehicle_id").tail(1).reset_index(drop=True)


@pytest.mark.parametrize(("speed", "color"), [
    (0, GREEN), (29.9, GREEN), (30, BLUE), (59.9, BLUE), (60, YELLOW), (89.9, YELLOW),
    (90, ORANGE), (119.9, ORANGE), (120, RED), (250, RED),
])
def test_speed_palette_is_the_legacy_bands(speed: float, color: list[int]) -> None:
    assert speed_color(speed) == color
    assert GREEN == [34, 197, 94] and RED == [239, 68, 68]
    assert speed_band(speed) == [GREEN, BLUE, YELLOW, ORANGE, RED].index(color)


def test_events_frame_flattens_and_derives(events: pd.DataFrame) -> None:
    assert len(events) == 18 * 20
    assert str(events["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert {"lat", "lon", "faults", "state", "speed_band"} <= set(events.columns)
    assert "location" not in events.columns
    states = set(events["state"])
    assert states == {"speeding", "over redline", "fault", "low fuel", "stopped", "moving"}
    speeding = events[events["speeding"]]
    assert (speeding["state"] == "speeding").all()
    assert set(events.loc[events["faults"] != "", "faults"]) == {"P0300"}
    empty = events_frame([])
    assert empty.empty and list(empty.columns) == list(events.columns)


def test_vehicle_layer_colours_points_by_state_with_tooltips(latest: pd.DataFrame) -> None:
    layer = maps.vehicle_layer(latest, follow="CAR00003")
    assert layer.type == "ScatterplotLayer" and layer.id == "vehicles" and layer.pickable
    data = pd.DataFrame(layer.data)
    assert list(data["vehicle_id"]) == list(latest["vehicle_id"])
    for state, color in zip(latest["state"], data["color"], strict=True):
        assert color == [*STATE_COLORS[state], 235]
    assert data.loc[data["vehicle_id"] == "CAR00003", "radius"].item() == 2.0  # followed
    assert set(data.loc[data["vehicle_id"] != "CAR00003", "radius"]) == {1.0}
    row = latest.iloc[4]  # CAR00004: fault P0300
    tip = data["tip"].iloc[4]
    for part in (row["vehicle_id"], f"speed {row['speed_kmh']:.0f} km/h",
                 f"limit {row['speed_limit_kmh']} km/h", f"gear {row['gear']}",
                 f"fuel {row['fuel_level_pct']:.0f}%", "faults: P0300"):
        assert part in tip


def test_big_fleets_get_one_line_tooltips(latest: pd.DataFrame,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maps, "DETAILED_TIPS_MAX", 5)
    data = pd.DataFrame(maps.vehicle_layer(latest).data)
    row = latest.iloc[3]
    assert data["tip"].iloc[3] == f"{row['vehicle_id']} (speeding) {row['speed_kmh']:.0f} km/h"


def test_trail_layer_is_a_path_layer_coloured_by_speed_band() -> None:
    items = [{"vehicle_id": "A", "points": [
        {"timestamp": f"2026-01-01T08:00:0{i}+00:00", "lat": 48.0 + i / 1000, "lon": 11.0,
         "speed_kmh": s} for i, s in enumerate([10, 20, 45, 50, 130, 95])]}]
    layer = maps.trail_layer(trails_frame(items))
    assert layer.type == "PathLayer" and layer.id == "trails"
    data = pd.DataFrame(layer.data)
    # segments take their start point's band: green, green, blue, blue, red (then end)
    assert list(data["band"]) == [0, 1, 4]
    assert list(data["color"]) == [GREEN, BLUE, RED]
    paths = list(data["path"])
    assert [len(p) for p in paths] == [3, 3, 2]
    for a, b in zip(paths, paths[1:], strict=False):
        assert a[-1] == b[0]  # runs join up: one continuous trail
    assert paths[0][0] == [11.0, 48.0]


def test_trails_of_many_vehicles_stay_separate(events: pd.DataFrame) -> None:
    trails = trails_frame(trail_items(fleet_events(5, 30, T0), points=10))
    assert trails.groupby("vehicle_id").size().tolist() == [10] * 5
    paths = maps.trail_paths(trails)
    assert sorted(set(paths["vehicle_id"])) == [f"CAR{i:05d}" for i in range(5)]
    assert sum(len(p) - 1 for p in paths["path"]) == 5 * 9  # every segment drawn once


def test_heatmap_is_speed_weighted_with_violations_boosted(events: pd.DataFrame) -> None:
    layer = maps.heatmap_layer(events)
    assert layer.type == "HeatmapLayer" and layer.id == "heatmap"
    data = pd.DataFrame(layer.data)
    viol = events["speeding"] | events["rpm_over_redline"]
    assert (data.loc[~viol, "weight"] == events.loc[~viol, "speed_kmh"]).all()
    assert (data.loc[viol, "weight"] == events.loc[viol, "speed_kmh"] * maps.VIOLATION_BOOST).all()


def test_violation_layer_highlights_each_violation(events: pd.DataFrame) -> None:
    viol = events[events["speeding"] | events["rpm_over_redline"]]
    layer = maps.violation_layer(viol)
    assert layer.type == "ScatterplotLayer" and layer.id == "violations"
    data = pd.DataFrame(layer.data)
    assert len(data) == len(viol)
    assert layer.get_line_color == [*VIOLATION_COLOR, 230]
    assert all(t.startswith("VIOLATION ") for t in data["tip"])


def test_view_follows_a_vehicle_or_fits_the_fleet(latest: pd.DataFrame) -> None:
    v = maps.view_state(latest, follow="CAR00002")
    row = latest[latest["vehicle_id"] == "CAR00002"].iloc[0]
    assert (v.latitude, v.longitude, v.zoom) == (row["lat"], row["lon"], maps.FOLLOW_ZOOM)
    fit = maps.view_state(latest)
    assert latest["lat"].min() <= fit.latitude <= latest["lat"].max()
    assert latest["lon"].min() <= fit.longitude <= latest["lon"].max()
    assert 9 <= fit.zoom <= 11
    assert maps.view_state(latest, follow="NOPE").zoom == fit.zoom
    assert maps.view_state(latest.iloc[0:0]) is maps.DEFAULT_VIEW


def test_deck_needs_no_map_tiles(latest: pd.DataFrame, events: pd.DataFrame) -> None:
    deck = maps.fleet_deck([maps.heatmap_layer(events), maps.vehicle_layer(latest)],
                           maps.view_state(latest))
    assert isinstance(deck, pdk.Deck)
    spec = json.loads(deck.to_json())
    # an inline style with no sources: no tiles, no basemap URL, no Mapbox token
    assert spec["mapStyle"].startswith("data:application/json,")
    style = json.loads(unquote(spec["mapStyle"].split(",", 1)[1]))
    assert style["sources"] == {} and [x["type"] for x in style["layers"]] == ["background"]
    assert "http" not in deck.to_json() and "mapboxKey" not in spec
    assert [layer["@@type"] for layer in spec["layers"]] == ["HeatmapLayer", "ScatterplotLayer"]
    assert spec["layers"][1]["data"][0]["vehicle_id"] == "CAR00000"


class _Text(HTMLParser):
    """The text a browser shows, one chunk per run of text between tags."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[str] = []
        self._run = ""

    def handle_data(self, data: str) -> None:
        self._run += data

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self._flush()

    def handle_endtag(self, tag: str) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._run.strip("\xa0 "):
            self.chunks.append(self._run.strip("\xa0 "))
        self._run = ""


def _shown(html: str) -> list[str]:
    parser = _Text()
    parser.feed(html)
    parser.close()
    parser._flush()
    return parser.chunks


def test_legend_lists_states_and_speed_bands() -> None:
    vehicles = ["Vehicles", "speeding", "over redline", "fault", "low fuel", "stopped", "moving"]
    trails = ["Trail km/h", "< 30", "30-60", "60-90", "90-120", ">= 120"]
    heat = ["Heat", "speed-weighted, violations x3"]
    assert _shown(maps.legend_html()) == [*vehicles, *trails, "violation (ring)", *heat]
    assert _shown(maps.legend_html(show_trails=False, show_heat=False)) == [
        *vehicles, "violation (ring)"]


# ---- strings deck.gl's JSON converter would run ----------------------------------------

RUNNABLE = ["@@=(", "@@#x", "@@=[lon, lat]", "@@#GL.ONE", "@@type", "@@"]


def _data_strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _data_strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _data_strings(v)]
    return []


def test_every_data_string_of_every_map_is_inert(latest: pd.DataFrame,
                                                 events: pd.DataFrame) -> None:
    """@deck.gl/json runs a data string starting with @@= (an expression) or @@# (a
    constant): the deck's JSON carries such strings with an invisible mark in front."""
    from common.fleet_events import Geofence
    from ui.trip_map import trip_deck

    ids = RUNNABLE + ["CAR-OK"]
    cars = pd.concat([latest.head(len(ids)).assign(vehicle_id=ids)], ignore_index=True)
    cars["faults"] = ["@@#fault"] * len(cars)
    trails = events.loc[events["vehicle_id"] == events["vehicle_id"].iloc[0]].head(6)
    trails = pd.concat([trails.assign(vehicle_id=v) for v in ids], ignore_index=True)
    fence = Geofence(id="@@=(f", name="@@#name", geometry={"type": "Polygon", "coordinates": [
        [[11.5, 48.1], [11.6, 48.1], [11.6, 48.2], [11.5, 48.1]]]})
    live = maps.fleet_deck([maps.vehicle_layer(cars), maps.trail_layer(trails),
                            maps.violation_layer(cars.assign(speeding=True)),
                            maps.geofence_layer([fence])], maps.DEFAULT_VIEW)
    trip, _, _ = trip_deck({"vehicle_id": "@@=(", "route": [
        {"timestamp": "2026-01-01T08:00:00Z", "lat": 48.1, "lon": 11.5, "speed_kmh": 10},
        {"timestamp": "2026-01-01T08:01:00Z", "lat": 48.2, "lon": 11.6, "speed_kmh": 10}],
        "violation_segments": [{"kind": "@@=(", "started_at": None, "ended_at": None,
                                "points": [[11.5, 48.1], [11.6, 48.2]]}]})
    for deck in (live, trip):
        spec = json.loads(deck.to_json())
        strings = _data_strings([layer["data"] for layer in spec["layers"]])
        assert strings and not [s for s in strings if s.startswith("@@")]
        marked = [s for s in strings if s.startswith(maps.INERT_MARK)]
        assert all(s[1:].startswith("@@") for s in marked)
        # the deck's own props keep their @@ (layer types, accessors)
        assert {layer["@@type"] for layer in spec["layers"]} >= {"PathLayer"}
    spec = json.loads(live.to_json())
    vehicles = spec["layers"][0]
    assert vehicles["getPosition"] == "@@=[lon, lat]"
    assert [d["vehicle_id"] for d in vehicles["data"]] == [
        maps.INERT_MARK + v for v in RUNNABLE] + ["CAR-OK"]
    assert vehicles["data"][0]["tip"].startswith(maps.INERT_MARK + "@@=(  (")
    assert "faults: @@#fault" in vehicles["data"][0]["tip"]  # only a string's start runs
    assert spec["layers"][3]["data"][0]["tip"] == "geofence @@#name\nid @@=(f"
    # the layers themselves keep the data as it is (the table, the selection use it)
    assert live.layers[0].data[0]["vehicle_id"] == "@@=("


def test_a_deck_without_runnable_strings_is_sent_as_it_was(latest: pd.DataFrame) -> None:
    deck = maps.fleet_deck([maps.vehicle_layer(latest)], maps.DEFAULT_VIEW)
    plain = json.dumps(deck, sort_keys=True, separators=(",", ":"),
                       default=maps.default_serialize)
    assert deck.to_json() == plain


@pytest.mark.parametrize(("value", "expect"), [
    ("@@=(", "\u200b@@=("), ("@@", "\u200b@@"), ("a@@", "a@@"), ("@=x", "@=x"),
    (["@@#x", 1, [2.5, "@@=y"]], ["\u200b@@#x", 1, [2.5, "\u200b@@=y"]]),
    ({"k": ("@@#x",)}, {"k": ["\u200b@@#x"]}), (None, None), (3, 3),
])
def test_inert_marks_only_strings_that_start_with_at_at(value: object, expect: object) -> None:
    assert maps.inert(value) == expect


def test_a_picked_vehicle_is_its_own_id_again() -> None:
    from ui.selection import vehicle_in

    def picked(vid: str) -> dict:
        return {"selection": {"objects": {"vehicles": [{"vehicle_id": vid}]}}}

    assert vehicle_in(picked(maps.INERT_MARK + "@@=(")) == "@@=("
    assert vehicle_in(picked("@@#x")) == "@@#x"
    assert vehicle_in(picked(maps.INERT_MARK + "CAR")) == maps.INERT_MARK + "CAR"  # its id
    assert maps.shown(maps.INERT_MARK * 2 + "@@") == maps.INERT_MARK * 2 + "@@"


@pytest.mark.browser
def test_a_runnable_vehicle_id_draws_the_map_in_chromium(tmp_path, output_dir) -> None:
    """Vehicle ids @@=( and @@#x, their trails and violations in headless Chromium: the map
    draws (no deck.gl error box), the tooltip reads the id, and a click follows that car."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    from tests.support.processes import stop_process
    from tests.test_hardening_ui import StandIn, event, hostile_routes, ok
    from tests.test_ui_app import CHROMIUM_ARGS, wait_for
    from tests.test_ui_browser_maps import CHROMIUM, settle, vehicle_pixel
    from tools.kafka import free_port

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    cars = [event("@@=(", location={"lat": 52.2, "lon": 21.0}, speeding=False),
            event("@@#x", location={"lat": 52.2008, "lon": 21.0012}, speeding=True)]
    routes = hostile_routes(cars)
    routes["/telemetry/trails"] = ok({"items": [{"vehicle_id": e["vehicle_id"], "points": [
        {"timestamp": e["timestamp"], "lat": e["location"]["lat"] - 0.0004 * k,
         "lon": e["location"]["lon"], "speed_kmh": 20.0 * k} for k in range(4)]}
        for e in cars]})
    api = StandIn(routes)
    port = free_port()
    env = {**os.environ, "FLEETSTREAM_API_URL": api.url, "FLEETSTREAM_UI_REFRESH_S": "30",
           "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "HOME": str(tmp_path)}
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "ui/app.py", "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port)],
        cwd=Path(__file__).resolve().parent.parent, env=env, stdout=log,
        stderr=subprocess.STDOUT)
    page_errors: list[str] = []
    try:
        wait_for(f"http://127.0.0.1:{port}/_stcore/health", bool, as_json=False)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1400})
                page.on("pageerror", lambda e: page_errors.append(str(e)))
                page.goto(f"http://127.0.0.1:{port}")
                page.wait_for_selector("[data-testid='stMetric']", timeout=90_000)
                deck = page.locator("[data-testid='stDeckGlJsonChart']").first
                deck.locator("canvas").first.wait_for(timeout=60_000)
                page.get_by_text("Pause live updates", exact=True).click(force=True)
                settle(page)
                page.screenshot(path=str(output_dir / "ui-runnable-ids.png"), full_page=True)
                text = deck.inner_text()
                assert "Error" not in text and "convertFunction" not in text, text
                assert page.locator("[data-testid='stException']").count() == 0
                map_png = tmp_path / "map.png"
                deck.screenshot(path=str(map_png))
                spot, box = vehicle_pixel(map_png), deck.bounding_box()
                assert spot is not None and box is not None, "no vehicle drawn"
                page.mouse.move(box["x"] + spot[0], box["y"] + spot[1])
                tip = page.locator(".deck-tooltip").first
                tip.wait_for(timeout=10_000)
                tip_text = tip.inner_text()
                assert tip_text.lstrip("\u200b").startswith(("@@=(  (", "@@#x  (")), tip_text
                page.mouse.click(box["x"] + spot[0], box["y"] + spot[1])
                page.get_by_text("Clear selection").wait_for(timeout=30_000)
                heading = page.get_by_text("Live map · following", exact=False).inner_text()
                assert heading.split("following ")[1].startswith(("@@=(", "@@#x")), heading
                assert "\ufffd" not in heading  # the invisible mark did not come back
            finally:
                browser.close()
    finally:
        stop_process(proc)
        log.close()
        api.close()
    assert not [e for e in page_errors if "@@" in e or "Unclosed" in e], page_errors
