"""Leader failover on the 3-broker cluster (tools.cluster): at about 5,000 events/s, the broker
leading the most telemetry partitions is SIGKILLed and restarted 20 s later.

- No acknowledged event is lost or duplicated: read back with isolation_level=read_committed,
  every car's seq is 0, 1, 2, ... and the topic holds exactly what the producers acknowledged.
- Two producer instances share the fleet (PRODUCER_GROUP); they go on publishing once their
  clients' metadata names the new leaders.
- Both web API instances keep serving /health and /telemetry/latest while the broker is away.
- The analytics job (Spark, local[2]: beside 3 brokers on 2 cores the standalone master's
  extra JVMs would crowd out the rest) keeps its checkpoint and writes each window once,
  with exactly the samples the topic holds for it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from aiokafka.errors import KafkaError

from analytics.reader import read_windows
from common.contract import ProducerStatus
from tests.support.cluster import (
    broker_count,
    end_offsets,
    get_json,
    kafka_cluster,  # noqa: F401 (the session fixture)
    read_committed,
    sequences,
    service,
)
from tests.support.processes import stop_process
from tools.cluster import KafkaCluster, partition_leaders
from tools.kafka import create_topic, free_port

pytestmark = [pytest.mark.cluster, pytest.mark.kafka, pytest.mark.spark,
              pytest.mark.timeout(1200)]

FLEET = 1000
RATE_HZ = 5.0  # 1,000 cars at 5 Hz: 5,000 events/s
PARTITIONS = 6
OUTAGE_S = 20.0
METADATA_MAX_AGE_S = 300.0  # aiokafka's metadata_max_age_ms default: the refresh of last resort
WINDOW_S = 10
CHROMIUM = "/usr/bin/chromium"


async def poll(predicate, what: str, deadline_s: float, interval: float = 0.5):
    """``predicate()`` (sync or async) until truthy, else fail naming ``what``."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
        except (KafkaError, OSError):  # a client still talking to the dead broker: ask again
            value = None
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"{what}: not within {deadline_s:.0f} s (web APIs: {LAST_ANSWER})")
        await asyncio.sleep(interval)


async def total(bootstrap: str, topic: str) -> int:
    return sum((await end_offsets(bootstrap, topic)).values())


LAST_ANSWER: dict[int, str] = {}


def serving(port: int, fleet: int) -> bool:
    """/health is ok and /telemetry/latest has every car (what it said last: LAST_ANSWER)."""
    try:
        health = get_json(f"http://127.0.0.1:{port}/health", timeout=20)
        latest = get_json(f"http://127.0.0.1:{port}/telemetry/latest", timeout=20)
    except OSError as exc:
        LAST_ANSWER[port] = repr(exc)
        return False
    LAST_ANSWER[port] = f"health {health}, {len(latest['items'])} cars in /telemetry/latest"
    return health.get("status") == "ok" and len(latest["items"]) == fleet


async def final_statuses(bootstrap: str, topic: str) -> dict[str, ProducerStatus]:
    out: dict[str, ProducerStatus] = {}
    for rec in await read_committed(bootstrap, topic, idle_s=2.0):
        st = ProducerStatus.model_validate_json(rec.value)
        out[st.producer_id] = st
    return out


def window_counts(records: list) -> Counter[tuple[str, int]]:
    """(vehicle, window start in epoch seconds) -> events in the topic."""
    counts: Counter[tuple[str, int]] = Counter()
    for rec in records:
        doc = orjson.loads(rec.value)
        ts = datetime.fromisoformat(doc["timestamp"]).timestamp()
        counts[(doc["vehicle_id"], int(ts // WINDOW_S) * WINDOW_S)] += 1
    return counts


async def test_leader_killed_and_restarted_loses_and_duplicates_nothing(
        kafka_cluster: KafkaCluster, tmp_path: Path, output_dir: Path) -> None:  # noqa: F811
    cluster = kafka_cluster
    bootstrap = cluster.bootstrap
    tag = uuid.uuid4().hex[:10]
    topics = {"KAFKA_TOPIC": f"telemetry-{tag}", "KAFKA_CONTROL_TOPIC": f"control-{tag}",
              "KAFKA_STATUS_TOPIC": f"status-{tag}", "KAFKA_NETWORK_TOPIC": f"network-{tag}"}
    base = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, **topics}
    topic = topics["KAFKA_TOPIC"]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    api_ports, ui_port = [free_port(), free_port()], free_port()
    out = tmp_path / "analytics"
    try:
        # The shards topic exists before the producers join their group: when they created
        # it themselves on this cluster, both were once assigned no shard at all (group
        # generation 2: shards []), the fleet stood still. Reported with issue 14.
        await asyncio.to_thread(create_topic, bootstrap, f"shards-{tag}", PARTITIONS)
        for i in (1, 2):  # two instances share the fleet, shard by shard (PRODUCER_GROUP)
            procs[f"producer-{i}"] = service("producer", {
                **base, "FLEET_SIZE": str(FLEET), "SIM_RATE_HZ": str(RATE_HZ), "SIM_SEED": "7",
                "SIM_AUTOSTART": "true", "SIM_TRIPS": "false",
                "KAFKA_PARTITIONS": str(PARTITIONS), "PRODUCER_ID": f"producer-{i}-{tag}",
                "PRODUCER_GROUP": f"producers-{tag}", "KAFKA_SHARDS_TOPIC": f"shards-{tag}"},
                tmp_path / f"producer-{i}.log")
        await poll(lambda: total(bootstrap, topic), "the producer's first events", 120)
        for i, port in enumerate(api_ports, start=1):
            procs[f"webapi-{i}"] = service("webapi", {
                **base, "WEBAPI_PORT": str(port), "ANALYTICS_OUTPUT_DIR": str(out)},
                tmp_path / f"webapi-{i}.log")
        procs["analytics"] = service("analytics", {
            **base, "SPARK_MASTER": "local[2]", "ANALYTICS_OUTPUT_DIR": str(out),
            "ANALYTICS_WINDOW": f"{WINDOW_S} seconds", "ANALYTICS_WATERMARK": "30 seconds",
            "ANALYTICS_TRIGGER_SECONDS": "5", "ANALYTICS_SHUFFLE_PARTITIONS": "2",
            "ANALYTICS_LOCAL_DIR": str(tmp_path / "spark")}, tmp_path / "analytics.log")
        shots = Path(CHROMIUM).exists()  # the Streamlit app on the second API, for a screenshot
        if shots:
            procs["ui"] = start_streamlit(api_ports[1], ui_port, tmp_path / "streamlit.log")
        for port in api_ports:
            await poll(lambda port=port: serving(port, FLEET), f"web API :{port}", 120)
        # steady state: the analytics job has written windows before the failover
        await poll(lambda: read_windows(out, "vehicle_windows").num_rows > 0,
                   "the first analytics windows", 300, interval=2)

        leaders = await partition_leaders(bootstrap, topic)
        victim = max((b for b in leaders if b > 0), key=lambda b: len(leaders[b]))
        before = await total(bootstrap, topic)
        await asyncio.to_thread(cluster.node(victim).kill)
        killed_at = time.monotonic()

        # The survivors elect new leaders; the producer keeps publishing to them.
        others = ",".join(n.bootstrap for n in cluster.nodes if n.node_id != victim)
        await poll(lambda: _fewer(others, 3), "the cluster noticing the dead broker", 60)
        resumed = await poll(
            lambda: _grew(others, topic, before + 5 * FLEET * RATE_HZ),
            "new end offsets after the kill", METADATA_MAX_AGE_S)
        resumed_s = time.monotonic() - killed_at
        led = await poll(lambda: partition_leaders(others, topic), "the new leaders", 60)
        assert victim not in led and -1 not in led, led
        # Both web APIs serve throughout the outage (polled until it ends).
        while time.monotonic() - killed_at < OUTAGE_S:
            for port in api_ports:
                await poll(lambda port=port: serving(port, FLEET),
                           f"web API :{port} during the outage", 60, interval=1)
            await asyncio.sleep(1)

        await asyncio.to_thread(cluster.restart, victim)
        after_restart = await total(bootstrap, topic)
        await poll(lambda: _grew(bootstrap, topic, after_restart + 5 * FLEET * RATE_HZ),
                   "publishing after the restart", 120)
        await poll(lambda: _in_sync(bootstrap, topic, victim),
                   f"broker {victim} back in every ISR", 120)
        late_apis = []  # asserted last, so the data checks below report too
        for port in api_ports:
            try:
                await poll(lambda port=port: serving(port, FLEET),
                           f"web API :{port} after the restart", 60, interval=1)
            except pytest.fail.Exception as exc:
                late_apis.append(str(exc))
        if shots:
            await asyncio.to_thread(_screenshots, api_ports[0], ui_port, output_dir)

        for i in (1, 2):
            assert stop_process(procs.pop(f"producer-{i}"), 60) == 0
        statuses = await final_statuses(bootstrap, topics["KAFKA_STATUS_TOPIC"])
        acked = sum(st.events_sent for st in statuses.values())
        # analytics: past the last window the producer wrote, then stopped on purpose
        last_rows = read_windows(out, "vehicle_windows").num_rows
        await poll(lambda: read_windows(out, "vehicle_windows").num_rows > last_rows,
                   "the analytics windows after the failover", 300, interval=2)
        assert stop_process(procs.pop("analytics"), 120) == 0
        # ... and a rerun from the same checkpoint writes nothing it wrote before
        rows_before = read_windows(out, "vehicle_windows").num_rows
        rerun = service("analytics", {
            **base, "SPARK_MASTER": "local[2]", "ANALYTICS_OUTPUT_DIR": str(out),
            "ANALYTICS_WINDOW": f"{WINDOW_S} seconds", "ANALYTICS_WATERMARK": "30 seconds",
            "ANALYTICS_ONCE": "true", "ANALYTICS_SHUFFLE_PARTITIONS": "2",
            "ANALYTICS_LOCAL_DIR": str(tmp_path / "spark")}, tmp_path / "analytics-once.log")
        assert await asyncio.to_thread(rerun.wait, 600) == 0
    finally:
        for proc in procs.values():
            stop_process(proc)

    records = await read_committed(bootstrap, topic)
    seqs = sequences(records)
    assert len(seqs) == FLEET
    for vid, s in seqs.items():
        assert s == list(range(len(s))), f"{vid}: seq not gap- and duplicate-free: {s[:20]}"
    assert len(records) == acked, (len(records), acked)  # nothing acknowledged went missing
    assert len(records) > before + OUTAGE_S * FLEET * RATE_HZ / 2

    windows = read_windows(out, "vehicle_windows").to_pylist()
    keys = Counter((w["vehicle_id"], int(w["window_start"].timestamp())) for w in windows)
    assert keys and max(keys.values()) == 1, keys.most_common(3)  # each window once
    assert len(windows) >= rows_before
    counts = window_counts(records)
    wrong = [(k, w["samples"], counts[k]) for w in windows
             if w["samples"] != counts[(k := (w["vehicle_id"],
                                              int(w["window_start"].timestamp())))]]
    assert not wrong, wrong[:5]
    assert not late_apis, late_apis
    print(f"failover: broker {victim} led {len(leaders[victim])}/{PARTITIONS} partitions; "  # noqa: T201
          f"publishing resumed {resumed_s:.1f} s after the kill ({resumed} events); "
          f"{len(records)} events, {len(windows)} windows")


async def _fewer(bootstrap: str, n: int) -> bool:
    return await broker_count(bootstrap) < n


async def _grew(bootstrap: str, topic: str, target: float) -> int:
    now = await total(bootstrap, topic)
    return now if now >= target else 0


async def _in_sync(bootstrap: str, topic: str, broker: int) -> bool:
    from common.kafka import make_admin

    admin = make_admin(bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return all(broker in p["isr"] for t in described for p in t["partitions"])


def _screenshots(api_port: int, ui_port: int, output_dir: Path) -> None:
    """The legacy dashboard of one web API and the Streamlit app over the other."""
    from tests.test_ui_app import CHROMIUM_ARGS

    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"http://127.0.0.1:{api_port}/dashboard")
            page.wait_for_timeout(5000)  # the map and charts fill from the WebSocket
            page.screenshot(path=str(output_dir / "cluster-dashboard.png"), full_page=True)
            page.goto(f"http://127.0.0.1:{ui_port}")
            # the KPIs, or the app's own message saying why it has none
            page.wait_for_selector("[data-testid='stMetric'], [data-testid='stAlert']",
                                   timeout=300_000)
            page.wait_for_timeout(5000)  # deck.gl draws after the element appears
            page.screenshot(path=str(output_dir / "cluster-streamlit.png"), full_page=True)
        finally:
            browser.close()


def start_streamlit(api_port: int, ui_port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "streamlit", "run", "ui/app.py", "--server.headless", "true",
             "--server.port", str(ui_port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false"],
            cwd=Path(__file__).resolve().parent.parent, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "FLEETSTREAM_API_URL": f"http://127.0.0.1:{api_port}"})
