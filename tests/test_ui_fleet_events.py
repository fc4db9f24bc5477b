"""Issue 12 in the Streamlit app: the trips view, geofences (map, create, delete) and the live
alert feed.

Pure builders are tested directly; the pages run under AppTest against a small real aiohttp
server on 127.0.0.1 that serves the web API's shapes (GET /trips, /trips/{id}, /geofences,
/events; POST and DELETE /geofences), including odd data and 500 / 422 answers: the page
must show a message and never raise.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from streamlit.testing.v1 import AppTest

from common.contract import Location
from common.fleet_events import MAX_GEOFENCE_VERTICES, Geofence, TripSummary, Violations
from tests.support.webapi import make_event
from ui import alerts, geofences, maps, trip_map
from ui.api import ApiClient, ApiError
from ui.palette import GEOFENCE_COLOR, SPEED_BAND_COLORS, VIOLATION_COLOR, speed_color

APP = str(Path(__file__).resolve().parent.parent / "ui" / "app.py")
NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(minutes=30)
LON0, LAT0 = 11.55, 48.13
SPEEDS = (10, 25, 45, 70, 95, 130, 135, 125, 80, 50, 20, 0)
EVIL = "![x](http://203.0.113.9/leak) <b>bold</b> :red[x] $x$"

Answer = tuple[int, Any]
Route = Answer | Callable[[web.Request, Any], Answer]


def iso(ts: datetime) -> str:
    return ts.isoformat()


def summary() -> dict[str, Any]:
    return TripSummary(
        started_at=T0, ended_at=T0 + timedelta(minutes=12), end_reason="parked",
        duration_s=720, moving_s=600, idle_s=120, distance_km=8.25, max_speed_kmh=135,
        avg_speed_kmh=49.5, stops=3, fuel_used_pct=1.25,
        violations=Violations(speeding=2, speeding_s=40, over_redline=1, alerts=4),
        start_location=Location(lat=LAT0, lon=LON0),
        end_location=Location(lat=LAT0 + 0.011, lon=LON0 + 0.011), samples=12,
    ).model_dump(mode="json")


def route() -> list[dict[str, Any]]:
    pts: list[dict[str, Any]] = [
        {"timestamp": iso(T0 + timedelta(minutes=i)), "lat": LAT0 + 0.001 * i,
         "lon": LON0 + 0.001 * i, "speed_kmh": float(s), "speeding": s > 120,
         "rpm_over_redline": s == 135, "seq": i}
        for i, s in enumerate(SPEEDS)]
    pts.insert(3, {"timestamp": "later", "lat": "x", "lon": None, "speed_kmh": "fast"})
    return pts


def segments() -> list[dict[str, Any]]:
    return [
        {"kind": "speeding", "started_at": iso(T0 + timedelta(minutes=5)),
         "ended_at": iso(T0 + timedelta(minutes=7)), "max_speed_kmh": 135.0,
         "points": [[LON0 + 0.001 * i, LAT0 + 0.001 * i] for i in (5, 6, 7)]},
        {"kind": "over_redline", "started_at": iso(T0), "ended_at": None,
         "points": [[LON0, LAT0]]},  # one point: nothing to draw
        "not a segment",
    ]


TRIP_A = {"trip_id": "CAR001-trip-1", "vehicle_id": "CAR001", "status": "ended",
          "started_at": iso(T0), "ended_at": iso(T0 + timedelta(minutes=12)),
          "start_location": {"lat": LAT0, "lon": LON0},
          "end_location": {"lat": LAT0 + 0.011, "lon": LON0 + 0.011}, "summary": summary()}
TRIP_B = {"trip_id": "CAR002-trip-7", "vehicle_id": "CAR002", "status": "in_progress",
          "started_at": iso(NOW - timedelta(minutes=3)), "ended_at": None,
          "start_location": {"lat": LAT0, "lon": LON0}, "end_location": None, "summary": None}
TRIP_ODD = {"trip_id": "odd/trip ?#", "vehicle_id": "", "status": "ended",
            "started_at": "yesterday", "ended_at": 17, "start_location": {"lat": 999, "lon": "x"},
            "summary": {"distance_km": "far", "duration_s": -5, "max_speed_kmh": 1e300,
                        "violations": None, "stops": True}}
TRIPS = [TRIP_B, TRIP_A, TRIP_ODD, {"vehicle_id": "no id"}, "junk", None]

FENCE = Geofence(id="depot", name="Depot <b>north</b>", geometry={
    "type": "Polygon", "coordinates": [[[LON0, LAT0], [LON0 + 0.01, LAT0],
                                        [LON0 + 0.01, LAT0 + 0.01], [LON0, LAT0]]]})
OPEN_RING = {"id": "open", "name": "Open", "geometry": {
    "type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}}
SQUARE = {"type": "Polygon", "coordinates": [[[11.56, 48.13], [11.59, 48.13], [11.59, 48.15],
                                              [11.56, 48.15], [11.56, 48.13]]]}


def alert(n: int, *, message: str = "speeding for 31 s", minutes_ago: float = 1.0,
          **extra: Any) -> dict[str, Any]:
    return {"kind": "alert", "event_id": f"00000000-0000-0000-0000-{n:012d}",
            "vehicle_id": f"CAR{n:03d}", "time": iso(NOW - timedelta(minutes=minutes_ago)),
            "location": {"lat": LAT0, "lon": LON0}, "trip_id": "", "source_seq": n,
            "schema_version": 1, "rule_id": "default-speeding-30s",
            "rule_kind": "speeding_sustained", "message": message, "value": 31.0,
            "threshold": 30.0, **extra}


class StubApi:
    """A real aiohttp server on 127.0.0.1 in a thread, answering from ``routes``:
    (method, decoded path) -> (status, JSON body) or a function of (request, body)."""

    def __init__(self, routes: dict[tuple[str, str], Route]) -> None:
        self.routes = routes
        self.seen: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.seen.append({"method": request.method, "path": request.path,
                          "raw_path": request.raw_path.split("?")[0],
                          "query": dict(request.query), "body": body,
                          "auth": request.headers.get("Authorization")})
        answer = self.routes.get((request.method, request.path), (404, {"error": "no route"}))
        status, doc = answer(request, body) if callable(answer) else answer
        if status == 204:
            return web.Response(status=204)
        return web.json_response(doc, status=status)

    def __enter__(self) -> StubApi:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._runner.setup(), self._loop).result(10)
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        asyncio.run_coroutine_threadsafe(site.start(), self._loop).result(10)
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def requests(self, method: str, path: str) -> list[dict[str, Any]]:
        return [s for s in self.seen if s["method"] == method and s["path"] == path]


def telemetry_routes() -> dict[tuple[str, str], Route]:
    events = [make_event(f"CAR{v:03d}", seq=5, timestamp=NOW - timedelta(seconds=2),
                         lat=LAT0 + 0.002 * v, lon=LON0 + 0.002 * v).model_dump(mode="json")
              for v in (1, 2)]
    trails = [{"vehicle_id": e["vehicle_id"], "points": [
        {"timestamp": iso(NOW - timedelta(seconds=10 - i)), "lat": LAT0 + 0.0005 * i,
         "lon": LON0 + 0.0005 * i, "speed_kmh": 40.0} for i in range(5)]} for e in events]
    return {
        ("GET", "/health"): (200, {"status": "ok"}),
        ("GET", "/status"): (200, {"running": True, "rate_hz": 1, "vehicles": 2}),
        ("GET", "/stats"): (200, {"vehicles_reporting": 2, "events_per_s": 2.0}),
        ("GET", "/vehicles"): (200, {"items": ["CAR001", "CAR002"]}),
        ("GET", "/telemetry/latest"): (200, {"items": events}),
        ("GET", "/telemetry/recent"): (200, {"items": events}),
        ("GET", "/telemetry/violations"): (200, {"items": []}),
        ("GET", "/telemetry/trails"): (200, {"items": trails}),
        ("GET", "/analytics/vehicle-windows"): (200, {"available": False, "items": []}),
        ("GET", "/analytics/road-windows"): (200, {"available": False, "items": []}),
    }


def fleet_routes(**over: Route) -> dict[tuple[str, str], Route]:
    routes = telemetry_routes()
    routes.update({
        ("GET", "/trips"): (200, {"items": TRIPS}),
        ("GET", "/trips/CAR001-trip-1"): (200, {**TRIP_A, "route": route(),
                                                "violation_segments": segments()}),
        ("GET", "/trips/CAR002-trip-7"): (200, {**TRIP_B, "route": route()[:4],
                                                "violation_segments": []}),
        ("GET", "/trips/odd/trip ?#"): (200, {**TRIP_ODD, "route": [],
                                              "violation_segments": "nope"}),
        ("GET", "/geofences"): (200, {"items": [FENCE.model_dump(mode="json"), OPEN_RING]}),
        ("GET", "/events"): (200, {"items": [alert(1), alert(2, message=EVIL), alert(2),
                                             {"kind": "trip_started"}, alert(3, time="x")]}),
    })
    for key, value in over.items():
        method, _, path = key.partition(" ")
        routes[(method, path)] = value
    return routes


@pytest.fixture
def stub() -> Iterator[Callable[..., StubApi]]:
    servers: list[StubApi] = []

    def start(**over: Route) -> StubApi:
        server = StubApi(fleet_routes(**over)).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


def run_app(url: str, monkeypatch: pytest.MonkeyPatch, mode: str = "Live",
            token: str = "") -> AppTest:
    monkeypatch.setenv("FLEETSTREAM_API_URL", url)
    monkeypatch.setenv("FLEETSTREAM_API_TOKEN", token)
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["mode"] = mode
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def decks(at: AppTest) -> list[dict[str, Any]]:
    return [json.loads(d.proto.json) for d in at.get("deck_gl_json_chart")]


def layer(deck: dict[str, Any], layer_id: str) -> dict[str, Any]:
    found = [ly for ly in deck["layers"] if ly["id"] == layer_id]
    assert found, [ly["id"] for ly in deck["layers"]]
    return found[0]


def texts(at: AppTest) -> list[str]:
    return [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success")
            for e in getattr(at, kind)]


# ---- pure builders ---------------------------------------------------------------------

def test_trips_frame_keeps_trips_with_an_id_and_blanks_odd_values() -> None:
    df = trip_map.trips_frame(TRIPS)
    assert df["trip_id"].tolist() == ["CAR002-trip-7", "CAR001-trip-1", "odd/trip ?#"]
    assert df.attrs["dropped"] == 3
    a = df.iloc[1]
    assert (a["distance_km"], a["duration_min"], a["stops"], a["speeding"], a["alerts"]) == (
        8.25, 12.0, 3, 2, 4)
    assert a["end_reason"] == "parked" and a["started_at"] == T0
    odd = df.iloc[2]
    assert odd[["distance_km", "max_speed_kmh", "stops", "speeding"]].isna().all()
    assert odd["duration_min"] == pytest.approx(-5 / 60)  # shown as sent: the API's to fix
    assert str(odd["started_at"]) == "NaT" and str(odd["ended_at"]) == "NaT"
    assert trip_map.trip_label(odd) == "? · unknown start UTC · ended"
    assert trip_map.trips_frame([]).columns.tolist() == list(trip_map.TRIP_COLUMNS)


def test_route_is_coloured_by_speed_band_and_violations_are_thick_red_paths() -> None:
    deck, rt, segs = trip_map.trip_deck({**TRIP_A, "route": route(),
                                      "violation_segments": segments()})
    assert len(rt) == len(SPEEDS) and rt.attrs["dropped"] == 1
    spec = json.loads(deck.to_json())
    ids = [ly["id"] for ly in spec["layers"]]
    assert ids == ["trip_violations", "trip_route", "trip_ends"]  # violations under the route
    paths = layer(spec, "trip_route")["data"]
    # one path per run of equal band; each segment takes its start point's colour
    assert [p["color"] for p in paths] == [speed_color(s) for s in (10, 45, 70, 95, 130, 80,
                                                                     50, 20)]
    assert {tuple(p["color"]) for p in paths} == set(SPEED_BAND_COLORS)
    assert sum(len(p["path"]) - 1 for p in paths) == len(SPEEDS) - 1
    viol = layer(spec, "trip_violations")
    assert len(viol["data"]) == 1 and len(segs) == 1
    assert viol["data"][0]["path"] == [[round(LON0 + 0.001 * i, 6), round(LAT0 + 0.001 * i, 6)]
                                       for i in (5, 6, 7)]
    assert viol["getColor"][:3] == list(VIOLATION_COLOR)
    assert viol["getWidth"] > layer(spec, "trip_route")["getWidth"]
    assert viol["widthMinPixels"] > layer(spec, "trip_route")["widthMinPixels"]
    assert "max 135 km/h" in viol["data"][0]["tip"]
    view = spec["initialViewState"]
    assert LAT0 <= view["latitude"] <= LAT0 + 0.012 and LON0 <= view["longitude"] <= LON0 + 0.012


def test_odd_trip_detail_draws_what_it_can() -> None:
    deck, rt, segs = trip_map.trip_deck({**TRIP_ODD, "route": [], "violation_segments": "nope"})
    spec = json.loads(deck.to_json())
    assert spec["layers"] == [] and rt.empty and segs.empty
    assert spec["initialViewState"]["latitude"] == maps.DEFAULT_VIEW.latitude
    one = [{"lat": LAT0, "lon": LON0, "speed_kmh": None}]
    spec = json.loads(trip_map.trip_deck({"route": one, "start_location": {"lat": LAT0,
                                                                        "lon": LON0}})[0]
                      .to_json())
    assert [ly["id"] for ly in spec["layers"]] == ["trip_ends"]  # one point: no path


def test_summary_metrics_format_and_dash_what_is_missing() -> None:
    got = dict(trip_map.summary_metrics(summary()))
    assert got == {"Distance": "8.25 km", "Duration": "0:12:00", "Moving": "0:10:00",
                   "Idle": "0:02:00", "Stops": "3", "Max speed": "135 km/h",
                   "Avg speed": "50 km/h", "Fuel used": "1.2 %", "Speeding": "2 (0:00:40)",
                   "Over redline · alerts": "1 · 4"}
    odd = dict(trip_map.summary_metrics(TRIP_ODD["summary"]))
    assert odd["Distance"] == "–" and odd["Max speed"] == "–" and odd["Stops"] == "–"
    assert odd["Duration"] == "–"  # negative: not a duration
    assert odd["Over redline · alerts"] == "– · –"
    assert set(dict(trip_map.summary_metrics(None)).values()) == {"–", "– · –"}


def test_parse_geofence_accepts_polygons_features_and_names() -> None:
    body = geofences.parse_geofence(json.dumps(SQUARE), " Depot ")
    assert body == {"name": "Depot", "geometry": SQUARE}  # no id: the API chooses
    feature = {"type": "Feature", "properties": {"name": "Yard", "id": "yard-1"},
               "geometry": SQUARE}
    assert geofences.parse_geofence(json.dumps(feature)) == {"name": "Yard", "id": "yard-1",
                                                             "geometry": SQUARE}
    fc = {"type": "FeatureCollection", "features": [feature]}
    assert geofences.parse_geofence(json.dumps(fc), "Typed", "typed-id")["id"] == "typed-id"
    served = FENCE.model_dump(mode="json")
    assert geofences.parse_geofence(json.dumps(served))["name"] == FENCE.name


@pytest.mark.parametrize(("text", "name", "message"), [
    ("", "A", "paste a GeoJSON Polygon"),
    ("{not json", "A", "not JSON: Expecting property name enclosed in double quotes "
                       "(line 1, column 2)"),
    ("[1, 2]", "A", "expected a JSON object, got list"),
    ('{"type": "Point", "coordinates": [1, 2]}', "A", "only Polygon geometries"),
    ('{"coordinates": []}', "A", 'no "type"'),
    (json.dumps({"type": "FeatureCollection", "features": [{}, {}]}), "A",
     "a FeatureCollection with 2 features"),
    (json.dumps(SQUARE), "", "give the geofence a name"),
    (json.dumps(OPEN_RING["geometry"]), "A",
     "geometry.coordinates: outer ring: ring is not closed (first position [0.0, 0.0] != "
     "last [0.0, 1.0])"),
    (json.dumps({"type": "Polygon", "coordinates": [[[0, 0], [200, 0], [1, 1], [0, 0]]]}), "A",
     "position [200.0, 0.0] out of range"),
    (json.dumps({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]}), "A",
     "a ring needs at least 4 positions, got 3"),
    ('{"type": "Polygon", "coordinates": [[[0, 0], [NaN, 0], [1, 1], [0, 0]]]}', "A",
     "geometry.coordinates.0.1.0"),
    (json.dumps({"type": "Polygon", "coordinates": [
        [[i * 1e-4, (i % 2) * 1e-4] for i in range(MAX_GEOFENCE_VERTICES + 1)] + [[0, 0]]]}),
     "A", f"too many vertices: {MAX_GEOFENCE_VERTICES + 1} > {MAX_GEOFENCE_VERTICES}"),
    (json.dumps(SQUARE), "A", "id: must be printable, found U+0000"),
    ("[" * 100_000, "A", "not JSON"),
])
def test_parse_geofence_says_what_is_wrong(text: str, name: str, message: str) -> None:
    gid = "has\x00nul" if "printable" in message else ""
    with pytest.raises(ValueError) as info:
        geofences.parse_geofence(text, name, gid)
    assert message in str(info.value), str(info.value)


def test_geofence_layer_draws_valid_fences_only() -> None:
    fences, bad = geofences.valid_geofences([FENCE.model_dump(mode="json"), OPEN_RING, "x"])
    assert (fences, bad) == ([FENCE], 2)
    spec = json.loads(maps.fleet_deck([maps.geofence_layer(fences)], maps.DEFAULT_VIEW)
                      .to_json())
    ly = layer(spec, "geofences")
    assert ly["@@type"] == "PolygonLayer" and ly["getFillColor"][:3] == list(GEOFENCE_COLOR)
    assert ly["data"][0]["polygon"] == [[list(p) for p in FENCE.geometry.coordinates[0]]]
    assert ly["data"][0]["tip"] == "geofence Depot <b>north</b>\nid depot"
    assert geofences.geofences_table(fences).to_dict("records") == [
        {"name": FENCE.name, "id": "depot", "vertices": 3, "holes": 0}]


def test_alerts_frame_dedupes_sorts_and_feed_escapes() -> None:
    items = [alert(1, minutes_ago=5), alert(2, message=EVIL, minutes_ago=1), alert(2),
             alert(3, time="garbage"), {"kind": "trip_started"},
             alert(4, rule_kind="new_fault_code", fault_code="P0300`x", value=None,
                   threshold=float("nan"), minutes_ago=3)]
    df = alerts.alerts_frame(items)
    assert df["vehicle_id"].tolist() == ["CAR002", "CAR004", "CAR001"]
    assert df.loc[0, "message"] == "speeding for 31 s"  # the later copy of event 2 wins
    lines = alerts.feed_lines(alerts.alerts_frame([alert(2, message=EVIL)]),
                              {"00000000-0000-0000-0000-000000000002"})
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith(":red-badge[new] **") and " · ` CAR002 ` · " in line
    assert "![x](" not in line and "<b>" not in line and ":red[x]" not in line
    assert (r"\!\[x\]\(` http://203.0.113.9/leak) ` \<b\>bold\<\/b\> \:red\[x\] \$x\$"
            in line)  # the URL a code span, not a link
    assert line.endswith("· value 31\\.0\\, limit 30\\.0")
    fault = alerts.feed_lines(df.iloc[[1]])[0]
    assert "**New fault code** `` P0300`x ``" in fault and "value" not in fault


# ---- the client ------------------------------------------------------------------------

def test_client_fleet_calls_paths_params_and_token(stub) -> None:
    api = stub(**{
        "POST /geofences": lambda req, body: (201, {"id": "g-1", **body}),
        "DELETE /geofences/a b/c": (204, None),
    })
    since = datetime(2026, 11, 29, 8, tzinfo=UTC)
    with ApiClient(api.url, token="s3cret", timeout_s=3) as client:
        assert [e.get("rule_id") for e in client.events("alert", "CAR1", since, 50)][:2] == [
            "default-speeding-30s"] * 2
        assert len(client.trips("CAR001", since=since, limit=5)) == len(TRIPS)
        assert client.trip("odd/trip ?#")["trip_id"] == "odd/trip ?#"
        assert client.geofences()[1] == OPEN_RING
        made = client.create_geofence({"name": "N", "geometry": SQUARE})
        assert made == {"id": "g-1", "name": "N", "geometry": SQUARE}
        assert client.delete_geofence("a b/c") is None
    assert api.requests("GET", "/events")[0]["query"] == {
        "kind": "alert", "vehicle_id": "CAR1", "since": "2026-11-29T08:00:00+00:00",
        "limit": "50"}
    assert api.requests("GET", "/trips")[0]["query"] == {
        "vehicle_id": "CAR001", "since": "2026-11-29T08:00:00+00:00", "limit": "5"}
    assert api.requests("GET", "/trips/odd/trip ?#")[0]["raw_path"] == "/trips/odd%2Ftrip%20%3F%23"
    post = api.requests("POST", "/geofences")[0]
    assert (post["auth"], post["body"]) == ("Bearer s3cret", {"name": "N", "geometry": SQUARE})
    assert api.requests("DELETE", "/geofences/a b/c")[0]["auth"] == "Bearer s3cret"
    assert all(s["auth"] is None for s in api.seen if s["method"] == "GET")


def test_client_geofence_refusal_carries_the_apis_message(stub) -> None:
    api = stub(**{"POST /geofences": (422, {"error": "geometry: too many vertices: 9 > 8"})})
    with ApiClient(api.url, token="t") as client, pytest.raises(ApiError) as info:
        client.create_geofence({"name": "N", "geometry": SQUARE})
    assert (info.value.status, info.value.message) == (422, "geometry: too many vertices: 9 > 8")


# ---- the pages under AppTest -----------------------------------------------------------

def test_trips_page_table_map_and_summary(stub, monkeypatch: pytest.MonkeyPatch) -> None:
    api = stub()
    at = run_app(api.url, monkeypatch, "Trips")
    assert at.dataframe(key="trips_table").value["trip_id"].tolist() == [
        "CAR002-trip-7", "CAR001-trip-1", "odd/trip ?#"]
    pick = at.selectbox(key="trip_pick")
    assert pick.options == ["CAR002 · " + (NOW - timedelta(minutes=3)).strftime(
        "%Y-%m-%d %H:%M:%S") + " UTC · in progress",
        f"CAR001 · {T0:%Y-%m-%d %H:%M:%S} UTC · ended", "? · unknown start UTC · ended"]
    assert pick.value == ("CAR002", "CAR002-trip-7")  # the newest
    assert any("No summary yet" in c.value for c in at.caption)
    assert api.requests("GET", "/trips/CAR002-trip-7")[0]["query"] == {"vehicle_id": "CAR002"}
    since = api.requests("GET", "/trips")[0]["query"]["since"]
    assert abs(datetime.fromisoformat(since) - (datetime.now(UTC) - timedelta(days=1))) < \
        timedelta(minutes=5)

    pick.set_value(("CAR001", "CAR001-trip-1")).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Distance"] == "8.25 km" and metrics["Over redline · alerts"] == "1 · 4"
    trip_deck = decks(at)[-1]
    ids = [ly["id"] for ly in trip_deck["layers"]]
    assert ids == ["geofences", "trip_violations", "trip_route", "trip_ends"]
    assert len(layer(trip_deck, "geofences")["data"]) == 1  # the open ring is not drawn
    assert any("1 without a position hidden" in c.value for c in at.caption)
    at.run()  # an ended trip is not read again (its route comes from the Kafka log)
    assert len(api.requests("GET", "/trips/CAR001-trip-1")) == 1
    assert len(api.requests("GET", "/trips/CAR002-trip-7")) == 1

    pick.set_value(("", "odd/trip ?#")).run()
    assert not at.exception
    assert any("too few to draw a route" in c.value for c in at.caption)
    odd = {m.label: m.value for m in at.metric}
    assert (odd["Distance"], odd["Duration"], odd["Stops"], odd["Max speed"]) == ("–",) * 4
    assert api.requests("GET", "/trips/odd/trip ?#")[0]["query"] == {}  # no vehicle id


def test_a_trip_id_shared_by_two_vehicles_is_two_trips(
        stub, monkeypatch: pytest.MonkeyPatch) -> None:
    """The API allows one trip id for two cars (GET /trips/{id} is then 409 without
    ?vehicle_id=): the picker names both cars, and each pick shows that car's trip."""
    shared = [{**TRIP_A, "trip_id": "SAME", "vehicle_id": f"VEH{i}",
               "started_at": iso(T0 - timedelta(minutes=30 * i)),
               "summary": {**summary(), "distance_km": 10.0 + i}} for i in (0, 1)]

    def detail(request: web.Request, body: Any) -> tuple[int, Any]:
        vid = request.query.get("vehicle_id")
        mine = [t for t in shared if t["vehicle_id"] == vid]
        if not mine:
            return 409, {"error": "trip id SAME names trips of 2 vehicles: add vehicle_id"}
        return 200, {**mine[0], "route": route(), "violation_segments": []}

    api = stub(**{"GET /trips": (200, {"items": shared}), "GET /trips/SAME": detail})
    at = run_app(api.url, monkeypatch, "Trips")
    pick = at.selectbox(key="trip_pick")
    assert [o.split(" · ")[0] for o in pick.options] == ["VEH0", "VEH1"]
    assert pick.value == ("VEH0", "SAME")
    assert any(m.value.startswith("##### Trip ` SAME ` · ` VEH0 `") for m in at.markdown)
    assert {m.label: m.value for m in at.metric}["Distance"] == "10.00 km"

    pick.set_value(("VEH1", "SAME")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(m.value.startswith("##### Trip ` SAME ` · ` VEH1 `") for m in at.markdown)
    assert {m.label: m.value for m in at.metric}["Distance"] == "11.00 km"
    assert [r["query"] for r in api.requests("GET", "/trips/SAME")] == [
        {"vehicle_id": "VEH0"}, {"vehicle_id": "VEH1"}]


def test_trip_and_geofence_tables_export_no_formula(
        stub, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a table's own "Download as CSV" writes is what it was given: text cells a
    spreadsheet would run start with a quote there."""
    evil = {**TRIP_A, "trip_id": "=HYPERLINK(\"http://e.com\")", "vehicle_id": "@SUM(A1)"}
    fence = {**FENCE.model_dump(mode="json"), "id": "g1", "name": "+cmd|' /C calc'!A0"}
    api = stub(**{"GET /trips": (200, {"items": [evil]}),
                  "GET /geofences": (200, {"items": [fence]})})
    at = run_app(api.url, monkeypatch, "Trips")
    shown = at.dataframe(key="trips_table").value
    assert shown["trip_id"].tolist() == ["'=HYPERLINK(\"http://e.com\")"]
    assert shown["vehicle_id"].tolist() == ["'@SUM(A1)"]
    assert at.selectbox(key="trip_pick").value == ("@SUM(A1)", evil["trip_id"])  # the data
    at.session_state["mode"] = "Geofences"
    at.run()
    assert at.dataframe[0].value["name"].tolist() == [
        "'+cmd|' /C calc'!A0"]


@pytest.mark.parametrize(("over", "expect"), [
    ({"GET /trips": (500, {"error": "store exploded"})}, "store exploded"),
    ({"GET /trips": (404, {"error": "no route"})}, "make events"),
    ({"GET /trips/CAR002-trip-7": (500, {"error": "trip store down"})}, "trip store down"),
    ({"GET /trips/CAR002-trip-7": (404, {"error": "unknown trip"})}, "no longer available"),
    ({"GET /trips": (200, {"items": []})}, "No trips in this period"),
    ({"GET /trips": (200, {"items": "nope"})}, "No trips in this period"),
    ({"GET /trips/CAR002-trip-7": (200, {"trip_id": 5, "route": {"a": 1}, "summary": 3})},
     "The web API sent no summary"),
])
def test_trips_page_never_raises(stub, monkeypatch: pytest.MonkeyPatch, over: dict,
                                 expect: str) -> None:
    api = stub(**over)
    at = run_app(api.url, monkeypatch, "Trips")
    shown = texts(at)
    assert any(expect in t for t in shown), shown
    assert not any("could not be drawn" in t for t in shown), shown


def test_geofences_page_creates_validates_and_deletes(stub, monkeypatch) -> None:
    created: list[dict] = []

    def post(req: web.Request, body: Any) -> Answer:
        if body.get("name") == "Refused":
            return 422, {"error": "geofence vertices: 12 > WEBAPI_GEOFENCE_MAX_VERTICES 8"}
        created.append(body)
        return 201, {"id": "g-1", **body}

    api = stub(**{"POST /geofences": post, "DELETE /geofences/depot": (204, None)})
    at = run_app(api.url, monkeypatch, "Geofences", token="tok")
    spec = decks(at)[0]
    assert len(layer(spec, "geofences")["data"]) == 1
    assert any("1 unreadable hidden" in c.value for c in at.caption)

    def submit(name: str, text: str) -> None:
        at.text_input(key="geofence_name").input(name)
        at.text_area(key="geofence_text").input(text)
        next(b for b in at.button if b.label == "Create geofence").click().run()
        assert not at.exception, [e.message for e in at.exception]

    submit("Bad", '{"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}')
    assert any("Not a valid geofence" in e.value and "ring is not closed" in e.value
               for e in at.error)
    assert not api.requests("POST", "/geofences")  # refused here, never sent

    submit("Refused", json.dumps(SQUARE))
    assert any("HTTP 422" in e.value and "WEBAPI\\_GEOFENCE\\_MAX\\_VERTICES 8" in e.value
               for e in at.error), [e.value for e in at.error]

    submit("Yard <i>", json.dumps(SQUARE))
    assert created == [{"name": "Yard <i>", "geometry": SQUARE}]
    assert any("Created geofence Yard \\<i\\>" in s.value for s in at.success)
    assert api.requests("POST", "/geofences")[-1]["auth"] == "Bearer tok"

    api.routes[("DELETE", "/geofences/depot")] = (503, {"error": "geofences still loading"})
    at.button(key="geofence_delete").click().run()
    assert any("cannot change geofences yet (HTTP 503): geofences still loading" in e.value
               for e in at.error), [e.value for e in at.error]
    api.routes[("DELETE", "/geofences/depot")] = (204, None)
    at.button(key="geofence_delete").click().run()
    assert not at.exception
    assert [r["auth"] for r in api.requests("DELETE", "/geofences/depot")] == ["Bearer tok"] * 2
    assert any("Deleted geofence" in s.value for s in at.success)


def test_geofence_upload_is_read_and_capped(stub, monkeypatch) -> None:
    api = stub(**{"POST /geofences": lambda req, body: (201, {"id": "up", **body})})
    at = run_app(api.url, monkeypatch, "Geofences")
    feature = {"type": "Feature", "properties": {"name": "Uploaded"}, "geometry": SQUARE}
    at.file_uploader(key="geofence_file").set_value(
        ("fence.geojson", json.dumps(feature).encode(), "application/geo+json"))
    next(b for b in at.button if b.label == "Create geofence").click().run()
    assert not at.exception
    assert api.requests("POST", "/geofences")[0]["body"] == {"name": "Uploaded",
                                                             "geometry": SQUARE}
    at.file_uploader(key="geofence_file").set_value(
        ("big.json", b" " * (geofences.MAX_UPLOAD_BYTES + 1), "application/json"))
    next(b for b in at.button if b.label == "Create geofence").click().run()
    assert any("at most 524\\,288 are accepted" in e.value for e in at.error), texts(at)
    assert len(api.requests("POST", "/geofences")) == 1


def test_geofences_page_with_the_api_down_or_failing(stub, monkeypatch) -> None:
    api = stub(**{"GET /geofences": (500, {"error": "compacted topic unreadable"})})
    at = run_app(api.url, monkeypatch, "Geofences")
    assert any("compacted topic unreadable" in e.value for e in at.error)
    assert decks(at)  # the map still draws (roads only)


def test_live_page_draws_geofences_and_an_escaped_alert_feed(stub, monkeypatch) -> None:
    api = stub()
    at = run_app(api.url, monkeypatch, "Live")
    live = decks(at)[0]
    assert [ly["id"] for ly in live["layers"]][:1] == ["geofences"]  # under the live layers
    md_values = [m.value for m in at.markdown]
    feed = [v for v in md_values if "Sustained speeding" in v]
    assert len(feed) == 2, feed  # two alerts: the duplicate, other kinds and no-time left out
    assert not any("![x](" in v or "<b>bold" in v for v in md_values)
    assert not any(v.startswith(":red-badge[new]") for v in feed)  # the first load: none new
    query = api.requests("GET", "/events")[0]["query"]
    assert query["kind"] == "alert" and query["limit"] == str(alerts.FETCH_LIMIT)

    api.routes[("GET", "/events")] = (200, {"items": [alert(1), alert(2, message=EVIL),
                                                      alert(5, minutes_ago=0.1)]})
    at.run()
    feed = [m.value for m in at.markdown if "Sustained speeding" in m.value]
    assert feed[0].startswith(":red-badge[new]") and "CAR005" in feed[0]
    assert not any(v.startswith(":red-badge[new]") for v in feed[1:])
    assert any("**1 new**" in c.value for c in at.caption)


@pytest.mark.parametrize("answer", [(500, {"error": "events store down"}),
                                    (404, {"error": "no route"}), (200, {"items": [1, None]})])
def test_alert_feed_failures_are_messages(stub, monkeypatch, answer) -> None:
    api = stub(**{"GET /events": answer, "GET /geofences": (404, {"error": "no route"})})
    at = run_app(api.url, monkeypatch, "Live")
    shown = texts(at)
    assert not any("could not be drawn" in t for t in shown), shown
    expect = {500: "events store down", 404: "serves no fleet events"}.get(answer[0],
                                                                          "No alerts in the last")
    assert any(expect in t for t in shown), shown
    assert "geofences" not in [ly["id"] for ly in decks(at)[0]["layers"]]


# ---- end to end: the real web API on the real broker ------------------------------------

E2E_TRIP, E2E_SPEEDS = "CAR001-e2e", (0, 20, 40, 60, 80, 100, 120, 130, 125, 90, 60, 40, 20, 0)
E2E_LIMIT = 80


@pytest.fixture
def fleet_api(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path):
    """The real web API (tests.test_ui_app.ApiServer: create_app on a thread) on fresh topics,
    with telemetry for a trip's route and the derived events the events job would publish
    for it (trip_started/ended, alerts, an open trip), built with the contract's models."""
    from common.fleet_events import Alert, TripEnded, TripStarted, derived_event_id
    from tests.support.webapi import publish
    from tests.test_ui_app import ApiServer, wait_for
    from webapi.settings import Settings as ApiSettings

    u = uuid.uuid4().hex[:10]
    topics = dict(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                  kafka_control_topic=topic_factory("control", 1),
                  kafka_status_topic=topic_factory("status", 1),
                  kafka_events_topic=topic_factory("events", 3),
                  kafka_geofences_topic=f"geofences-{u}", kafka_alert_rules_topic=f"rules-{u}")
    for name in ("webhooks_topic", "webhook_deliveries_topic", "webhook_group"):
        if name in ApiSettings.model_fields:  # being built beside this: keep it to ourselves
            topics[name] = f"{name}-{u}"
    t0 = NOW - timedelta(minutes=8)
    route_events = [make_event("CAR001", seq=i, timestamp=t0 + timedelta(seconds=10 * i),
                               speed_kmh=float(s), speed_limit_kmh=E2E_LIMIT,
                               lat=LAT0 + 0.001 * i, lon=LON0 + 0.0015 * i)
                    for i, s in enumerate(E2E_SPEEDS)]
    t1 = route_events[-1].timestamp
    live = [make_event("CAR002", seq=i, timestamp=NOW - timedelta(seconds=4 - i),
                       lat=LAT0 + 0.004, lon=LON0 + 0.004 * i) for i in range(4)]

    def env(kind: str, vid: str, t: datetime, seq: int, trip: str = "") -> dict[str, Any]:
        return dict(event_id=derived_event_id(kind, vid, trip, seq), vehicle_id=vid, time=t,
                    location=Location(lat=LAT0, lon=LON0), trip_id=trip, source_seq=seq)

    end = route_events[-1].location
    s = TripSummary(**{**summary(), "started_at": t0, "ended_at": t1, "end_location": end,
                       "duration_s": (t1 - t0).total_seconds(), "max_speed_kmh": 130.0})
    derived = [
        TripStarted(**env("trip_started", "CAR001", t0, 0, E2E_TRIP), odometer_km=100.0,
                    fuel_level_pct=70.0),
        TripEnded(**env("trip_ended", "CAR001", t1, len(E2E_SPEEDS) - 1, E2E_TRIP), summary=s),
        TripStarted(**env("trip_started", "CAR002", live[0].timestamp, 0, "CAR002-open"),
                    odometer_km=5.0, fuel_level_pct=40.0),
        Alert(**env("alert", "CAR001", t0 + timedelta(seconds=80), 8, E2E_TRIP),
              rule_id="default-speeding-30s", rule_kind="speeding_sustained", message=EVIL,
              value=40.0, threshold=30.0),
        Alert(**env("alert", "CAR002", live[1].timestamp, 1), rule_id="default-fuel-low",
              rule_kind="fuel_low", message="fuel at 9.5 %", value=9.5, threshold=10.0),
    ]
    asyncio.run(publish(kafka_bootstrap, topic, route_events + live))
    asyncio.run(publish(kafka_bootstrap, topics["kafka_events_topic"], derived))  # type: ignore[arg-type]
    server = ApiServer(**topics, api_token="tok",  # noqa: S106
                       analytics_output_dir=tmp_path / "analytics").start()
    try:
        wait_for(f"{server.url}/events", lambda b: len(b.get("items", [])) == len(derived),
                 timeout=60)
        wait_for(f"{server.url}/trips", lambda b: len(b.get("items", [])) == 2, timeout=60)
        wait_for(f"{server.url}/geofences", lambda b: b.get("items") == [], timeout=60)
        yield server
    finally:
        server.stop()


@pytest.mark.kafka
def test_end_to_end_trips_geofences_and_alerts_from_the_real_api(
        fleet_api, monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_app(fleet_api.url, monkeypatch, "Trips", token="tok")
    pick = at.selectbox(key="trip_pick")
    assert pick.value[1] == "CAR002-open" and any("No summary yet" in c.value for c in at.caption)
    pick.set_value(("CAR001", E2E_TRIP)).run()
    assert not at.exception, [e.message for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Max speed"] == "130 km/h" and metrics["Distance"] == "8.25 km"
    spec = decks(at)[-1]
    route_paths = layer(spec, "trip_route")["data"]
    assert sum(len(p["path"]) - 1 for p in route_paths) == len(E2E_SPEEDS) - 1
    viol = layer(spec, "trip_violations")["data"]  # 100..90 km/h over a limit of 80 (+5)
    assert len(viol) == 1 and len(viol[0]["path"]) == 5 and "max 130 km/h" in viol[0]["tip"]

    at.session_state["mode"] = "Geofences"
    at.run()
    at.text_input(key="geofence_name").input("Depot")
    at.text_area(key="geofence_text").input(json.dumps(SQUARE))
    next(b for b in at.button if b.label == "Create geofence").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("Created geofence Depot" in s.value for s in at.success), texts(at)
    stored = next(d.value for d in at.dataframe if "vertices" in d.value.columns)
    assert stored["name"].tolist() == ["Depot"] and stored["vertices"].tolist() == [4]

    at.session_state["mode"] = "Live"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert [ly["id"] for ly in decks(at)[0]["layers"]][0] == "geofences"
    feed = [m.value for m in at.markdown if "· **" in m.value and "CAR00" in m.value]
    assert len(feed) == 2 and "**Low fuel**" in feed[0] and "**Sustained speeding**" in feed[1]
    assert "![x](" not in feed[1] and r"\!\[x\]" in feed[1]


@pytest.mark.kafka
@pytest.mark.browser
def test_trips_view_and_alert_feed_in_chromium(fleet_api, tmp_path: Path,
                                               output_dir: Path) -> None:
    import os
    import subprocess
    import sys

    from playwright.sync_api import sync_playwright

    from tests.support.processes import stop_process
    from tests.test_ui_app import CHROMIUM_ARGS, wait_for
    from tests.test_ui_browser_maps import count_near, settle
    from tools.kafka import free_port

    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium is not installed")
    with ApiClient(fleet_api.url, token="tok") as client:
        client.create_geofence({"id": "depot", "name": "Depot", "geometry": {
            "type": "Polygon", "coordinates": [[[LON0 + 0.004, LAT0 + 0.002],
                                                [LON0 + 0.012, LAT0 + 0.002],
                                                [LON0 + 0.012, LAT0 + 0.008],
                                                [LON0 + 0.004, LAT0 + 0.008],
                                                [LON0 + 0.004, LAT0 + 0.002]]]}})
    port = free_port()
    env = {**os.environ, "FLEETSTREAM_API_URL": fleet_api.url, "FLEETSTREAM_API_TOKEN": "tok",
           "FLEETSTREAM_UI_REFRESH_S": "2", "HOME": str(tmp_path)}
    root = Path(APP).parent.parent
    with (tmp_path / "streamlit.log").open("w") as log:
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "streamlit", "run", "ui/app.py", "--server.headless",
             "true", "--server.address", "127.0.0.1", "--server.port", str(port)],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    outside: list[str] = []
    alerts_png, trips_png = output_dir / "ui-alerts.png", output_dir / "ui-trips.png"
    trip_map_png = output_dir / "ui-trips-map.png"
    try:
        wait_for(f"http://127.0.0.1:{port}/_stcore/health", bool, as_json=False)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                         args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1300})
                page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(
                    ("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")) else None)
                page.goto(f"http://127.0.0.1:{port}")
                feed = page.locator(".st-key-alert_feed")
                feed.wait_for(timeout=90_000)
                page.get_by_text("Pause live updates", exact=True).click(force=True)
                settle(page)
                feed.scroll_into_view_if_needed()
                text = feed.inner_text()
                assert "Low fuel" in text and "fuel at 9.5 %" in text
                assert "![x](http://203.0.113.9/leak) <b>bold</b> :red[x] $x$" in text
                # the URL in that message is text, not a link (remark-gfm's autolinks)
                assert feed.locator("a").count() == 0
                page.screenshot(path=str(alerts_png), full_page=True)

                page.get_by_text("Trips", exact=True).first.click()
                page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=60_000)
                page.locator("[data-testid='stSelectbox']").filter(has_text="Trip").click()
                page.get_by_role("option", name="CAR001", exact=False).click()
                page.get_by_text("Trip ", exact=False).filter(has_text=E2E_TRIP).first \
                    .wait_for(timeout=30_000)
                page.wait_for_selector("[data-testid='stDeckGlJsonChart'] canvas",
                                       timeout=60_000)
                settle(page)
                page.screenshot(path=str(trips_png), full_page=True)
                page.locator("[data-testid='stDeckGlJsonChart']").first.screenshot(
                    path=str(trip_map_png))
            finally:
                browser.close()
    finally:
        stop_process(proc)
    assert outside == [], f"the page fetched from the internet: {outside}"
    # the route's speed colours, the violation casing and the geofence are drawn
    assert count_near(trip_map_png, VIOLATION_COLOR, 30) > 300
    assert count_near(trip_map_png, SPEED_BAND_COLORS[4], 30) > 50  # >= 120 km/h, red
    assert count_near(trip_map_png, SPEED_BAND_COLORS[0], 30) > 50  # < 30 km/h, green
    assert count_near(trip_map_png, GEOFENCE_COLOR, 30) > 100
