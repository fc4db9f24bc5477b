"""The REST API end to end: a real broker, a topic of events built from TelemetryEvent,
the app served by aiohttp's TestServer on a loopback port."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.contract import CSV_COLUMNS, EVENT_FIELDS, TelemetryEvent
from tests.support.webapi import fleet_events, make_event, publish, running_app, wait_for
from tools.kafka import create_topic
from webapi.keys import CONSUMER, CONTROL, STORE
from webapi.settings import Settings

pytestmark = pytest.mark.kafka

VEHICLES, STEPS = 5, 40
EVIL_ID = '=HYPERLINK("http://x")'
MALFORMED = {
    "not_json": b"{nope",
    "not_object": b"[1,2,3]",
    "missing_field": b'{"vehicle_id": "CAR000"}',
    "wrong_type": make_event().model_dump_json().replace('"gear":3', '"gear":"x"').encode(),
    "oversized": b'{"pad": "' + b"x" * 70_000 + b'"}',
}
EVENT_KEYS = set(EVENT_FIELDS)
STATUS_KEYS = {"running", "last_event", "rate_hz", "vehicles", "events_sent", "send_errors",
               "lag_s", "behind_schedule", "producer_id", "updated_at"}


@pytest.fixture(scope="module")
def dataset(kafka_bootstrap: str) -> dict:
    """One topic for the module: a small fleet, two formula-like ids, five malformed values."""
    topic = f"webapi-api-{uuid.uuid4().hex[:12]}"
    create_topic(kafka_bootstrap, topic, 3)
    t0 = datetime.now(UTC) - timedelta(seconds=STEPS)
    events = fleet_events(VEHICLES, STEPS, start=t0)
    events.append(make_event(EVIL_ID, timestamp=t0, lat=51.5, lon=-0.1278, speed_kmh=80.0))
    events.append(make_event("@SUM(A1)", timestamp=t0, engine_rpm=6500))
    asyncio.run(publish(kafka_bootstrap, topic, events))
    asyncio.run(publish(kafka_bootstrap, topic, list(MALFORMED.values()), key=b"bad"))
    return {"topic": topic, "events": events, "t0": t0}


@pytest.fixture
def make_settings(kafka_bootstrap: str, topic_factory, tmp_path: Path):
    control, status = topic_factory("control", 1), topic_factory("status", 1)

    def make(topic: str, **overrides) -> Settings:
        base = dict(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                    kafka_control_topic=control, kafka_status_topic=status, api_token=None,
                    cors_origins=(), analytics_output_dir=tmp_path / "analytics",
                    control_timeout_s=1.0, status_stale_s=2.0, map_tile_url="")
        base.update(overrides)
        return Settings(**base)

    return make


async def consumed(client, n: int) -> None:
    store = client.app[STORE]
    consumer = client.app[CONSUMER]
    await wait_for(lambda: store.consumed_total + consumer.malformed_total >= n)


async def get_json(client, url: str, status: int = 200, **kw):
    resp = await client.get(url, **kw)
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    return await resp.json()


async def test_read_endpoints_shapes_filters_and_order(dataset, make_settings) -> None:
    total = len(dataset["events"])
    async with running_app(make_settings(dataset["topic"])) as client:
        await consumed(client, total + len(MALFORMED))
        assert await get_json(client, "/health") == {"status": "ok"}

        latest = await get_json(client, "/telemetry/latest")
        assert set(latest) == {"items"} and len(latest["items"]) == VEHICLES + 2
        assert all(set(e) == EVENT_KEYS for e in latest["items"])
        for e in latest["items"]:
            TelemetryEvent.model_validate(e)
        car1 = [e for e in latest["items"] if e["vehicle_id"] == "CAR001"][0]
        assert car1["seq"] == STEPS - 1

        picked = await get_json(client, "/telemetry/latest?vehicle_id=CAR001,CAR002,nope")
        assert [e["vehicle_id"] for e in picked["items"]] == ["CAR001", "CAR002"]

        recent = (await get_json(client, "/telemetry/recent"))["items"]
        assert len(recent) == 100  # the original default
        stamps = [e["timestamp"] for e in recent]
        assert stamps == sorted(stamps)  # oldest first
        assert len((await get_json(client, "/telemetry/recent?limit=999999"))["items"]) == total

        mine = (await get_json(client, "/telemetry/recent?vehicle_id=CAR003&limit=2000"))["items"]
        assert [e["seq"] for e in mine] == list(range(STEPS))
        since = (dataset["t0"] + timedelta(seconds=10)).isoformat()
        until = (dataset["t0"] + timedelta(seconds=14)).isoformat()
        window = (await get_json(
            client, "/telemetry/recent", params={"vehicle_id": "CAR003", "since": since,
                                                 "until": until}))["items"]
        assert [e["seq"] for e in window] == [10, 11, 12, 13, 14]

        viol = (await get_json(client, "/telemetry/violations?limit=2000"))["items"]
        assert viol and all(e["speeding"] or e["rpm_over_redline"] for e in viol)
        assert [e["timestamp"] for e in viol] == sorted((e["timestamp"] for e in viol),
                                                        reverse=True)
        expected = sum(1 for e in dataset["events"] if e.speeding or e.rpm_over_redline)
        assert len(viol) == expected
        assert len((await get_json(client, "/telemetry/violations?limit=3"))["items"]) == 3

        trails = await get_json(client, "/telemetry/trails?vehicle_id=CAR000,CAR004&points=5")
        assert [t["vehicle_id"] for t in trails["items"]] == ["CAR000", "CAR004"]
        for t in trails["items"]:
            assert set(t) == {"vehicle_id", "points"} and len(t["points"]) == 5
            assert all(set(p) == {"timestamp", "lat", "lon", "speed_kmh"} for p in t["points"])
        all_trails = await get_json(client, "/telemetry/trails")
        assert len(all_trails["items"]) == VEHICLES + 2

        vehicles = await get_json(client, "/vehicles")
        assert vehicles == {"items": sorted([f"CAR{i:03d}" for i in range(VEHICLES)]
                                            + [EVIL_ID, "@SUM(A1)"])}

        stats = await get_json(client, "/stats")
        assert set(stats) == {"vehicles_reporting", "vehicles_stale", "events_per_s",
                              "consumed_total", "malformed_total", "malformed",
                              "violations_total", "fleet_events"}
        assert stats["vehicles_stale"] == 0
        assert stats["malformed"] == {kind: 1 for kind in MALFORMED}
        assert stats["vehicles_reporting"] == VEHICLES + 2
        assert stats["consumed_total"] == total
        assert stats["malformed_total"] == len(MALFORMED)
        assert stats["violations_total"] == expected
        assert stats["events_per_s"] > 0


async def test_malformed_messages_are_counted_by_kind_and_the_service_keeps_serving(
        dataset, make_settings) -> None:
    async with running_app(make_settings(dataset["topic"])) as client:
        await consumed(client, len(dataset["events"]) + len(MALFORMED))
        assert client.app[CONSUMER].malformed == {kind: 1 for kind in MALFORMED}
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        text = await resp.text()
        for kind in MALFORMED:
            assert f'fleetstream_webapi_malformed_messages_total{{kind="{kind}"}} 1.0' in text
        assert f"fleetstream_webapi_events_consumed_total {len(dataset['events'])}.0" in text
        assert "fleetstream_webapi_ws_clients 0.0" in text
        assert "fleetstream_webapi_ws_dropped_events_total 0.0" in text
        await client.get("/health")
        text = await (await client.get("/metrics")).text()
        assert ('fleetstream_webapi_http_requests_total{method="GET",route="/health",'
                'status="200"} 1.0') in text
        assert ('fleetstream_webapi_http_request_duration_seconds_count{method="GET",'
                'route="/health"} 1.0') in text
        assert (await get_json(client, "/health")) == {"status": "ok"}


async def test_csv_export_streams_the_original_columns_safely(dataset, make_settings) -> None:
    async with running_app(make_settings(dataset["topic"], cors_origins=("http://ok.test",))
                           ) as client:
        await consumed(client, len(dataset["events"]) + len(MALFORMED))
        resp = await client.get("/telemetry/export.csv?limit=5000",
                                headers={"Origin": "http://ok.test"})
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert "attachment" in resp.headers["Content-Disposition"]
        assert "Content-Length" not in resp.headers  # streamed (chunked)
        assert resp.headers["Access-Control-Allow-Origin"] == "http://ok.test"
        rows = list(csv.reader(io.StringIO(await resp.text())))
        assert tuple(rows[0]) == CSV_COLUMNS
        body = rows[1:]
        assert len(body) == len(dataset["events"])
        evil = [r for r in body if r[1].endswith(EVIL_ID)][0]
        assert evil[1] == "'" + EVIL_ID
        assert evil[3] == "-0.1278"  # a negative number is not a formula
        assert evil[10:] == ["1", "0"]
        at = [r for r in body if "SUM" in r[1]][0]
        assert at[1] == "'@SUM(A1)" and at[11] == "1"
        for r in body:
            float(r[2]), float(r[4]), int(r[5]), int(r[6]), int(r[9])
            assert r[10] in ("0", "1") and r[11] in ("0", "1")
        few = list(csv.reader(io.StringIO(await (await client.get(
            "/telemetry/export.csv?limit=3&vehicle_id=CAR001")).text())))
        assert len(few) == 4 and {r[1] for r in few[1:]} == {"CAR001"}


@pytest.mark.parametrize(("url", "param"), [
    ("/telemetry/recent?limit=0", "limit"),
    ("/telemetry/recent?limit=ten", "limit"),
    ("/telemetry/recent?since=yesterday", "since"),
    ("/telemetry/recent?until=2026-13-01", "until"),
    ("/telemetry/violations?limit=-3", "limit"),
    ("/telemetry/latest?vehicle_id=,", "vehicle_id"),
    ("/telemetry/export.csv?limit=x", "limit"),
    ("/telemetry/trails?points=0", "points"),
    ("/analytics/vehicle-windows?limit=abc", "limit"),
    ("/ws?max_hz=0", "max_hz"),
    ("/ws?batch=maybe", "batch"),
    # given twice (which one to use would be a guess), odd numbers, a box off the globe
    ("/telemetry/recent?limit=5&limit=abc", "limit"),
    ("/telemetry/latest?bbox=11,48,12,49&bbox=abc", "bbox"),
    ("/ws?snapshot=recent&snapshot=latest", "snapshot"),
    ("/ws?max_hz=5_0", "max_hz"),
    ("/ws?max_hz=%205", "max_hz"),
    ("/telemetry/latest?bbox=-999,-999,999,999", "bbox"),
    ("/telemetry/density?bbox=0,-91,1,0", "bbox"),
])
async def test_bad_parameters_get_a_json_error_naming_them(make_settings, topic, url,
                                                            param) -> None:
    async with running_app(make_settings(topic)) as client:
        body = await get_json(client, url, status=422)
        assert body["parameter"] == param and param in body["error"]


async def test_unknown_paths_and_methods_answer_json(make_settings, topic) -> None:
    async with running_app(make_settings(topic)) as client:
        assert "error" in await get_json(client, "/nope", status=404)
        resp = await client.post("/telemetry/recent")
        assert resp.status == 405 and "error" in await resp.json()
        # a streamed answer would send its body to HEAD too (corrupting a pipelined
        # connection): those routes answer GET only
        for url in ("/telemetry/latest", "/telemetry/trails", "/telemetry/export.csv"):
            resp = await client.head(url)
            assert resp.status == 405, url
        assert (await client.head("/health")).status == 200
        # the dashboard's files, and a JSON 404 for anything else under /static
        assert (await client.get("/static/dashboard.js")).status == 200
        for url in ("/static/nope.js", "/static/" + "a" * 256, "/static/", "/static/.x"):
            assert "error" in await get_json(client, url, status=404), url


async def test_control_endpoints_answer_503_quickly_without_a_producer(make_settings,
                                                                        topic) -> None:
    async with running_app(make_settings(topic)) as client:
        await wait_for(lambda: client.app[CONTROL].ready.is_set())
        body = await get_json(client, "/status", status=503)
        assert set(body) == {"error"} and "producer" in body["error"]
        for url in ("/start-sim?rate_hz=5", "/stop-sim"):
            resp = await client.post(url)
            assert resp.status == 503
            assert "no producer answered" in (await resp.json())["error"]
        for bad in ("0", "-1", "50.5", "abc", "nan"):
            resp = await client.post(f"/start-sim?rate_hz={bad}")
            assert resp.status == 422
            assert (await resp.json())["parameter"] == "rate_hz"
        resp = await client.post("/start-sim?rate_hz=5&fleet_size=0")
        assert resp.status == 422 and (await resp.json())["parameter"] == "fleet_size"


async def test_control_token_is_required_when_configured(make_settings, topic) -> None:
    async with running_app(make_settings(topic, api_token="s3cret")) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Token": "nope"}):
            for url in ("/start-sim?rate_hz=1", "/stop-sim"):
                resp = await client.post(url, headers=headers)
                assert resp.status == 401
                assert "token" in (await resp.json())["error"]
        # the right token passes authentication (then: no producer here -> 503)
        resp = await client.post("/stop-sim", headers={"Authorization": "Bearer s3cret"})
        assert resp.status == 503
        resp = await client.post("/stop-sim", headers={"X-API-Token": "s3cret"})
        assert resp.status == 503
        # read endpoints and the page stay open
        assert (await client.get("/telemetry/recent")).status == 200
        assert (await client.get("/dashboard")).status == 200


async def test_cors_only_for_configured_origins(make_settings, topic) -> None:
    async with running_app(make_settings(topic, cors_origins=("http://ok.test",))) as client:
        ok = await client.get("/health", headers={"Origin": "http://ok.test"})
        assert ok.headers["Access-Control-Allow-Origin"] == "http://ok.test"
        other = await client.get("/health", headers={"Origin": "http://evil.test"})
        assert "Access-Control-Allow-Origin" not in other.headers
        pre = await client.options("/start-sim", headers={
            "Origin": "http://ok.test", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization"})
        assert pre.status == 204
        assert "POST" in pre.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in pre.headers["Access-Control-Allow-Headers"]
        bad = await client.options("/start-sim", headers={
            "Origin": "http://evil.test", "Access-Control-Request-Method": "POST"})
        assert bad.status == 403 and "Access-Control-Allow-Origin" not in bad.headers
        # what CORS cannot stop (a simple POST, a WebSocket) is refused for other origins
        resp = await client.post("/stop-sim", headers={"Origin": "http://evil.test"})
        assert resp.status == 403 and "WEBAPI_CORS_ORIGINS" in (await resp.json())["error"]
        resp = await client.get("/ws", headers={"Origin": "http://evil.test"})
        assert resp.status == 403
        async with client.ws_connect("/ws", origin="http://ok.test") as ws:
            assert (await ws.receive_json())["type"] == "snapshot"
    async with running_app(make_settings(topic)) as client:  # default: no CORS at all
        resp = await client.get("/health", headers={"Origin": "http://ok.test"})
        assert "Access-Control-Allow-Origin" not in resp.headers
        same = str(client.make_url("/")).rstrip("/")
        async with client.ws_connect("/ws", origin=same) as ws:  # the dashboard's case
            assert (await ws.receive_json())["type"] == "snapshot"
        resp = await client.post("/stop-sim", headers={"Origin": "http://ok.test"})
        assert resp.status == 403


async def test_restart_backfills_history_and_shutdown_stops_the_clients(dataset,
                                                                         make_settings) -> None:
    total = len(dataset["events"])
    async with running_app(make_settings(dataset["topic"])) as client:
        await consumed(client, total + len(MALFORMED))
        consumer, control = client.app[CONSUMER], client.app[CONTROL]
        await wait_for(lambda: control.ready.is_set())
    # after shutdown: the tasks are done and the Kafka clients stopped
    assert consumer.task is not None and consumer.task.done() and consumer.stopped
    assert consumer.client is not None and consumer.client._closed
    assert control.task is not None and control.task.done() and control.stopped
    assert control.producer is not None and control.producer._closed
    assert control.consumer is not None and control.consumer._closed

    # a restarted web API shows the history again...
    async with running_app(make_settings(dataset["topic"])) as client:
        await consumed(client, total + len(MALFORMED))
        assert len((await get_json(client, "/vehicles"))["items"]) == VEHICLES + 2
    # ...but no more than the configured number of events per partition
    async with running_app(make_settings(dataset["topic"], backfill_max_per_partition=10)
                           ) as client:
        await wait_for(lambda: client.app[CONSUMER].assigned.is_set())
        await wait_for(lambda: client.app[STORE].consumed_total > 0)
        await asyncio.sleep(1.0)
        assert 0 < client.app[STORE].consumed_total <= 30
    # and none with backfill off
    async with running_app(make_settings(dataset["topic"], backfill_seconds=0)) as client:
        await wait_for(lambda: client.app[CONSUMER].assigned.is_set())
        await asyncio.sleep(1.0)
        assert client.app[STORE].consumed_total == 0
        new = make_event("LATECOMER")
        await publish(client.app[CONSUMER].settings.kafka_bootstrap_servers,
                      dataset["topic"], [new])
        await wait_for(lambda: client.app[STORE].consumed_total == 1)


async def test_openapi_document_and_dashboard_are_served(make_settings, topic) -> None:
    async with running_app(make_settings(topic)) as client:
        doc = await get_json(client, "/openapi.json")
        expected = TelemetryEvent.model_json_schema(ref_template="#/components/schemas/{model}")
        expected.pop("$defs")
        assert doc["components"]["schemas"]["TelemetryEvent"] == expected
        routes = {r.resource.canonical for r in client.app.router.routes()
                  if r.resource is not None and r.method != "HEAD"}
        documented = set(doc["paths"])
        assert routes - documented <= {"/", "/static/{path}"}  # the dashboard's files

        page = await client.get("/dashboard")
        assert page.status == 200 and page.content_type == "text/html"
        csp = page.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        html = await page.text()
        for asset in ("/static/vendor/leaflet/leaflet.js", "/static/vendor/leaflet/leaflet.css",
                      "/static/vendor/leaflet-heat/leaflet-heat.js",
                      "/static/vendor/chartjs/chart.umd.js", "/static/dashboard.js",
                      "/static/dashboard.css"):
            assert asset in html
            resp = await client.get(asset)
            assert resp.status == 200, f"{asset}: run `npm --prefix webapi ci`"
        assert "http" not in html.split("<body", 1)[1].split(">", 1)[0]  # tiles off here
        js = await (await client.get("/static/dashboard.js")).text()
        assert "innerHTML" not in js and "insertAdjacentHTML" not in js


def _write_windows(folder: Path, rows: list[dict], name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


async def test_analytics_windows_read_committed_parquet(make_settings, topic,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "analytics"
    async with running_app(make_settings(topic, analytics_output_dir=out)) as client:
        for url in ("/analytics/vehicle-windows", "/analytics/road-windows"):
            assert await get_json(client, url) == {"items": [], "available": False}
        t0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)

        def vrow(minute: int, vid: str) -> dict:
            return {"window_start": t0 + timedelta(minutes=minute),
                    "window_end": t0 + timedelta(minutes=minute + 1), "vehicle_id": vid,
                    "samples": 60, "avg_speed_kmh": 50.0, "max_speed_kmh": 70.0,
                    "speeding_count": 3, "redline_count": 0, "distance_km": 0.8,
                    "fuel_used_pct": 0.1}

        vw = out / "vehicle_windows"
        _write_windows(vw, [vrow(0, "A"), vrow(1, "B")], "part-00000-a.parquet")
        _write_windows(vw, [vrow(2, "A")], "part-00001-b.parquet")
        body = await get_json(client, "/analytics/vehicle-windows")
        assert body["available"] is True
        assert [r["window_start"] for r in body["items"]] == [
            "2026-01-01T08:02:00+00:00", "2026-01-01T08:01:00+00:00", "2026-01-01T08:00:00+00:00"]
        assert set(body["items"][0]) == {"window_start", "window_end", "vehicle_id", "samples",
                                         "avg_speed_kmh", "max_speed_kmh", "speeding_count",
                                         "redline_count", "distance_km", "fuel_used_pct"}
        only_a = await get_json(client, "/analytics/vehicle-windows?vehicle_id=A&limit=1")
        assert [r["window_start"][11:16] for r in only_a["items"]] == ["08:02"]

        # the streaming sink's log decides: an uncommitted file is not read
        meta = vw / "_spark_metadata"
        meta.mkdir()
        (meta / "0").write_text('v1\n{"path":"file://%s","size":1,"isDir":false,'
                                '"modificationTime":1,"blockReplication":1,"blockSize":1,'
                                '"action":"add"}\n' % (vw / "part-00000-a.parquet"))
        body = await get_json(client, "/analytics/vehicle-windows")
        assert len(body["items"]) == 2

        road = {"window_start": t0, "window_end": t0 + timedelta(minutes=1),
                "road_type": "urban", "samples": 10, "vehicles": 3, "avg_speed_kmh": 40.0,
                "max_speed_kmh": 60.0, "speeding_count": 1, "redline_count": 0}
        _write_windows(out / "road_windows", [road], "part-00000-c.parquet")
        body = await get_json(client, "/analytics/road-windows")
        assert body["available"] is True and body["items"][0]["road_type"] == "urban"


def test_entry_point_binds_loopback_and_stops_cleanly(kafka_bootstrap: str, topic: str,
                                                      tmp_path: Path) -> None:
    """`python -m webapi`: env + flags, 127.0.0.1 by default, SIGTERM -> exit 0."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from tools.kafka import free_port

    root = Path(__file__).resolve().parent.parent
    port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_TOPIC": topic,
           "WEBAPI_PORT": "1"}  # the flag below wins over the environment
    env.pop("WEBAPI_HOST", None)
    log = tmp_path / "webapi.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "webapi", "--port", str(port)], cwd=root,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    assert json.loads(r.read()) == {"status": "ok"}
                    break
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        listening = Path("/proc/net/tcp").read_text()
        assert f"0100007F:{port:04X}" in listening  # 127.0.0.1, not 0.0.0.0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    bad = subprocess.run([sys.executable, "-m", "webapi"], cwd=root, capture_output=True,
                         text=True, env={**env, "WEBAPI_MAX_VEHICLES": "0"}, timeout=60)
    assert bad.returncode == 2 and "WEBAPI_MAX_VEHICLES" in bad.stderr
