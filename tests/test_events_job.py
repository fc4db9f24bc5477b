"""The events job end to end: real pyspark (local[2], one session for the module) and the real
broker. Expected results are computed here, independently, in plain Python."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pyspark.sql import SparkSession

from analytics.settings import EventsSettings
from common.contract import Location, TelemetryEvent
from common.fleet_events import DEFAULT_ALERT_RULES, FLEET_EVENT, Geofence

pytestmark = [pytest.mark.spark, pytest.mark.kafka]

ROOT = Path(__file__).resolve().parent.parent
UTC = dt.UTC
T0 = dt.datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    from analytics.events_job import build_session

    settings = EventsSettings(master="local[2]", shuffle_partitions=2,
                              local_dir=tmp_path_factory.mktemp("spark-local"),
                              spark_conf={"spark.ui.enabled": "false",
                                          "spark.driver.memory": "1g"})
    session = build_session(settings)
    yield session
    session.stop()


# ---- Kafka helpers ------------------------------------------------------------------------

def publish(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            for key, value in records:
                await producer.send(topic, key=key, value=value)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(go())


def read_all(bootstrap: str, topic: str) -> list[tuple[str, dict[str, Any]]]:
    """Every record of ``topic`` now: (key, value as a dict)."""
    async def go() -> list[tuple[str, dict[str, Any]]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            if not parts:
                await consumer._client.force_metadata_update()  # noqa: SLF001
                parts = consumer.partitions_for_topic(topic) or set()
            from aiokafka import TopicPartition
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            out = []
            pending = {tp for tp in tps if ends[tp] > 0}
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=500)
                for records in batches.values():
                    out += [(r.key.decode(), json.loads(r.value)) for r in records]
                pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
            return out
        finally:
            await consumer.stop()

    return asyncio.run(go())


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f}s: {what}")
        time.sleep(0.5)


def settings_for(bootstrap: str, names: dict[str, str], tmp: Path, **extra: Any) -> EventsSettings:
    return EventsSettings(kafka_bootstrap_servers=bootstrap, kafka_topic=names["telemetry"],
                          events_topic=names["events"], geofences_topic=names["geofences"],
                          alert_rules_topic=names["rules"], checkpoint_dir=tmp / "checkpoint",
                          local_dir=tmp / "local", **{"trigger_seconds": 1.0, **extra})


@pytest.fixture
def names(topic_factory) -> dict[str, str]:
    return {"telemetry": topic_factory("telemetry", 3), "events": topic_factory("events", 3),
            "geofences": topic_factory("geofences", 1), "rules": topic_factory("rules", 1)}


def seeded_run(steps: int = 1300) -> list[dict[str, Any]]:
    """Seed 7, 3 cars: several finished trips, and one still going at the end."""
    out = subprocess.run(
        [sys.executable, "-m", "producer", "--stdout", "--seed", "7", "--vehicles", "3",
         "--rate-hz", "1", "--steps", str(steps), "--start-time", T0.isoformat()],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def records(events: list[dict[str, Any]]) -> list[tuple[bytes, bytes | None]]:
    return [(e["vehicle_id"].encode(), json.dumps(e).encode()) for e in events]


def ts(e: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(e["timestamp"])


# ---- expectations, computed the plain way -------------------------------------------------

def expected_trips(events: list[dict[str, Any]]) -> list[tuple]:
    """Trips as runs of ignition-on events, each ended by the next ignition-off event:
    (vehicle, trip_id, started, ended, samples, distance_km, fuel_used_pct, max_speed)."""
    by_car: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_car[e["vehicle_id"]].append(e)
    trips = []
    for vid, evs in by_car.items():
        evs.sort(key=lambda e: (ts(e), e["seq"]))
        run: list[dict[str, Any]] = []
        for e in evs:
            if e["ignition"]:
                run.append(e)
            elif run:
                whole = [*run, e]
                fuel = sum(max(a["fuel_level_pct"] - b["fuel_level_pct"], 0)
                           for a, b in zip(whole, whole[1:], strict=False))
                trips.append((vid, run[0]["trip_id"], ts(run[0]), ts(e), len(whole),
                              round(e["odometer_km"] - run[0]["odometer_km"], 3),
                              round(fuel, 3), max(x["speed_kmh"] for x in whole)))
                run = []
    return sorted(trips)


def box(lon0: float, lat0: float, lon1: float, lat1: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1],
                                                [lon0, lat1], [lon0, lat0]]]}


def expected_crossings(events: list[dict[str, Any]], fences: list[Geofence]) -> list[tuple]:
    """(vehicle, kind, fence, time, dwell_s or None) by a bounding-box test of each event."""
    by_car: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_car[e["vehicle_id"]].append(e)
    out = []
    for fence in fences:
        (lon0, lat0), _, (lon1, lat1), *_ = fence.geometry.coordinates[0]
        for vid, evs in by_car.items():
            entered = None
            for e in sorted(evs, key=lambda e: (ts(e), e["seq"])):
                loc = e["location"]
                inside = lon0 <= loc["lon"] <= lon1 and lat0 <= loc["lat"] <= lat1
                if inside and entered is None:
                    entered = ts(e)
                    out.append((vid, "geofence_entered", fence.id, entered, None))
                elif not inside and entered is not None:
                    out.append((vid, "geofence_exited", fence.id, ts(e),
                                (ts(e) - entered).total_seconds()))
                    entered = None
    return sorted(out, key=str)


def fences_for(events: list[dict[str, Any]]) -> list[Geofence]:
    """A box around part of TESTCAR02's first trip, and one around TESTCAR03's parking spot
    (odd sixth decimals: no position lies on an edge)."""
    car2 = [e for e in events if e["vehicle_id"] == "TESTCAR02" and e["ignition"]][40:80]
    lons = [e["location"]["lon"] for e in car2]
    lats = [e["location"]["lat"] for e in car2]
    car3 = next(e for e in events if e["vehicle_id"] == "TESTCAR03")["location"]
    return [
        Geofence(id="route", name="Part of a route",
                 geometry=box(min(lons) - 0.0000005, min(lats) - 0.0000005,
                              max(lons) + 0.0000005, max(lats) + 0.0000005)),
        Geofence(id="depot", name="Depot",
                 geometry=box(car3["lon"] - 0.0030005, car3["lat"] - 0.0020005,
                              car3["lon"] + 0.0030005, car3["lat"] + 0.0020005)),
    ]


def publish_fences(bootstrap: str, topic: str, fences: list[Geofence]) -> None:
    publish(bootstrap, topic, [(f.id.encode(), f.model_dump_json().encode()) for f in fences])


# ---- tests --------------------------------------------------------------------------------

def test_trips_and_geofence_crossings_of_a_seeded_run(
        spark: SparkSession, kafka_bootstrap: str, names: dict[str, str], tmp_path: Path) -> None:
    from analytics.events_job import run

    events = seeded_run()
    fences = fences_for(events)
    publish_fences(kafka_bootstrap, names["geofences"], fences)
    # set aside like the malformed record: in the middle of TESTCAR01's run, it would end
    # that car's trip at year 9999 and leave every later event of the car out of order
    future = {**events[len(events) // 2], "timestamp": "9999-12-31T23:59:59Z"}
    publish(kafka_bootstrap, names["telemetry"], records(events[:len(events) // 2])
            + [(b"bad", b"not json")] + records([future]) + records(events[len(events) // 2:]))
    settings = settings_for(kafka_bootstrap, names, tmp_path, once=True, trip_end_stop_s=3600)
    totals = run(settings, spark=spark)
    assert totals["observed"]["records"] == len(events) + 2
    assert totals["observed"]["malformed"] == 2

    got = read_all(kafka_bootstrap, names["events"])
    models = [FLEET_EVENT.validate_python(v) for _, v in got]
    assert all(k == m.vehicle_id for (k, _), m in zip(got, models, strict=True))
    assert len({m.event_id for m in models}) == len(models)  # no duplicates

    ended = sorted((m.vehicle_id, m.trip_id, m.summary.started_at, m.summary.ended_at,
                    m.summary.samples, round(m.summary.distance_km, 3),
                    round(m.summary.fuel_used_pct, 3), m.summary.max_speed_kmh)
                   for m in models if m.kind == "trip_ended")
    trips = expected_trips(events)
    assert len(trips) >= 3 and ended == trips
    assert all(m.summary.end_reason == "parked" for m in models if m.kind == "trip_ended")
    started = sorted((m.vehicle_id, m.trip_id, m.time) for m in models
                     if m.kind == "trip_started")
    # every finished trip started, and a trip still going at the end has started too
    last = {e["vehicle_id"]: e for e in sorted(events, key=lambda e: (ts(e), e["seq"]))}
    going = sum(e["ignition"] for e in last.values())
    assert going >= 1
    assert {t[:3] for t in trips} <= set(started) and len(started) == len(trips) + going

    crossings = sorted(((m.vehicle_id, m.kind, m.geofence_id, m.time,
                         getattr(m, "dwell_s", None)) for m in models
                        if m.kind.startswith("geofence_")), key=str)
    want = expected_crossings(events, fences)
    assert {c[2] for c in want} == {"route", "depot"} and len(want) >= 3
    assert crossings == want


def test_alerts_for_each_rule(spark: SparkSession, kafka_bootstrap: str,
                              names: dict[str, str], tmp_path: Path) -> None:
    from analytics.events_job import run
    from common.fleet_events import ALERT_RULE

    rules = [
        {"id": "speed-5s", "kind": "speeding_sustained", "duration_s": 5},
        {"id": "brake", "kind": "harsh_brake", "threshold_mps2": 4},
        {"id": "accel", "kind": "harsh_accel", "threshold_mps2": 3},
        {"id": "redline", "kind": "over_redline"},
        {"id": "fuel-10", "kind": "fuel_low", "threshold_pct": 10},
        {"id": "dtc", "kind": "new_fault_code"},
        {"id": "silent-3s", "kind": "silent", "duration_s": 3},
        {"id": "off", "kind": "over_redline", "enabled": False},
    ]
    publish(kafka_bootstrap, names["rules"],
            [(r["id"].encode(), ALERT_RULE.validate_python(r).model_dump_json().encode())
             for r in rules] + [(b"junk", b'{"id": "junk", "kind": "nope"}')])

    def car(vid: str, rows: list[dict[str, Any]]) -> list[TelemetryEvent]:
        base = {"speed_kmh": 50.0, "speeding": False, "rpm_over_redline": False,
                "fuel_level_pct": 50.0, "fault_codes": []}
        return [TelemetryEvent(
            vehicle_id=vid, timestamp=T0 + dt.timedelta(seconds=i),
            location=Location(lat=52.0, lon=21.0), engine_rpm=2500, gear=3, road_type="urban",
            speed_limit_kmh=50, seq=i, odometer_km=100 + i / 100, **{**base, **row})
            for i, row in enumerate(rows)]

    fast = {"speed_kmh": 80.0, "speeding": True}
    cars = {
        # speeding 0..7 s: one alert at 5 s; then clear, then 3 s (too short)
        "SPEED": car("SPEED", [fast] * 8 + [{"speed_kmh": 80.0}] + [fast] * 3),
        # -20 km/h in 1 s = 5.6 m/s² twice in a row (one episode), then again later
        "BRAKE": car("BRAKE", [{"speed_kmh": 60}, {"speed_kmh": 40}, {"speed_kmh": 20},
                               {"speed_kmh": 20}, {"speed_kmh": 0}]),
        "ACCEL": car("ACCEL", [{"speed_kmh": 0}, {"speed_kmh": 14}, {"speed_kmh": 20}]),
        "REDLINE": car("REDLINE", [{"rpm_over_redline": v} for v in (0, 1, 1, 0, 1)]),
        "FUEL": car("FUEL", [{"fuel_level_pct": f} for f in (11, 9.5, 9, 12, 8, 20, 9)]),
        "DTC": car("DTC", [{"fault_codes": c} for c in ([], ["P0300"], ["P0300", "P0171"],
                                                         ["P0171"], ["P0300", "P0171"])]),
    }
    want = {("SPEED", "speed-5s", 5), ("BRAKE", "brake", 1), ("BRAKE", "brake", 4),
            ("ACCEL", "accel", 1), ("REDLINE", "redline", 1), ("REDLINE", "redline", 4),
            ("FUEL", "fuel-10", 1), ("FUEL", "fuel-10", 6),
            ("DTC", "dtc", 1), ("DTC", "dtc", 2), ("DTC", "dtc", 4)}
    # every car goes silent after its last event: one silent alert each, naming that event
    want |= {(vid, "silent-3s", len(evs) - 1) for vid, evs in cars.items()}
    publish(kafka_bootstrap, names["telemetry"],
            [(e.vehicle_id.encode(), e.model_dump_json().encode())
             for evs in cars.values() for e in evs])

    stop = threading.Event()
    settings = settings_for(kafka_bootstrap, names, tmp_path)
    job = threading.Thread(target=run, args=(settings, spark, stop), daemon=True)
    job.start()
    try:
        def alerts() -> list[Any]:
            return [FLEET_EVENT.validate_python(v) for _, v in read_all(kafka_bootstrap,
                                                                        names["events"])
                    if v["kind"] == "alert"]
        wait_for("every expected alert", lambda: len(alerts()) >= len(want), 180)
        time.sleep(4)  # a silent alert fired twice, or an extra one, would show by now
        got = alerts()
        # a geofence written while the job runs is in effect from the next micro-batch
        publish_fences(kafka_bootstrap, names["geofences"], [Geofence(
            id="late", name="Added live", geometry=box(20.9999995, 51.9999995, 21.0000005,
                                                       52.0000005))])
        time.sleep(1)
        late = car("SPEED", [{}] * 13)[12]
        publish(kafka_bootstrap, names["telemetry"], [(b"SPEED", late.model_dump_json().encode())])
        wait_for("the live geofence's entry", lambda: [
            (v["geofence_id"], v["source_seq"]) for _, v in read_all(kafka_bootstrap,
                                                                     names["events"])
            if v["kind"] == "geofence_entered"] == [("late", 12)], 60)
    finally:
        stop.set()
        job.join(120)
    assert sorted((a.vehicle_id, a.rule_id, a.source_seq) for a in got) == sorted(want)
    codes = sorted(a.fault_code for a in got if a.rule_id == "dtc")
    assert codes == ["P0171", "P0300", "P0300"]
    silent = next(a for a in got if a.vehicle_id == "FUEL" and a.rule_kind == "silent")
    assert silent.time == T0 + dt.timedelta(seconds=6 + 3)


def test_restart_from_the_checkpoint_mid_run(spark: SparkSession, kafka_bootstrap: str,
                                             names: dict[str, str], tmp_path: Path,
                                             topic_factory) -> None:
    """Stop the running query while it has work to do, start it again from its checkpoint:
    together the two runs give exactly the events one uninterrupted run gives."""
    from analytics.events_job import run, start, stop_gracefully, wait_idle

    events = seeded_run(900)
    fences = fences_for(events)
    publish_fences(kafka_bootstrap, names["geofences"], fences)
    half, three_q = len(events) // 2, 3 * len(events) // 4
    # the reference: one uninterrupted run over everything, into its own topic
    reference = dict(names, telemetry=topic_factory("telemetry", 3),
                     events=topic_factory("events", 3))
    publish(kafka_bootstrap, reference["telemetry"], records(events))
    run(settings_for(kafka_bootstrap, reference, tmp_path / "ref", once=True), spark=spark)
    want = read_all(kafka_bootstrap, reference["events"])

    # a trigger every 3 s leaves time between batches to stop in, even on a busy machine
    settings = settings_for(kafka_bootstrap, names, tmp_path / "job",
                            max_offsets_per_trigger=30, trigger_seconds=3.0)
    publish(kafka_bootstrap, names["telemetry"], records(events[:half]))
    query = start(settings, spark)
    try:
        wait_idle(query, 180)
        batches = len(query.recentProgress)
        publish(kafka_bootstrap, names["telemetry"], records(events[half:three_q]))
        wait_for("a batch of the second half", lambda: any(
            p["numInputRows"] > 0 for p in query.recentProgress[batches:]), 60)
    finally:  # stopped after a batch of the third quarter: 30 records a batch, more to come
        stop_gracefully(query)
    # the last quarter arrives while the job is down: the restarted query always has work,
    # however fast the first one got through the third quarter on this machine
    publish(kafka_bootstrap, names["telemetry"], records(events[three_q:]))
    query = start(settings, spark)
    try:
        wait_idle(query, 180)
        after_restart = sum(p["numInputRows"] for p in query.recentProgress)
    finally:
        query.stop()
    assert after_restart > 0  # the stop did leave work for the restarted query
    got = read_all(kafka_bootstrap, names["events"])
    ids = [v["event_id"] for _, v in got]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(v["event_id"] for _, v in want)
    assert len(want) > 10 and {v["kind"] for _, v in want} >= {"trip_started", "trip_ended",
                                                               "geofence_entered"}
    assert sorted(json.dumps(v, sort_keys=True) for _, v in got) == \
        sorted(json.dumps(v, sort_keys=True) for _, v in want)
    assert DEFAULT_ALERT_RULES  # the default rules were in effect (the rules topic is empty)

