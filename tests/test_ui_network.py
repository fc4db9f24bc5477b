"""Issue 11 in the Streamlit app: the road network basemap, no ghosts, click-to-select, scale.

Pure builder tests on the producer's real built-in network; AppTest runs against the real web
API (in this process) fed through the real broker, as tests/test_ui_app.py does.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from streamlit.testing.v1 import AppTest

from producer.network import network_geojson, network_record
from producer.sim import load_network
from tests.support.webapi import make_event
from tests.test_ui_app import ApiServer, publish, wait_for
from ui import maps
from ui.api import ApiClient
from ui.basemap import POINT_LAYER_ID, ROAD_LAYER_ID, ROAD_STYLE, parse_network, road_layers
from ui.selection import vehicle_in
from ui.snapshot import ViewOptions, fetch_snapshot

APP = str(Path(__file__).resolve().parent.parent / "ui" / "app.py")
WARSAW = (52.23, 21.01)


def test_network_becomes_roads_styled_by_class_and_light_dots() -> None:
    doc = network_geojson(load_network(None))
    base = parse_network(doc)
    roads = [f for f in doc["features"] if f["properties"]["feature"] == "road"]
    lights = [f for f in doc["features"] if f["properties"]["feature"] == "light"]
    assert len(base.roads) == len(roads) > 0 and base.network_id == doc["network_id"]
    assert (base.points["feature"] == "light").sum() == len(lights) > 0
    for rtype, (color, width) in ROAD_STYLE.items():
        rows = base.roads.loc[base.roads["road_type"] == rtype]
        assert len(rows) == sum(f["properties"]["road_type"] == rtype for f in roads)
        assert all(c == list(color) for c in rows["color"]) and set(rows["width"]) == {width}
    assert ROAD_STYLE["highway"][1] > ROAD_STYLE["rural"][1] > ROAD_STYLE["urban"][1]
    # highways are drawn last (on top of the streets they cross)
    assert list(base.roads["road_type"]).index("highway") > max(
        i for i, t in enumerate(base.roads["road_type"]) if t == "urban")
    minlon, minlat, maxlon, maxlat = base.bounds
    assert minlon < WARSAW[1] < maxlon and minlat < WARSAW[0] < maxlat
    layers = road_layers(base)
    assert [(la.type, la.id, la.pickable) for la in layers] == [
        ("PathLayer", ROAD_LAYER_ID, False), ("ScatterplotLayer", POINT_LAYER_ID, False)]


def test_odd_network_documents_never_raise() -> None:
    doc = {"network_id": "x", "features": [
        None, {"geometry": {"type": "LineString", "coordinates": [[1, 2]]}},  # one point
        {"properties": {"feature": "road", "road_type": "moon"},
         "geometry": {"type": "LineString", "coordinates": [[1, 2], [3, "a"], [4, 5]]}},
        {"properties": {"feature": "light"},
         "geometry": {"type": "Point", "coordinates": [999, 1]}},
    ]}
    base = parse_network(doc)
    assert base.roads["path"].tolist() == [[[1.0, 2.0], [4.0, 5.0]]]
    assert base.roads["road_type"].tolist() == ["urban"] and base.points.empty
    assert parse_network({}).empty and parse_network({}).bounds is None


def test_selection_state_names_the_clicked_vehicle_only() -> None:
    state = {"selection": {"indices": {"vehicles": [3]},
                           "objects": {"vehicles": [{"vehicle_id": "CAR7", "lat": 1}]}}}
    assert vehicle_in(state) == "CAR7"
    assert vehicle_in({"selection": {"indices": {}, "objects": {}}}) is None
    assert vehicle_in({"selection": {"objects": {"trails": [{"vehicle_id": "CAR7"}]}}}) is None
    assert vehicle_in(None) is None and vehicle_in({"selection": {"objects": {
        "vehicles": [{"vehicle_id": 5}]}}}) is None


def test_view_bbox_shrinks_as_the_map_zooms_in() -> None:
    wide = maps.view_bbox(maps.pdk.ViewState(latitude=52.2, longitude=21.0, zoom=11))
    close = maps.view_bbox(maps.pdk.ViewState(latitude=52.2, longitude=21.0, zoom=14))
    assert wide[0] < close[0] < 21.0 < close[2] < wide[2]
    assert wide[1] < close[1] < 52.2 < close[3] < wide[3]
    assert (close[2] - close[0]) == pytest.approx((wide[2] - wide[0]) / 8)


def publish_network(bootstrap: str, topic: str) -> str:
    key, value = network_record(load_network(None))

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, key=key, value=value)
        finally:
            await producer.stop()

    asyncio.run(run())
    return key.decode()


def cars(n: int, when: datetime, prefix: str = "CAR", step: int = 0):
    return [make_event(f"{prefix}{i:03d}", seq=step, timestamp=when, speed_kmh=30.0 + i,
                       lat=WARSAW[0] + 0.002 * (i % 20), lon=WARSAW[1] + 0.003 * (i // 20))
            for i in range(n)]


@pytest.fixture
def stack(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path):
    network_topic = topic_factory("network", 1)
    server = ApiServer(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                       kafka_control_topic=topic_factory("control", 1),
                       kafka_status_topic=topic_factory("status", 1),
                       kafka_network_topic=network_topic, vehicle_timeout_s=6.0,
                       analytics_output_dir=tmp_path / "analytics").start()
    try:
        wait_for(f"{server.url}/health", lambda b: b.get("status") == "ok")
        yield server, network_topic
    finally:
        server.stop()


def decks(at: AppTest) -> list[dict]:
    return [json.loads(d.proto.json) for d in at.get("deck_gl_json_chart")]


@pytest.mark.kafka
def test_live_map_roads_no_ghosts_selection_and_density(
        stack, kafka_bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    server, network_topic = stack
    net_id = publish_network(kafka_bootstrap, network_topic)
    wait_for(f"{server.url}/network", lambda b: b.get("network_id") == net_id)
    now = datetime.now(UTC)
    publish(kafka_bootstrap, topic, cars(30, now))
    wait_for(f"{server.url}/stats", lambda b: b.get("vehicles_reporting") == 30)
    time.sleep(6.5)  # all 30 fall silent (timeout 6 s) ...
    publish(kafka_bootstrap, topic, cars(10, datetime.now(UTC), step=1))  # ... 10 report again
    wait_for(f"{server.url}/stats", lambda b: b.get("vehicles_reporting") == 10
             and b.get("vehicles_stale") == 20)

    monkeypatch.setenv("FLEETSTREAM_API_URL", server.url)
    monkeypatch.setenv("FLEETSTREAM_UI_REFRESH_S", "300")
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    (deck,) = decks(at)
    ids = [layer["id"] for layer in deck["layers"]]
    assert ids[:2] == [ROAD_LAYER_ID, POINT_LAYER_ID] and ids[-1] == "vehicles"  # under
    assert deck["mapStyle"].startswith("data:")
    vehicles = {p["vehicle_id"] for p in deck["layers"][-1]["data"]}
    assert vehicles == {f"CAR{i:03d}" for i in range(10)}  # no ghosts
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Vehicles reporting"] == "10"
    held = at.session_state["basemap"]
    assert held[0] == f'"{net_id}"' and held[1].network_id == net_id
    with ApiClient(server.url) as client:
        assert client.network(held[0]) is None  # 304: not fetched again

    at.sidebar.toggle(key="show_stale").set_value(True).run()
    (deck,) = decks(at)
    points = {p["vehicle_id"]: p for p in deck["layers"][-1]["data"]}
    assert len(points) == 30
    grey = [vid for vid, p in points.items() if p["color"] == list(maps.STALE_COLOR)]
    assert sorted(grey) == [f"CAR{i:03d}" for i in range(10, 30)]
    assert {m.label: m.value for m in at.metric}["Vehicles reporting"] == "10"
    at.sidebar.toggle(key="show_stale").set_value(False).run()

    def keep_alive(step: int) -> None:  # the 10 keep reporting; the 20 stay silent
        publish(kafka_bootstrap, topic, cars(10, datetime.now(UTC), step=step))
        wait_for(f"{server.url}/telemetry/latest",
                 lambda b: sum(i["seq"] == step for i in b["items"]) == 10)

    # a click on CAR004 (Streamlit's selection event calls the handler): the map follows it
    keep_alive(2)
    at.session_state["selected"] = "CAR004"
    at.run()
    (deck,) = decks(at)
    view = deck["initialViewState"]
    car = next(e for e in cars(10, now) if e.vehicle_id == "CAR004")
    assert (view["latitude"], view["longitude"], view["zoom"]) == (
        car.location.lat, car.location.lon, maps.FOLLOW_ZOOM)
    assert any("following ` CAR004 `" in m.value for m in at.markdown)
    at.button(key="clear_selection").click().run()
    assert "selected" not in at.session_state
    assert decks(at)[0]["initialViewState"]["zoom"] != maps.FOLLOW_ZOOM

    # above the point budget: zoomed out = the API's density grid over the network's area
    keep_alive(3)
    with ApiClient(server.url) as client:
        base = at.session_state["basemap"][1]
        opts = ViewOptions(point_budget=5, area=base.bounds)
        snap = fetch_snapshot(client, opts, datetime.now(UTC))
        assert snap.density is not None and snap.density["total"] == 10 and snap.sampled
        assert sum(c["count"] for c in snap.density["items"]) == 10
        from ui.panels import Layers, build_deck
        layer_ids = [la.id for la in build_deck(snap, Layers(), None, road_layers(base)).layers]
        assert "density" in layer_ids and "vehicles" not in layer_ids
        # zoomed in on a car: only the cars in its viewport, as points
        near = fetch_snapshot(client, ViewOptions(point_budget=5, follow="CAR000"),
                              datetime.now(UTC))
        box = maps.view_bbox(near.view)
        assert near.density is None and "CAR000" in set(near.latest["vehicle_id"])
        assert all(box[0] <= lon <= box[2] and box[1] <= lat <= box[3]
                   for lon, lat in zip(near.latest["lon"], near.latest["lat"], strict=True))
        assert len(near.latest) < 10


def test_stale_points_are_grey_and_say_so() -> None:
    from ui.frames import events_frame
    items = [json.loads(e.model_dump_json()) for e in cars(3, datetime.now(UTC) - timedelta(1))]
    items[1]["stale"] = True
    df = events_frame(items)
    assert df["stale"].tolist() == [False, True, False]
    layer = maps.vehicle_layer(df)
    rows = layer.data  # pydeck keeps a frame's rows as records
    assert rows[1]["color"] == list(maps.STALE_COLOR) != rows[0]["color"]
    assert "SILENT" in rows[1]["tip"] and "SILENT" not in rows[0]["tip"]


def test_density_cells_are_squares_coloured_by_count() -> None:
    grid = {"bbox": [21.0, 52.2, 21.1, 52.3], "cells": 10, "cell_size_deg": [0.01, 0.01],
            "total": 111, "items": [
                {"col": 0, "row": 0, "lon": 21.005, "lat": 52.205, "count": 1,
                 "mean_speed_kmh": 30.0},
                {"col": 5, "row": 5, "lon": 21.055, "lat": 52.255, "count": 110,
                 "mean_speed_kmh": 55.5}]}
    layer = maps.density_layer(grid)
    assert (layer.type, layer.id, layer.pickable) == ("ColumnLayer", "density", True)
    few, many = layer.data
    assert few["color"][:3] == list(maps.DENSITY_COLORS[0])
    assert many["color"][:3] == list(maps.DENSITY_COLORS[-1])
    assert many["tip"].startswith("110 vehicles") and "56 km/h" in many["tip"]
    # a square of half the narrower side (0.01 deg of longitude at 52.25 N), corner radius
    half = 0.5 * 0.01 * maps.M_PER_DEG * math.cos(math.radians(52.23))
    assert layer.radius == pytest.approx(half * math.sqrt(2), rel=1e-3)
    assert maps.density_layer({"items": []}).data == []
