"""Issue 9, the HTTP findings: each test replays the outside probe's attack against the real
app (aiohttp's TestServer on a loopback port, the session's real broker) and checks it now
fails to do harm."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from common.contract import MAX_FLEET_SIZE
from tests.support.webapi import make_event, running_app, wait_for
from webapi.decode import entry_from_event
from webapi.keys import CONTROL, HUB, STORE
from webapi.settings import Settings

pytestmark = pytest.mark.kafka

WS_HEADERS = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


@pytest.fixture
def settings(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path) -> Settings:
    return Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                    kafka_control_topic=topic_factory("control", 1),
                    kafka_status_topic=topic_factory("status", 1), api_token=None,
                    cors_origins=(), analytics_output_dir=tmp_path / "analytics",
                    control_timeout_s=0.5, status_stale_s=2.0, map_tile_url="")


async def raw_request(client, data: bytes) -> bytes:
    """Send raw bytes to the server and return everything it answers."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()


# ------------------------------------------------------------------------------ finding 1
@pytest.mark.parametrize("rate", ["5e-324", "1e-9", "0.0099", "nan", "NaN", "inf", "-inf",
                                  "-1", "0", "1e309", "50.0001", "", "abc", "0x10", "١"])
async def test_start_sim_refuses_rates_outside_the_contract(settings, rate) -> None:
    async with running_app(settings) as client:
        resp = await client.post("/start-sim", params={"rate_hz": rate})
        assert resp.status == 422, await resp.text()
        body = await resp.json()
        assert body["parameter"] == "rate_hz" and body["error"].startswith("rate_hz:")


@pytest.mark.parametrize("fleet", ["", "0", "-1", str(MAX_FLEET_SIZE + 1), "1e3", "2.5", "nan",
                                   "abc", "9" * 400])
async def test_start_sim_refuses_fleet_sizes_outside_the_contract(settings, fleet) -> None:
    async with running_app(settings) as client:
        resp = await client.post("/start-sim", params={"rate_hz": "1", "fleet_size": fleet})
        assert resp.status == 422, await resp.text()
        assert (await resp.json())["parameter"] == "fleet_size"


async def test_valid_bounds_pass_validation(settings) -> None:
    async with running_app(settings) as client:
        await wait_for(lambda: client.app[CONTROL].ready.is_set())
        for query in ({"rate_hz": "0.01"}, {"rate_hz": "50", "fleet_size": str(MAX_FLEET_SIZE)}):
            resp = await client.post("/start-sim", params=query)
            assert resp.status == 503  # valid: sent to the producer, and none runs here


# ------------------------------------------------------------------------------ finding 5
async def test_latest_has_a_limit_and_is_streamed(settings) -> None:
    async with running_app(settings) as client:
        store = client.app[STORE]
        for i in range(60):
            store.add(entry_from_event(make_event(f"CAR{i:03d}")))
        resp = await client.get("/telemetry/latest")
        assert resp.headers.get("Transfer-Encoding") == "chunked"  # never built whole
        assert len((await resp.json())["items"]) == 60
        few = await (await client.get("/telemetry/latest?limit=7")).json()
        assert [e["vehicle_id"] for e in few["items"]] == [f"CAR{i:03d}" for i in range(7)]
        for bad in ("0", "", "x"):
            resp = await client.get(f"/telemetry/latest?limit={bad}")
            assert resp.status == 422 and (await resp.json())["parameter"] == "limit"
    assert Settings().max_message_bytes <= 8192


# ------------------------------------------------------------------------------ finding 6
async def test_dns_rebinding_hosts_are_refused(settings) -> None:
    async with running_app(settings) as client:
        port = client.server.port
        evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
        for method, url in (("POST", "/stop-sim"), ("POST", "/start-sim?rate_hz=1"),
                            ("GET", "/telemetry/latest"), ("GET", "/status")):
            resp = await client.request(method, url, headers=evil)
            assert resp.status == 421, (url, await resp.text())
            assert "WEBAPI_ALLOWED_HOSTS" in (await resp.json())["error"]
        resp = await client.get("/ws", headers={**WS_HEADERS, **evil})
        assert resp.status == 421
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost"):
            assert (await client.get("/health", headers={"Host": host})).status == 200, host


async def test_origin_is_checked_against_this_servers_names_not_the_request_host(
        settings) -> None:
    async with running_app(settings.model_copy(
            update={"allowed_hosts": ("fleet.example",)})) as client:
        await wait_for(lambda: client.app[CONTROL].ready.is_set())
        port = client.server.port
        # a configured name, same origin: passes the checks (then 503: no producer here)
        ok = {"Host": f"fleet.example:{port}", "Origin": f"http://fleet.example:{port}"}
        assert (await client.post("/stop-sim", headers=ok)).status == 503
        for origin in (f"http://evil.example:{port}", f"http://127.0.0.1:{port + 1}",
                       "null", "http://" + "a" * 5000):
            resp = await client.post("/stop-sim", headers={"Origin": origin})
            assert resp.status == 403, origin
            assert len(await resp.read()) < 400  # the Origin is not echoed unbounded
            resp = await client.get("/ws", headers={**WS_HEADERS, "Origin": origin})
            assert resp.status == 403


# ------------------------------------------------------------------------------ finding 9
async def test_a_non_utf8_token_is_a_401_not_a_500(settings) -> None:
    async with running_app(settings.model_copy(update={"api_token": "s3cret"})) as client:
        for header in (b"X-API-Token: \xff\xfe\xfd", b"Authorization: Bearer \xc3\x28\xa0"):
            answer = await raw_request(client, b"POST /stop-sim HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                       + header + b"\r\nContent-Length: 0\r\n"
                                       b"Connection: close\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 401"), answer[:200]


async def test_malformed_requests_log_one_line_without_traceback(settings, caplog) -> None:
    async with running_app(settings) as client:
        with caplog.at_level(logging.DEBUG, logger="aiohttp.server"):
            for _ in range(30):
                answer = await raw_request(client, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                                   b"Content-Length: nope\r\n\r\n")
                assert answer.split(b" ", 2)[1] == b"400", answer[:100]
        logged = [r for r in caplog.records if r.name == "aiohttp.server"
                  and r.levelno >= logging.INFO]
        assert len(logged) == 1, [r.getMessage() for r in logged]
        assert logged[0].levelno == logging.WARNING and logged[0].exc_info is None
        assert "malformed HTTP request" in logged[0].getMessage()
        assert (await client.get("/health")).status == 200


async def test_preflight_errors_do_not_echo_an_unbounded_origin(settings) -> None:
    async with running_app(settings) as client:
        origin = "http://" + "x" * 6000 + ".example"
        resp = await client.options("/start-sim", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST"})
        assert resp.status == 403
        assert len(await resp.read()) < 400


async def test_one_address_cannot_take_every_websocket_slot(settings) -> None:
    settings = settings.model_copy(update={"ws_max_per_address": 2, "ws_max_clients": 50})
    async with running_app(settings) as client:
        async with client.ws_connect("/ws") as a, client.ws_connect("/ws") as b:
            await a.receive_json()
            await b.receive_json()
            resp = await client.get("/ws", headers=WS_HEADERS)
            assert resp.status == 503
            assert "WEBAPI_WS_MAX_PER_ADDRESS" in (await resp.json())["error"]
        await wait_for(lambda: not client.app[HUB].per_address)
        async with client.ws_connect("/ws") as c:  # slots come back when clients leave
            assert (await c.receive_json())["type"] == "snapshot"


async def test_vehicle_filter_matches_exactly_and_unprintable_ids_match_nothing(settings) -> None:
    async with running_app(settings) as client:
        store = client.app[STORE]
        for vid in ("CAR 1", "CAR1"):
            store.add(entry_from_event(make_event(vid)))
        for query, want in (("CAR 1", ["CAR 1"]), (" CAR1", []), ("CAR1 ", []),
                            ("CAR1,CAR 1", ["CAR 1", "CAR1"])):
            body = await (await client.get("/telemetry/latest",
                                           params={"vehicle_id": query})).json()
            assert [e["vehicle_id"] for e in body["items"]] == want, query
        for hostile in ("CAR\x001", "\x1b[2JCAR1", "CAR\u202e1", "C" * 65):
            resp = await client.get("/telemetry/latest", params={"vehicle_id": hostile})
            assert resp.status == 200 and (await resp.json()) == {"items": []}  # matches none


async def test_no_server_header_names_aiohttp(settings) -> None:
    async with running_app(settings) as client:
        for url in ("/health", "/nope", "/telemetry/latest", "/telemetry/export.csv"):
            resp = await client.get(url)
            server = resp.headers.get("Server", "")
            assert "aiohttp" not in server.lower() and "python" not in server.lower(), server
        answer = await raw_request(client, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                           b"Content-Length: nope\r\n\r\n")
        assert answer.split(b" ", 2)[1] == b"400", answer[:100]  # aiohttp's own answer
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert b"aiohttp" not in head and b"python/" not in head, head


# ------------------------------------------------------------------------------ finding 10
async def test_ws_without_handshake_is_a_documented_400(settings) -> None:
    async with running_app(settings) as client:
        resp = await client.get("/ws")
        assert resp.status == 400 and "error" in await resp.json()
        doc = await (await client.get("/openapi.json")).json()
        assert {"400", "403", "421", "503"} <= set(doc["paths"]["/ws"]["get"]["responses"])
        for path in ("/start-sim", "/stop-sim"):
            assert {"401", "403", "405", "421", "503"} <= set(
                doc["paths"][path]["post"]["responses"])
        assert "422" in doc["paths"]["/start-sim"]["post"]["responses"]


async def test_websocket_sessions_work_from_allowed_hosts(settings) -> None:
    async with running_app(settings) as client:
        url = f"http://localhost:{client.server.port}/ws"
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            assert (await ws.receive_json())["type"] == "snapshot"


@pytest.mark.parametrize("max_hz", ["5e-324", "0", "-1", "nan", "inf", "1e309", "", "x"])
async def test_websocket_rates_are_finite_and_bounded(settings, max_hz) -> None:
    async with running_app(settings) as client:
        resp = await client.get("/ws", params={"max_hz": max_hz}, headers=WS_HEADERS)
        assert resp.status == 422 and (await resp.json())["parameter"] == "max_hz"
