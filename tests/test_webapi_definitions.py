"""Geofences and alert rules through the web API, stored on real compacted topics (issue 12):
CRUD with the control token, read-your-writes, a second instance, what the events job reads
back (analytics.events_config.decode over the topics), and hostile input."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from analytics.events_config import decode
from common.fleet_events import DEFAULT_ALERT_RULES, MAX_ALERT_RULES, MAX_GEOFENCES
from common.kafka import read_compacted
from tests.support.webapi import running_app, wait_for
from webapi.keys import DEFINITIONS, FLEET_CONSUMER
from webapi.settings import Settings

pytestmark = pytest.mark.kafka

TOKEN = {"Authorization": "Bearer tok"}
SQUARE = [[11.5, 48.1], [11.6, 48.1], [11.6, 48.2], [11.5, 48.2], [11.5, 48.1]]


def fence(**over: Any) -> dict[str, Any]:
    doc = {"name": "Depot", "geometry": {"type": "Polygon", "coordinates": [SQUARE]}}
    doc.update(over)
    return doc


@pytest.fixture
def settings(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path) -> Settings:
    u = uuid.uuid4().hex[:10]
    return Settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                    kafka_control_topic=topic_factory("control", 1),
                    kafka_status_topic=topic_factory("status", 1),
                    kafka_network_topic=f"network-{u}", kafka_events_topic=f"events-{u}",
                    kafka_geofences_topic=f"geofences-{u}", kafka_alert_rules_topic=f"rules-{u}",
                    api_token="tok", cors_origins=(),  # noqa: S106
                    analytics_output_dir=tmp_path / "analytics", map_tile_url="",
                    control_timeout_s=1.0, status_stale_s=2.0, max_geofences=3,
                    max_geofence_vertices=10)


async def ready(client) -> None:
    defs = client.app[DEFINITIONS]
    await wait_for(lambda: defs.geofences.ready.is_set() and defs.rules.ready.is_set(), 60)


async def job_view(settings: Settings):
    """What the events job would read: the two topics folded, decoded by its own function."""
    fences = await read_compacted(settings, settings.kafka_geofences_topic)
    rules = await read_compacted(settings, settings.kafka_alert_rules_topic)
    return decode(fences, rules)


async def test_geofence_crud_token_and_the_job_reads_it(settings: Settings) -> None:
    async with running_app(settings) as client, running_app(settings) as other:
        await ready(client)
        await ready(other)
        assert await (await client.get("/geofences")).json() == {"items": []}
        refused = await client.post("/geofences", json=fence())
        assert refused.status == 401
        made = await client.post("/geofences", json=fence(), headers=TOKEN)
        assert made.status == 201, await made.text()
        stored = await made.json()
        assert set(stored) == {"id", "name", "geometry"} and len(stored["id"]) == 32
        assert int(stored["id"], 16) >= 0  # a uuid4 hex
        assert stored["geometry"]["coordinates"] == [SQUARE]
        # read-your-writes: no wait on this instance
        listed = await (await client.get("/geofences")).json()
        assert listed == {"items": [stored]}
        one = await client.get(f"/geofences/{stored['id']}")
        assert await one.json() == stored
        # the other instance reads it from the topic
        await wait_for(lambda: stored["id"] in other.app[DEFINITIONS].geofences.items)
        assert await (await other.get("/geofences")).json() == {"items": [stored]}
        named = await client.post("/geofences", json=fence(id="yard", name="Yard"),
                                  headers=TOKEN)
        assert named.status == 201 and (await named.json())["id"] == "yard"

        defs, invalid = await job_view(settings)
        assert invalid == 0
        assert sorted(f.id for f in defs.fences) == sorted([stored["id"], "yard"])
        yard = {f.id: f for f in defs.fences}["yard"]
        assert yard.name == "Yard" and [r.tolist() for r in yard.rings] == [SQUARE]

        assert (await client.delete("/geofences/yard")).status == 401
        gone = await client.delete("/geofences/yard", headers=TOKEN)
        assert gone.status == 204
        assert (await client.get("/geofences/yard")).status == 404
        assert (await client.delete("/geofences/yard", headers=TOKEN)).status == 404
        defs, _ = await job_view(settings)  # a tombstone: the job no longer sees it
        assert [f.id for f in defs.fences] == [stored["id"]]
        await wait_for(lambda: "yard" not in other.app[DEFINITIONS].geofences.items)
    for app in (client.app, other.app):  # shut down: tasks done, clients stopped
        assert app[DEFINITIONS].task is not None and app[DEFINITIONS].task.done()
        assert app[DEFINITIONS].producer is None
        assert app[FLEET_CONSUMER].task is not None and app[FLEET_CONSUMER].task.done()


async def test_alert_rules_defaults_replace_and_delete(settings: Settings) -> None:
    async with running_app(settings) as client:
        await ready(client)
        shown = (await (await client.get("/alert-rules")).json())["items"]
        assert [r["id"] for r in shown] == [r.id for r in DEFAULT_ALERT_RULES]
        assert all(r["default"] is True for r in shown)
        default = await client.delete("/alert-rules/default-silent-5min", headers=TOKEN)
        assert default.status == 409 and "default" in (await default.json())["error"]
        rule = {"id": "speed-10s", "kind": "speeding_sustained", "duration_s": 10}
        made = await client.post("/alert-rules", json=rule, headers=TOKEN)
        assert made.status == 201, await made.text()
        assert await made.json() == {**rule, "name": None, "enabled": True, "duration_s": 10.0}
        shown = (await (await client.get("/alert-rules")).json())["items"]
        assert shown == [{**(await made.json()), "default": False}]
        defs, _ = await job_view(settings)
        assert [r.id for r in defs.rules] == ["speed-10s"]
        assert (await client.get("/alert-rules/speed-10s")).status == 200
        assert (await client.delete("/alert-rules/speed-10s", headers=TOKEN)).status == 204
        shown = (await (await client.get("/alert-rules")).json())["items"]
        assert len(shown) == len(DEFAULT_ALERT_RULES) and shown[0]["default"] is True
        defs, _ = await job_view(settings)
        assert defs.rules == DEFAULT_ALERT_RULES
        bad = await client.post("/alert-rules", json={"kind": "fuel_low", "threshold_pct": 150},
                                headers=TOKEN)
        assert bad.status == 422 and "threshold_pct" in (await bad.json())["error"]


async def test_hostile_geofences_are_refused_with_a_reason(settings: Settings) -> None:
    async with running_app(settings) as client:
        await ready(client)

        async def refused(body: bytes, status: int = 422) -> str:
            resp = await client.post("/geofences", data=body, headers={
                **TOKEN, "Content-Type": "application/json"})
            assert resp.status == status, await resp.text()
            return str((await resp.json())["error"])

        def dumps(doc: Any) -> bytes:
            return orjson.dumps(doc)

        open_ring = [SQUARE[:-1] + [[11.5, 48.15]]]
        assert "not closed" in await refused(dumps(fence(geometry={
            "type": "Polygon", "coordinates": open_ring})))
        lat_lon = [[[48.1, 11.5], [48.1, 191.6], [48.2, 11.6], [48.1, 11.5]]]
        assert "out of range" in await refused(dumps(fence(geometry={
            "type": "Polygon", "coordinates": lat_lon})))
        many = [[[11.5 + i / 1000, 48.1 + (i % 2) / 1000] for i in range(11)] + [[11.5, 48.1]]]
        assert "too many vertices: 11 > 10" in await refused(dumps(fence(geometry={
            "type": "Polygon", "coordinates": many})))
        bowtie = [[[11.5, 48.1], [11.6, 48.2], [11.6, 48.1], [11.5, 48.2], [11.5, 48.1]]]
        assert "crosses itself" in await refused(dumps(fence(geometry={
            "type": "Polygon", "coordinates": bowtie})))
        nan = dumps(fence()).replace(b"11.6", b"NaN", 1)
        assert "not valid JSON" in await refused(nan)
        assert "body" in await refused(dumps(fence(id="bad\x01id")))
        assert "body" in await refused(dumps(fence(id="x" * 65)))
        assert "body" in await refused(dumps(fence(extra=1)))
        assert "JSON object" in await refused(b"[1,2]")
        assert "larger than" in await refused(b"{" + b" " * 200_000 + b"}", 413)
        assert await (await client.get("/geofences")).json() == {"items": []}
        # WEBAPI_MAX_GEOFENCES (3 here): the fourth is refused, replacing one is not
        for i in range(3):
            ok = await client.post("/geofences", json=fence(id=f"f{i}"), headers=TOKEN)
            assert ok.status == 201
        full = await client.post("/geofences", json=fence(id="f3"), headers=TOKEN)
        assert full.status == 409 and "WEBAPI_MAX_GEOFENCES" in (await full.json())["error"]
        again = await client.post("/geofences", json=fence(id="f0", name="Renamed"),
                                  headers=TOKEN)
        assert again.status == 201
        assert (await client.get("/geofences/bad%01id")).status == 404
        stored = await read_compacted(settings, settings.kafka_geofences_topic)
        assert sorted(stored) == [b"f0", b"f1", b"f2"]
        assert orjson.loads(stored[b"f0"])["name"] == "Renamed"


# ---------------------------------------------------------------------------- audit findings
async def send_records(settings: Settings, topic: str,
                       records: list[tuple[bytes, bytes | None]]) -> None:
    """Records written straight to a topic (not through the API), each with its key."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                acks="all", linger_ms=5, max_request_size=1 << 20)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, key=k, value=v) for k, v in records])
    finally:
        await producer.stop()


def fence_json(ident: str, coords: list[list[float]] = SQUARE, **over: Any) -> bytes:
    return orjson.dumps({"id": ident, **fence(geometry={"type": "Polygon",
                                                        "coordinates": [coords]}, **over)})


def rule_json(ident: str, **over: Any) -> bytes:
    return orjson.dumps({"id": ident, "kind": "fuel_low", "threshold_pct": 10, **over})


OTHER = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]]


async def test_a_definition_record_is_read_by_one_rule_in_the_api_and_the_job(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    g, r = settings.kafka_geofences_topic, settings.kafka_alert_rules_topic
    async with running_app(settings) as client:
        await ready(client)
        await send_records(settings, g, [
            (b"depot", fence_json("depot")),
            (b"zzz-hidden", fence_json("depot", OTHER, name="attacker")),  # key is not the id
            (b"\xff", fence_json("\ufffd")), (b"\xfe", fence_json("\ufffd", name="2nd")),
            (b"big", b'{"id":"big","pad":"' + b"P" * 200_000 + b'"}')])
        await send_records(settings, r, [
            (b"lax", rule_json("lax", threshold_pct="10", enabled="true")),  # strict JSON
            (b"ok", rule_json("ok"))])
        view = client.app[DEFINITIONS]
        await wait_for(lambda: view.geofences.invalid == 4 and "ok" in view.rules.items)
        assert sorted(view.geofences.items) == ["depot"] and sorted(view.rules.items) == ["ok"]
        defs, invalid = await job_view(settings)
        assert invalid == 5
        assert [(f.id, f.name) for f in defs.fences] == [("depot", "Depot")]
        assert [x.id for x in defs.rules] == ["ok"]
        assert (await client.delete("/geofences/depot", headers=TOKEN)).status == 204
        assert await (await client.get("/geofences")).json() == {"items": []}
        defs, _ = await job_view(settings)
        assert defs.fences == ()  # no hidden polygon left in effect
    lines = [x.getMessage() for x in caplog.records if x.name == "webapi.definitions"]
    assert len(lines) == 5 and max(map(len, lines)) < 400
    assert not any("PPPP" in line for line in lines)


async def test_definitions_beyond_the_cap_are_the_same_in_the_api_and_the_job(
        settings: Settings) -> None:
    n = MAX_ALERT_RULES + 5
    ids = [f"r{i:04d}" for i in range(n)]
    await send_records(settings, settings.kafka_alert_rules_topic,
                       [(i.encode(), rule_json(i)) for i in reversed(ids)])
    async with running_app(settings) as client:
        await ready(client)
        view = client.app[DEFINITIONS].rules
        assert view.over_cap == 5
        shown = (await (await client.get("/alert-rules")).json())["items"]
        assert [x["id"] for x in shown] == ids[:MAX_ALERT_RULES]
        defs, invalid = await job_view(settings)
        assert invalid == 0 and [x.id for x in defs.rules] == ids[:MAX_ALERT_RULES]
        full = await client.post("/alert-rules", json={"kind": "over_redline"}, headers=TOKEN)
        assert full.status == 409
        assert (await client.delete("/alert-rules/r0000", headers=TOKEN)).status == 204
        shown = (await (await client.get("/alert-rules")).json())["items"]
        assert [x["id"] for x in shown] == ids[1:MAX_ALERT_RULES + 1]  # the next one in
        assert view.over_cap == 4
        defs, _ = await job_view(settings)
        assert [x.id for x in defs.rules] == ids[1:MAX_ALERT_RULES + 1]
        hidden = ids[-1]  # over the cap: not shown, but it can be deleted
        assert (await client.get(f"/alert-rules/{hidden}")).status == 404
        assert (await client.delete(f"/alert-rules/{hidden}", headers=TOKEN)).status == 204
        assert view.over_cap == 3 and hidden not in view.valid
        assert (await client.delete(f"/alert-rules/{hidden}", headers=TOKEN)).status == 404


def test_the_api_cannot_be_set_beyond_the_readers_caps(settings: Settings) -> None:
    with pytest.raises(ValueError, match=f"less than or equal to {MAX_ALERT_RULES}"):
        Settings(**{**settings.model_dump(), "max_alert_rules": MAX_ALERT_RULES + 1})
    with pytest.raises(ValueError, match=f"less than or equal to {MAX_GEOFENCES}"):
        Settings(**{**settings.model_dump(), "max_geofences": MAX_GEOFENCES + 1})
