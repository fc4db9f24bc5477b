"""Pure unit tests of the web API's parts: no broker, no server."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from multidict import MultiDict

from common.contract import CSV_COLUMNS, EVENT_FIELDS, ProducerStatus, TelemetryEvent
from common.spreadsheet import neutralise
from tests.support.webapi import make_event
from webapi import csvexport, openapi
from webapi.decode import MALFORMED_KINDS, Limits, Malformed, decode, entry_from_event
from webapi.hub import Hub, event_frame
from webapi.metrics import Metrics
from webapi.params import ApiError, int_param, time_range, vehicles_param
from webapi.settings import ENV_NAMES, Settings
from webapi.store import TelemetryStore

T0 = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


def entry(vid: str = "CAR1", seconds: float = 0, **kw):
    return entry_from_event(make_event(vid, timestamp=T0 + timedelta(seconds=seconds), **kw))


LIMITS = Limits(max_bytes=8192, max_age_s=86_400, max_future_s=300)


def check(value: bytes | None, key: bytes | None = b"CAR1", now: float | None = None):
    return decode(value, key, LIMITS, T0.timestamp() if now is None else now)


# ----------------------------------------------------------------------------- decode
def test_decode_round_trips_the_contract() -> None:
    ev = make_event("CAR1", seq=7, speed_kmh=80.0, timestamp=T0)
    e = check(ev.model_dump_json().encode())
    assert e.vehicle_id == "CAR1" and e.violation is True
    assert TelemetryEvent.model_validate_json(e.raw) == ev
    assert tuple(orjson.loads(e.raw)) == EVENT_FIELDS
    assert set(orjson.loads(e.trail_point)) == {"timestamp", "lat", "lon", "speed_kmh"}


GOOD = make_event("CAR1", timestamp=T0, fault_codes=["P0300"]).model_dump_json()


def bad(old: str, new: str) -> bytes:
    assert old in GOOD
    return GOOD.replace(old, new, 1).encode("utf-8", "surrogatepass")


@pytest.mark.parametrize(("value", "kind"), [
    (b"not json", "not_json"),
    (None, "not_json"),
    (b"[1, 2]", "not_object"),
    (b'"text"', "not_object"),
    (b'{"vehicle_id": "A"}', "missing_field"),
    (GOOD.encode().replace(b"CAR1", b"CA\xff1"), "not_utf8"),
    (bad('"gear":3', '"gear":"third"'), "wrong_type"),
    (bad('"speed_kmh":42.0', '"speed_kmh":"42.5"'), "wrong_type"),  # no lax coercion
    (bad('"speeding":false', '"speeding":"yes"'), "wrong_type"),
    (bad('"gear":3', '"gear":3.0'), "wrong_type"),
    (bad('"timestamp":"2026-01-01T08:00:00.000000+00:00"', '"timestamp":1767254400'),
     "wrong_type"),
    # pydantic alone reads a string of digits as seconds (or milliseconds) since the epoch
    (bad('"timestamp":"2026-01-01T08:00:00.000000+00:00"', '"timestamp":"1767254400"'),
     "wrong_type"),
    (bad('"timestamp":"2026-01-01T08:00:00.000000+00:00"', '"timestamp":"20000000001"'),
     "wrong_type"),
    (bad('"speed_kmh":42.0', '"speed_kmh":Infinity'), "not_finite"),
    (bad('"speed_kmh":42.0', '"speed_kmh":NaN'), "not_finite"),
    (bad('"lat":48.137', '"lat":-Infinity'), "not_finite"),
    (bad('"speed_kmh":42.0', '"speed_kmh":-4'), "out_of_range"),
    (bad('"seq":0', '"seq":' + "9" * 30), "out_of_range"),
    (bad('"odometer_km":0.0', '"odometer_km":1e300'), "out_of_range"),
    (bad('"schema_version":1', '"schema_version":99999'), "out_of_range"),
    (bad('"trip_id":""', '"trip_id":"' + "t" * 65 + '"'), "out_of_range"),
    (bad('"fault_codes":["P0300"]', '"fault_codes":' + orjson.dumps(["P0300"] * 33).decode()),
     "out_of_range"),
    (bad('"fault_codes":["P0300"]', '"fault_codes":["' + "P" * 17 + '"]'), "out_of_range"),
    (bad('"vehicle_id":"CAR1"', '"vehicle_id":"' + "C" * 65 + '"'), "out_of_range"),
    (bad('"vehicle_id":"CAR1"', '"vehicle_id":"CAR\\u00001"'), "unprintable"),
    (bad('"vehicle_id":"CAR1"', '"vehicle_id":"\\u001b[31mCAR1"'), "unprintable"),
    (bad('"vehicle_id":"CAR1"', '"vehicle_id":"CAR\u202e1"'), "unprintable"),
    (bad('"vehicle_id":"CAR1"', '"vehicle_id":"CAR\u200f1"'), "unprintable"),
    (bad('"fault_codes":["P0300"]', '"fault_codes":["P03\\u000a0"]'), "unprintable"),
    (bad('"timestamp":"2026', '"timestamp":"2263'), "in_future"),
    (bad('"timestamp":"2026', '"timestamp":"9999'), "in_future"),
    (bad('"timestamp":"2026-01-01T08:00:00.000000+00:00"',
         '"timestamp":"9999-12-31T23:59:59.000000-01:00"'), "in_future"),
    (bad('"timestamp":"2026', '"timestamp":"1970'), "too_old"),
    (b"{" + b" " * 9000 + b"}", "oversized"),
])
def test_malformed_messages_are_classified(value, kind) -> None:
    with pytest.raises(Malformed) as info:
        check(value)
    assert info.value.kind == kind, info.value.detail
    assert kind in MALFORMED_KINDS


def test_the_kafka_key_must_be_the_vehicle_id() -> None:
    assert check(GOOD.encode(), b"CAR1").vehicle_id == "CAR1"
    for key in (None, b"", b"CAR2", b"CAR1 ", b"car1"):
        with pytest.raises(Malformed) as info:
            check(GOOD.encode(), key)
        assert info.value.kind == "key_mismatch"


def test_the_timestamp_window_follows_the_consumer_clock() -> None:
    now = T0.timestamp()
    assert check(GOOD.encode(), now=now + 86_399).ts == now  # a day of backfill passes
    assert check(GOOD.encode(), now=now - 299).ts == now  # clock skew within 300 s passes
    with pytest.raises(Malformed, match="too_old"):
        check(GOOD.encode(), now=now + 86_401)
    with pytest.raises(Malformed, match="in_future"):
        check(GOOD.encode(), now=now - 301)


def test_printable_id_is_one_shared_check() -> None:
    from common.contract import is_printable_id

    for ok in ("TESTCAR01", "Car 7", "Łódź-1", "車両-3", "=HYPERLINK(x)"):
        assert is_printable_id(ok), ok
    for hostile in ("A\x00B", "\x1b[2J", "A\u202eB", "A\u2066B", "A\u200bB", "A\u2028B",
                    "A\ud800B", "A\ue000B", "A\x7fB", "A\x85B"):
        assert not is_printable_id(hostile), repr(hostile)


# ----------------------------------------------------------------------------- store
def test_store_is_bounded_and_evicts_least_recently_seen_vehicle() -> None:
    store = TelemetryStore(recent_size=100, violations_size=10, max_vehicles=3, trail_points=4)
    for i in range(1000):  # five cars round robin, then only the last three
        vid = f"CAR{i % 5}" if i < 500 else f"CAR{2 + i % 3}"
        store.add(entry(vid, i, speed_kmh=90.0 if i % 2 else 10.0), now=i / 100)
    assert len(store.recent) == 100 and len(store.violations) == 10
    assert store.vehicles() == ["CAR2", "CAR3", "CAR4"]  # the three seen last
    assert set(store.trails) == set(store.latest)
    assert all(len(t) == 4 for t in store.trails.values())
    assert store.consumed_total == 1000 and store.violations_total == 500
    assert store.evicted_total == 500 - 3


def test_store_reads_filters_and_orders() -> None:
    store = TelemetryStore(recent_size=100, violations_size=100, max_vehicles=10, trail_points=5)
    for i in range(20):
        store.add(entry("A" if i % 2 else "B", i, speed_kmh=90.0 if i % 4 == 0 else 10.0))
    recent = store.recent_items(5)
    assert [e.ts for e in recent] == sorted(e.ts for e in recent)
    assert recent[-1].ts == (T0 + timedelta(seconds=19)).timestamp()
    only_a = store.recent_items(100, frozenset({"A"}))
    assert {e.vehicle_id for e in only_a} == {"A"} and len(only_a) == 10
    window = store.recent_items(100, None, (T0 + timedelta(seconds=5)).timestamp(),
                                (T0 + timedelta(seconds=9)).timestamp())
    assert len(window) == 5
    viol = store.violation_items(3)
    assert [e.ts for e in viol] == sorted((e.ts for e in viol), reverse=True)
    assert all(e.violation for e in viol)
    trails = store.trail_items(frozenset({"A", "nope"}), 3)
    assert [(v, len(p)) for v, p in trails] == [("A", 3)]
    # a late (older) event does not move the vehicle back
    store.add(entry("A", -100))
    assert store.latest["A"].ts == (T0 + timedelta(seconds=19)).timestamp()


def test_events_per_second_over_ten_seconds() -> None:
    store = TelemetryStore(recent_size=100, violations_size=10, max_vehicles=3, trail_points=4)
    for i in range(200):
        store.add(entry("A", i), now=1000 + i / 20)  # 20 events/s for 10 s
    assert store.events_per_s(now=1009.99) == pytest.approx(20.0)
    assert store.events_per_s(now=1100) == 0.0


# ----------------------------------------------------------------------------- csv
def test_csv_keeps_columns_types_and_neutralises_formulas() -> None:
    evil = entry("=HYPERLINK(\"x\")", 0, lon=-0.1278, lat=-51.5, speed_kmh=80.0)
    plain = entry("CAR1", 1, engine_rpm=6500)
    text = b"".join(csvexport.chunks([evil, plain], rows_per_chunk=1)).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[1][1] == "'=HYPERLINK(\"x\")"
    assert rows[1][2] == "-51.5" and rows[1][3] == "-0.1278"  # negative numbers stay numbers
    assert rows[1][10:] == ["1", "0"] and rows[2][10:] == ["0", "1"]
    assert rows[2][0] == "2026-01-01T08:00:01.000000+00:00"
    for prefix in ("=", "+", "-", "@"):
        assert neutralise(prefix + "x") == "'" + prefix + "x"
    assert neutralise(-5) == -5 and neutralise(-5.5) == -5.5


# ----------------------------------------------------------------------------- params
def test_parameters_name_themselves_when_bad() -> None:
    q = MultiDict({"limit": "5000"})
    assert int_param(q, "limit", 100, minimum=1, cap=2000) == 2000
    for bad in ("0", "-1", "abc", "1.5"):
        with pytest.raises(ApiError) as info:
            int_param(MultiDict({"limit": bad}), "limit", 100, minimum=1, cap=2000)
        assert info.value.status == 422 and info.value.body["parameter"] == "limit"
        assert info.value.body["error"].startswith("limit:")
    many = MultiDict([("vehicle_id", "A,B"), ("vehicle_id", "C")])
    assert vehicles_param(many) == {"A", "B", "C"}
    assert vehicles_param(MultiDict()) is None
    with pytest.raises(ApiError):
        vehicles_param(MultiDict({"vehicle_id": ","}))
    assert vehicles_param(MultiDict({"vehicle_id": " A ,B"})) == {" A ", "B"}  # exact match
    # ids no event can have match nothing: dropped before any lookup
    assert vehicles_param(MultiDict({"vehicle_id": "A\x00,\x1b[31mA,A\u202eB," + "x" * 65
                                                   + ",B"})) == {"B"}
    for hostile in ("", ",,", "x" * 70_000):
        with pytest.raises(ApiError) as info:
            vehicles_param(MultiDict({"vehicle_id": hostile}))
        assert info.value.body["parameter"] == "vehicle_id"
    for name in ("limit", "since", "until"):  # given empty: refused, like the schema says
        with pytest.raises(ApiError) as info:
            if name == "limit":
                int_param(MultiDict({name: ""}), name, 100, minimum=1)
            else:
                time_range(MultiDict({name: ""}))
        assert info.value.body["parameter"] == name
    since, until = time_range(MultiDict({"since": "2026-01-01T08:00:00Z",
                                         "until": "2026-01-01T09:00:00"}))
    assert until - since == 3600
    since, until = time_range(MultiDict({"since": "2026-01-02T00:00:00Z",
                                         "until": "2026-01-01T00:00:00Z"}))
    assert since > until  # an empty range, not an error: the schema cannot forbid it


# ----------------------------------------------------------------------------- settings
def test_settings_read_env_and_name_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("WEBAPI_CORS_ORIGINS", "http://a.example, http://b.example/")
    monkeypatch.setenv("WEBAPI_PORT", "8123")
    monkeypatch.setenv("FLEETSTREAM_API_TOKEN", "  ")
    s = Settings()
    assert s.cors_origins == ("http://a.example", "http://b.example")
    assert s.port == 8123 and s.api_token is None and s.host == "127.0.0.1"
    monkeypatch.setenv("WEBAPI_MAX_VEHICLES", "0")
    with pytest.raises(ValueError, match="WEBAPI_MAX_VEHICLES"):
        Settings()
    with pytest.raises(ValueError, match="KAFKA_TOPIC must be a Kafka topic name"):
        Settings(kafka_topic=" ", max_vehicles=5)
    assert ENV_NAMES["analytics_output_dir"] == "ANALYTICS_OUTPUT_DIR"
    with pytest.raises(Exception, match="frozen"):
        s.port = 1  # type: ignore[misc]


# ----------------------------------------------------------------------------- openapi
def test_openapi_event_schema_comes_from_the_model() -> None:
    doc = openapi.build(recent_cap=2000, export_cap=10000, violations_cap=2000,
                        trail_points=30, token_required=True)
    expected = TelemetryEvent.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = expected.pop("$defs")
    assert doc["components"]["schemas"]["TelemetryEvent"] == expected
    for name, schema in defs.items():
        assert doc["components"]["schemas"][name] == schema
    assert doc["openapi"].startswith("3.")
    status = doc["components"]["schemas"]["Status"]
    assert set(status["required"]) == set(status["properties"]) == {*openapi.STATUS_KEYS,
                                                                     "instances"}
    assert set(openapi.STATUS_KEYS) <= set(ProducerStatus.model_fields)
    assert set(openapi.INSTANCE_KEYS) <= set(ProducerStatus.model_fields)
    orjson.dumps(doc)


# ----------------------------------------------------------------------------- hub
async def test_hub_drops_oldest_for_a_slow_subscriber_only() -> None:
    hub = Hub(Metrics(), queue_size=10, max_clients=2)
    slow = hub.subscribe(None, "10.0.0.1")
    picky = hub.subscribe(frozenset({"B"}), "10.0.0.2")
    assert hub.full()
    batch = [entry("A" if i % 2 else "B", i) for i in range(100)]
    hub.publish(batch)
    assert len(slow.queue) == 10 and slow.dropped == 90
    assert list(slow.queue) == [event_frame(e) for e in batch[-10:]]  # newest kept
    assert picky.dropped == 40 and list(picky.queue) == [
        event_frame(e) for e in batch if e.vehicle_id == "B"][-10:]
    # B's events 90..98 are in both queues as the same objects: each frame is built once
    assert len({id(f) for f in slow.queue} & {id(f) for f in picky.queue}) == 5
    assert slow.wake.is_set()
    assert hub.dropped_total == 130
    hub.unsubscribe(slow)
    hub.publish(batch[:1])
    assert hub.dropped_total == 131  # picky is still full: only its own drop counted
    await asyncio.sleep(0)


def test_hub_caps_clients_per_address() -> None:
    hub = Hub(Metrics(), queue_size=10, max_clients=10, max_per_address=2)
    a1, _a2 = hub.subscribe(None, "10.0.0.1"), hub.subscribe(None, "10.0.0.1")
    assert hub.full("10.0.0.1") and not hub.full("10.0.0.2") and not hub.full()
    hub.unsubscribe(a1)
    hub.unsubscribe(a1)  # twice: counted once
    assert not hub.full("10.0.0.1") and hub.per_address == {"10.0.0.1": 1}


# ----------------------------------------------------------------------------- logging
def test_malformed_logging_is_rate_limited(caplog) -> None:
    import logging

    from common.logs import RateLimitedLog

    rl = RateLimitedLog(logging.getLogger("webapi.test"), interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="webapi.test"):
        for i in range(1000):
            rl.warning("not_json", "bad message %d", i)
            rl.warning("oversized", "big message %d", i)
    assert [r.getMessage() for r in caplog.records] == ["bad message 0", "big message 0"]
    rl.interval_s = 0
    with caplog.at_level(logging.WARNING, logger="webapi.test"):
        rl.warning("not_json", "bad message %d", 1000)
    assert "999 similar suppressed" in caplog.records[-1].getMessage()




# ----------------------------------------------------------------------------- live view
def test_store_staleness_by_receipt_time_not_event_time() -> None:
    store = TelemetryStore(recent_size=100, violations_size=10, max_vehicles=2, trail_points=5,
                           timeout_s=120)
    store.add(entry("OLD", seconds=0), seen=1000.0)  # event time T0, long ago: irrelevant
    store.add(entry("NEW", seconds=0), seen=1100.0)
    assert store.active_ids(now=1119.0) == ["NEW", "OLD"]
    assert store.active_ids(now=1121.0) == ["NEW"]
    assert store.stale_ids(now=1121.0) == ["OLD"] and store.active_count(now=1121.0) == 1
    assert [e.vehicle_id for e in store.latest_items(now=1121.0)] == ["NEW"]
    assert [e.vehicle_id for e in store.latest_items(include_stale=True, now=1121.0)] == [
        "NEW", "OLD"]
    store.add(entry("OLD", seconds=1), seen=1125.0)  # heard from again: back
    assert store.active_ids(now=1126.0) == ["NEW", "OLD"]
    store.add(entry("THIRD"), seen=1130.0)  # max_vehicles=2: the least recent goes, seen too
    assert set(store.seen) == set(store.latest) == {"OLD", "THIRD"}


def test_bbox_and_flag_parameters() -> None:
    from webapi.params import bbox_param, flag_param

    assert bbox_param({"bbox": "20.9,52.1,-21.1,52.3"}) == (20.9, 52.1, -21.1, 52.3)
    assert bbox_param({}) is None
    for bad in ("1,2,3", "1,2,3,4,5", "1e3,0,1,1", "nan,0,1,1", " 1,2,3,4", "1,2,3,4 ", ""):
        with pytest.raises(ApiError) as err:
            bbox_param({"bbox": bad})
        assert err.value.status == 422 and err.value.body["parameter"] == "bbox"
    assert flag_param({"x": "true"}, "x") and flag_param({"x": "1"}, "x")
    assert not flag_param({"x": "0"}, "x") and not flag_param({}, "x")
    with pytest.raises(ApiError):
        flag_param({"x": "yes"}, "x")


def test_replay_speed_and_network_headers() -> None:
    from webapi.network import _matches, accepts_gzip
    from webapi.replay import speed_param

    assert speed_param(None) == 1.0 and speed_param("max") is None
    assert speed_param("1") == 1.0 and speed_param("100") == 100.0
    for bad in ("0.99", "101", "inf", "nan", "fast", ""):
        with pytest.raises(ApiError) as err:
            speed_param(bad)
        assert err.value.body["parameter"] == "speed"
    assert accepts_gzip("gzip, deflate, br") and accepts_gzip("br;q=1, gzip;q=0.5")
    assert not accepts_gzip("identity") and not accepts_gzip("gzip;q=0") and not accepts_gzip("")
    assert _matches('"abc"', '"abc"') and _matches('W/"abc", "x"', '"abc"') and _matches("*", '"a"')
    assert not _matches('"abcd"', '"abc"') and not _matches("", '"abc"')


def test_replays_and_trip_routes_share_the_range_read_slots() -> None:
    """Each WS /replay and each GET /trips/{id} reads Kafka with a consumer of its own:
    together at most WEBAPI_REPLAY_MAX_CLIENTS at once, then a 503 (100 parallel route reads
    had no cap and slowed /health to a second)."""
    from aiohttp import web

    from webapi.keys import REPLAYS, SETTINGS
    from webapi.params import ApiError
    from webapi.replay import range_read_slot
    from webapi.settings import Settings

    app = web.Application()
    app[SETTINGS], app[REPLAYS] = Settings(replay_max_clients=2), set()
    with range_read_slot(app), range_read_slot(app):
        with pytest.raises(ApiError) as info, range_read_slot(app):
            pass
        assert info.value.status == 503 and "WEBAPI_REPLAY_MAX_CLIENTS=2" in str(info.value)
    assert app[REPLAYS] == set()
    with range_read_slot(app):  # a slot is given back when its read ends
        assert len(app[REPLAYS]) == 1
