"""Benchmark of the web API: end-to-end latency to WebSocket clients, REST latency under
load, and memory after a million events. ``python -m bench.webapi`` (not a test).

Processes: the Kafka broker (KAFKA_BOOTSTRAP_SERVERS, or one started here), the web API
(``python -m webapi``), a load generator and a clients process (both this module, as
subcommands). Latency = receipt time at the client - the event's own timestamp (set by the
load generator when it sends). The baseline, measured in the same run on the same topic and
load: a raw aiokafka consumer in the clients process, i.e. the floor the web API adds to.
In batch mode every 4th frame of each client is parsed (every event in it), a uniform sample.

    python -m bench.webapi                 # 3 runs of each latency scenario + the RSS run
    python -m bench.webapi --runs 5 --seconds 10 --skip-rss
    python -m bench.webapi --only fleet    # issue 13: the real producer daemon as the source
    python -m bench.webapi --only fleet --compare /tmp/old-tree   # before/after, same run

The ``fleet`` scenario (issue 13): the real producer daemon (``python -m producer``, 1,000
cars at 5 Hz, all driving) feeds the topic. Two clients processes: the probe (the raw aiokafka
consumer and the 2 per-event clients) and the 45 batch clients (``?batch=1``). They used to
share one process, whose event loop, busy with 45 x 10 batch frames of ~200 kB per second,
stamped the per-event receipts late (its loop lag p99 reached 20 to 30 ms) and blamed the
web API; the raw baseline is measured the same way as what it is compared to, in the probe
process, and receipts are only stamped there (parsed after the run). The probe also pairs each
per-event frame with the raw consumer's receipt of the same event (vehicle, seq): "added" is
what the web API adds, free of the source's spread. Each process's own loop lag is printed.
``--one-process`` puts everything back in one process. Limits: batch p99 <= raw p99 + tick +
20 ms, per-event p99 <= 2x raw p99; and each batch client's frames per second (the tick asks
for 10). Latency is measured from each event's own timestamp: the daemon stamps a car up to
one tick ahead (its report phase) but publishes the whole tick at once, so raw p50 is negative
and p99 is made by the cars with the earliest phases. ``--compare DIR`` also runs the web API
of another checkout (e.g. a ``git worktree`` of an earlier commit) in alternate runs, for a
before/after under the same conditions.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

from tests.support.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 3
TS_RE = re.compile(rb'"timestamp":"([^"]+)"')
TS_STR_RE = re.compile(r'"timestamp":"([^"]+)"')
SAMPLE_EVERY = 4


def _ts(raw: bytes | str) -> float:
    return datetime.fromisoformat(raw if isinstance(raw, str) else raw.decode()).timestamp()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# ================================================================== load generator process
async def load_main(a: argparse.Namespace) -> None:
    from aiokafka import AIOKafkaProducer

    from tests.support.webapi import make_event

    template = make_event("X").model_dump(mode="json")
    producer = AIOKafkaProducer(bootstrap_servers=a.bootstrap, linger_ms=2, acks=1,
                                max_batch_size=256 * 1024)
    await producer.start()
    sent = 0
    seqs = [0] * a.vehicles
    ids = [f"BENCH{v:05d}" for v in range(a.vehicles)]
    keys = [i.encode() for i in ids]
    try:
        start = time.monotonic()
        tick = 0.005
        while True:
            elapsed = time.monotonic() - start
            if a.total and sent >= a.total:
                break
            if not a.total and elapsed >= a.seconds:
                break
            due = a.total if a.rate <= 0 else int(elapsed * a.rate) + 1
            burst = min(due - sent, 2000)
            now = datetime.now(UTC).isoformat(timespec="microseconds")
            for _ in range(burst):
                v = sent % a.vehicles
                ev = dict(template, vehicle_id=ids[v], timestamp=now, seq=seqs[v],
                          speed_kmh=float(20 + sent % 100),
                          speeding=sent % 100 > 60)
                seqs[v] += 1
                await producer.send(a.topic, key=keys[v], value=orjson.dumps(ev))
                sent += 1
            if a.rate > 0:
                await asyncio.sleep(tick)
            else:
                await asyncio.sleep(0)
        await producer.flush()
    finally:
        await producer.stop()
    print(json.dumps({"sent": sent}), flush=True)


# ================================================================== clients process
async def lag_monitor(lags: list[float], measuring: asyncio.Event, stop: asyncio.Event) -> None:
    """The clients process's own event-loop lag: how late a 2 ms sleep wakes up. Whatever a
    client measures is late by as much (the receipt is stamped when its task runs)."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t0 = loop.time()
        await asyncio.sleep(0.002)
        if measuring.is_set():
            lags.append(loop.time() - t0 - 0.002)


async def clients_main(a: argparse.Namespace) -> None:
    """One clients process. ``--role all``: every client and the raw consumer here (the
    single and batch scenarios). ``--role probe``: only the raw consumer and the per-event
    clients, ``--role batch``: only the batch clients (the fleet scenario runs one of each,
    so that the 45 batch clients' parsing does not delay the per-event receipts it would
    then blame on the web API)."""
    import aiohttp
    from aiokafka import AIOKafkaConsumer, TopicPartition

    started = time.monotonic()
    ws_lat: list[float] = []
    event_got: list[tuple[float, str]] = []  # (receipt, frame): per-event clients, parsed later
    batch_frames = 0  # batch frames received while measuring
    raw_got: list[tuple[float, bytes]] = []  # (receipt, record value), parsed later
    lags: list[float] = []
    rest: dict[str, list[float]] = {"recent2000": [], "health": []}
    measuring = asyncio.Event()
    flowing = asyncio.Event()  # the load generator's events have started to arrive
    stop = asyncio.Event()
    frames = 0
    with_raw = a.role in ("all", "probe")
    n_batch = a.clients if a.batch and a.role != "probe" else 0
    n_event = {"all": a.event_clients + (0 if a.batch else a.clients), "probe": a.event_clients,
               "batch": 0}[a.role]

    async def ws_client(session: aiohttp.ClientSession, ready: asyncio.Event,
                        batch: bool) -> None:
        nonlocal frames, batch_frames
        sampled = 0
        q = "?batch=1" if batch else ""
        async with session.ws_connect(a.url.replace("http", "ws") + "/ws" + q,
                                      max_msg_size=0) as ws:
            await ws.receive()  # snapshot
            ready.set()
            while not stop.is_set():
                try:
                    msg = await ws.receive(timeout=0.5)
                except TimeoutError:
                    continue
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                now = time.time()
                frames += 1
                flowing.set()
                if not measuring.is_set():
                    continue
                if not batch:  # stamped now, parsed after the run: nothing else done here
                    event_got.append((now, msg.data))
                    continue
                batch_frames += 1
                # Parse every SAMPLE_EVERY-th batch frame (every a.stride-th event of it) so
                # that the clients process does not become the bottleneck it measures.
                sampled += 1
                if sampled % SAMPLE_EVERY:
                    continue
                ws_lat.extend(now - _ts(m) for m in TS_STR_RE.findall(msg.data)[::a.stride])

    async def raw_consumer(ready: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=a.bootstrap, group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=100)
        await consumer.start()
        try:
            tps = [TopicPartition(a.topic, p) for p in range(a.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
            ready.set()
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                now = time.time()
                if batch:
                    flowing.set()
                if measuring.is_set():
                    for recs in batch.values():
                        raw_got.extend((now, r.value) for r in recs)
        finally:
            await consumer.stop()

    async def rest_probe(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            for name, path in (("recent2000", "/telemetry/recent?limit=2000"),
                               ("health", "/health")):
                t0 = time.perf_counter()
                async with session.get(a.url + path) as resp:
                    await resp.read()
                if measuring.is_set():
                    rest[name].append(time.perf_counter() - t0)
            await asyncio.sleep(0.05)

    async def batch_frames_sent(session: aiohttp.ClientSession) -> float:
        """The web API's own count of batch frames sent (to tell its pace from ours)."""
        async with session.get(a.url + "/metrics") as resp:
            for line in (await resp.text()).splitlines():
                if line.startswith('fleetstream_webapi_ws_frames_sent_total{type="batch"}'):
                    return float(line.split()[-1])
        return 0.0

    async with aiohttp.ClientSession() as session:
        kinds = [True] * n_batch + [False] * n_event
        readies = [asyncio.Event() for _ in range(len(kinds) + with_raw)]
        tasks = [asyncio.create_task(ws_client(session, r, batch))
                 for r, batch in zip(readies, kinds, strict=False)]
        if with_raw:
            tasks.append(asyncio.create_task(raw_consumer(readies[-1])))
        for r in readies:
            done, _ = await asyncio.wait([asyncio.create_task(r.wait()), *tasks],
                                         timeout=60, return_when=asyncio.FIRST_COMPLETED)
            failed = [t for t in done if t in tasks]
            if failed or not done:
                raise RuntimeError(f"a client failed to connect: {failed and failed[0]}")
        if a.rest:
            tasks.append(asyncio.create_task(rest_probe(session)))
        tasks.append(asyncio.create_task(lag_monitor(lags, measuring, stop)))
        print("ready", flush=True)
        await flowing.wait()
        await asyncio.sleep(a.warmup)
        sent0 = await batch_frames_sent(session)
        measuring.set()
        await asyncio.sleep(a.seconds)
        measuring.clear()
        sent1 = await batch_frames_sent(session)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    # After the run: parse what was stamped. ``added``: per event, the per-event client's
    # receipt minus the raw consumer's receipt of the same event (vehicle, seq), both stamped
    # in this process: what the web API adds, without the source's own spread.
    cpu_pct = 100 * time.process_time() / (time.monotonic() - started)
    raw_at: dict[tuple[str, int], float] = {}
    raw_lat: list[float] = []
    for now, value in raw_got:
        ev = orjson.loads(value)
        raw_lat.append(now - _ts(ev["timestamp"]))
        raw_at[(ev["vehicle_id"], ev.get("seq", 0))] = now
    event_lat: list[float] = []
    added: list[float] = []
    for now, data in event_got:
        ev = orjson.loads(data)["data"]
        event_lat.append(now - _ts(ev["timestamp"]))
        at = raw_at.get((ev["vehicle_id"], ev.get("seq", 0)))
        if at is not None:
            added.append(now - at)
    if not a.batch:  # the single scenario: per-event clients only, reported as "ws"
        ws_lat, event_lat = event_lat, []
    out = {"ws_events": len(ws_lat), "frames": frames, "raw_events": len(raw_lat),
           "clients_cpu_pct": cpu_pct,
           "ws_p50": pct(ws_lat, 50), "ws_p99": pct(ws_lat, 99),
           "event_events": len(event_lat), "event_p50": pct(event_lat, 50),
           "event_p99": pct(event_lat, 99),
           "added_p50": pct(added, 50), "added_p99": pct(added, 99),
           "lag_p99": pct(lags, 99), "lag_max": max(lags, default=float("nan")),
           "batch_fps": batch_frames / max(a.clients, 1) / a.seconds,
           "server_batch_fps": (sent1 - sent0) / max(a.clients, 1) / a.seconds,
           "raw_p50": pct(raw_lat, 50), "raw_p99": pct(raw_lat, 99)}
    for name, vals in rest.items():
        out[f"{name}_p50"] = pct(vals, 50)
        out[f"{name}_p99"] = pct(vals, 99)
        out[f"{name}_n"] = len(vals)
    print(json.dumps(out), flush=True)


# ================================================================== orchestration
@contextlib.contextmanager
def broker() -> Iterator[str]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    from tools.kafka import LocalKafka, free_port

    with tempfile.TemporaryDirectory(prefix="bench-webapi-") as tmp:
        kafka = LocalKafka(data_dir=Path(tmp), port=free_port(), controller_port=free_port(),
                           heap="768m")
        kafka.start()
        try:
            kafka.wait_ready()
            yield kafka.bootstrap
        finally:
            kafka.stop()


def _env(bootstrap: str, topic: str, port: int, **extra: str) -> dict[str, str]:
    return {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_TOPIC": topic,
            "KAFKA_CONTROL_TOPIC": f"bench-control-{topic}",
            "KAFKA_STATUS_TOPIC": f"bench-status-{topic}", "WEBAPI_PORT": str(port),
            "WEBAPI_HOST": "127.0.0.1", "WEBAPI_BACKFILL_SECONDS": "0",
            "WEBAPI_WS_MAX_PER_ADDRESS": "500",  # every bench client comes from 127.0.0.1
            "FLEETSTREAM_API_TOKEN": "", "PYTHONUNBUFFERED": "1", **extra}


@contextlib.contextmanager
def webapi(bootstrap: str, topic: str, root: Path = ROOT,
           **extra: str) -> Iterator[tuple[str, int]]:
    import urllib.request

    from tools.kafka import free_port

    port = free_port()
    log = open(Path(tempfile.gettempdir()) / f"bench-webapi-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "webapi", "--log-level", "WARNING"],
                            cwd=root, env=_env(bootstrap, topic, port, **extra), stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"web API did not start; see {log.name}") from None
                time.sleep(0.2)
        time.sleep(2.0)  # let the consumer assign its partitions (backfill is off)
        yield url, proc.pid
    finally:
        stop_process(proc, 15)
        log.close()


def stats(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url + "/stats", timeout=5) as r:
        return json.loads(r.read())


def ws_dropped(url: str) -> float:
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("fleetstream_webapi_ws_dropped_events_total "):
                return float(line.split()[1])
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def sub(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.webapi", *args]


def latency_run(bootstrap: str, *, rate: int, clients: int, batch: bool, seconds: float,
                vehicles: int) -> dict:
    from tools.kafka import create_topic

    topic = f"bench-{uuid.uuid4().hex[:10]}"
    create_topic(bootstrap, topic, PARTITIONS)
    with webapi(bootstrap, topic) as (url, pid):
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        cl = subprocess.Popen(sub("_clients", "--url", url, "--bootstrap", bootstrap,
                                  "--topic", topic, "--clients", str(clients),
                                  "--seconds", str(seconds), "--warmup", "2",
                                  *(["--batch"] if batch else []),
                                  *(["--rest"] if batch else [])),
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert cl.stdout is not None
        if cl.stdout.readline().strip() != "ready":
            raise RuntimeError("clients did not start")
        ld = subprocess.run(sub("_load", "--bootstrap", bootstrap, "--topic", topic,
                                "--rate", str(rate), "--seconds", str(seconds + 3),
                                "--vehicles", str(vehicles)),
                            cwd=ROOT, capture_output=True, text=True, check=True)
        out, _ = cl.communicate(timeout=120)
        result = json.loads(out.strip().splitlines()[-1])
        result["sent"] = json.loads(ld.stdout.strip().splitlines()[-1])["sent"]
        result["webapi_cpu_pct"] = 100 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0)
        result["consumed"] = stats(url)["consumed_total"]
        result["loadavg"] = os.getloadavg()[0]
        result["ws_dropped"] = ws_dropped(url)
        return result


def rss_run(bootstrap: str, total: int, vehicles: int) -> dict:
    from tools.kafka import create_topic

    topic = f"bench-rss-{uuid.uuid4().hex[:10]}"
    create_topic(bootstrap, topic, PARTITIONS)
    with webapi(bootstrap, topic) as (url, pid):
        idle, _ = rss_mb(pid)
        t0 = time.monotonic()
        subprocess.run(sub("_load", "--bootstrap", bootstrap, "--topic", topic, "--rate", "0",
                           "--total", str(total), "--vehicles", str(vehicles)),
                       cwd=ROOT, capture_output=True, text=True, check=True)
        deadline = time.monotonic() + 600
        while stats(url)["consumed_total"] < total and time.monotonic() < deadline:
            time.sleep(0.5)
        elapsed = time.monotonic() - t0
        s = stats(url)
        rss, peak = rss_mb(pid)
        return {"idle_mb": idle, "rss_mb": rss, "peak_mb": peak, "consumed": s["consumed_total"],
                "vehicles": s["vehicles_reporting"], "seconds": elapsed}


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report(name: str, runs: list[dict], target_ms: float) -> None:
    ms = 1000.0
    p50, p99 = median_of(runs, "ws_p50") * ms, median_of(runs, "ws_p99") * ms
    r50, r99 = median_of(runs, "raw_p50") * ms, median_of(runs, "raw_p99") * ms
    print(f"\n{name}: medians of {len(runs)} runs")
    print(f"  web API -> WS clients  p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   (target p99 < "
          f"{target_ms:.0f} ms: {'met' if p99 < target_ms else 'MISSED'})")
    print(f"  baseline raw consumer  p50 {r50:7.1f} ms   p99 {r99:7.1f} ms")
    print(f"  ratio web API / raw    p50 {p50 / r50:7.2f} x    p99 {p99 / r99:7.2f} x")
    print(f"  events measured per run (median): WS {median_of(runs, 'ws_events'):.0f}, "
          f"raw {median_of(runs, 'raw_events'):.0f}; frames {median_of(runs, 'frames'):.0f}")
    for r in runs:
        print(f"    run: ws p50 {r['ws_p50'] * ms:.1f} p99 {r['ws_p99'] * ms:.1f} | raw p50 "
              f"{r['raw_p50'] * ms:.1f} p99 {r['raw_p99'] * ms:.1f} | sent {r['sent']}, "
              f"consumed {r['consumed']}, WS events dropped {r['ws_dropped']:.0f}, web API CPU "
              f"{r['webapi_cpu_pct']:.0f}% of a core, clients process CPU "
              f"{r['clients_cpu_pct']:.0f}%, load avg {r['loadavg']:.1f}")


FLEET_CARS, FLEET_HZ, FLEET_PARTITIONS = 1000, 5.0, 6
BATCH_CLIENTS, EVENT_CLIENTS, TICK_MS = 45, 2, 100


def fleet_run(bootstrap: str, *, seconds: float, root: Path = ROOT,
              one_process: bool = False) -> dict:
    """Issue 13's scenario: the real producer daemon as the source (see the module doc)."""
    from tools.kafka import create_topic

    topic = f"bench-fleet-{uuid.uuid4().hex[:10]}"
    create_topic(bootstrap, topic, FLEET_PARTITIONS)
    with webapi(bootstrap, topic, root, WEBAPI_WS_BATCH_MS=str(TICK_MS)) as (url, pid):
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        common = ["--url", url, "--bootstrap", bootstrap, "--topic", topic,
                  "--clients", str(BATCH_CLIENTS), "--event-clients", str(EVENT_CLIENTS),
                  "--batch", "--partitions", str(FLEET_PARTITIONS), "--seconds", str(seconds),
                  "--warmup", "3", "--stride", "5"]
        roles = ["all"] if one_process else ["probe", "batch"]
        procs = [subprocess.Popen(sub("_clients", *common, "--role", role), cwd=ROOT,
                                  stdout=subprocess.PIPE, text=True) for role in roles]
        for cl in procs:
            assert cl.stdout is not None
            if cl.stdout.readline().strip() != "ready":
                raise RuntimeError("clients did not start")
        log = open(Path(tempfile.gettempdir()) / f"bench-fleet-{topic}.log", "wb")  # noqa: SIM115
        env = _env(bootstrap, topic, 0, FLEET_SIZE=str(FLEET_CARS), SIM_RATE_HZ=str(FLEET_HZ),
                   SIM_AUTOSTART="true", SIM_TRIPS="false", SIM_SEED="1",
                   KAFKA_PARTITIONS=str(FLEET_PARTITIONS))
        producer = subprocess.Popen([sys.executable, "-m", "producer", "--log-level", "WARNING"],
                                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            outs = [json.loads(cl.communicate(timeout=300)[0].strip().splitlines()[-1])
                    for cl in procs]
        finally:
            stop_process(producer, 15)
            log.close()
        if one_process:
            result = outs[0]
            result["probe_lag_p99"] = result["batch_lag_p99"] = result["lag_p99"]
        else:
            probe, batch = outs
            result = {**batch, **{k: v for k, v in probe.items() if k.startswith(
                ("raw_", "event_", "added_"))}, "probe_lag_p99": probe["lag_p99"],
                "batch_lag_p99": batch["lag_p99"],
                "clients_cpu_pct": probe["clients_cpu_pct"] + batch["clients_cpu_pct"]}
        result["sent"] = result["raw_events"]
        result["webapi_cpu_pct"] = 100 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0)
        result["consumed"] = stats(url)["consumed_total"]
        result["loadavg"] = os.getloadavg()[0]
        result["ws_dropped"] = ws_dropped(url)
        return result


def fleet_report(name: str, runs: list[dict]) -> None:
    ms = 1000.0
    med = {k: median_of(runs, k) * ms for k in ("raw_p50", "raw_p99", "ws_p50", "ws_p99",
                                                  "event_p50", "event_p99", "added_p50",
                                                  "added_p99")}
    batch_limit = med["raw_p99"] + TICK_MS + 20
    event_limit = 2 * med["raw_p99"]
    print(f"\n{name}: {FLEET_CARS:,} cars at {FLEET_HZ:g} Hz from python -m producer, "
          f"{BATCH_CLIENTS} batch + {EVENT_CLIENTS} per-event clients; medians of {len(runs)} runs")
    print("  | path | p50 | p99 | limit |")
    print("  |---|---|---|---|")
    print(f"  | raw consumer | {med['raw_p50']:.0f} ms | {med['raw_p99']:.0f} ms | |")
    print(f"  | batch frames | {med['ws_p50']:.0f} ms | {med['ws_p99']:.0f} ms | raw + {TICK_MS} "
          f"ms tick + 20 ms = {batch_limit:.0f} ms: "
          f"{'met' if med['ws_p99'] <= batch_limit else 'MISSED'} |")
    print(f"  | per-event frames | {med['event_p50']:.0f} ms | {med['event_p99']:.0f} ms | 2x raw "
          f"= {event_limit:.0f} ms: {'met' if med['event_p99'] <= event_limit else 'MISSED'} |")
    print(f"  per-event receipt minus the raw consumer's receipt of the same event: p50 "
          f"{med['added_p50']:.1f} ms, p99 {med['added_p99']:.1f} ms")
    print(f"  batch frames per second per client: {median_of(runs, 'batch_fps'):.1f} received, "
          f"{median_of(runs, 'server_batch_fps'):.1f} sent by the web API (the tick asks for "
          f"{1000 / TICK_MS:.0f})")
    for r in runs:
        print(f"    run: raw p99 {r['raw_p99'] * ms:.0f} | batch p50 {r['ws_p50'] * ms:.0f} p99 "
              f"{r['ws_p99'] * ms:.0f} | event p50 {r['event_p50'] * ms:.0f} p99 "
              f"{r['event_p99'] * ms:.0f} (added p99 {r['added_p99'] * ms:.0f}) | "
              f"{r['batch_fps']:.1f} frames/s received, "
              f"{r['server_batch_fps']:.1f} sent | raw events "
              f"{r['raw_events']}, WS dropped {r['ws_dropped']:.0f}, web API CPU "
              f"{r['webapi_cpu_pct']:.0f}%, clients CPU {r['clients_cpu_pct']:.0f}% (loop lag "
              f"p99: probe {r['probe_lag_p99'] * ms:.0f} ms, batch clients "
              f"{r['batch_lag_p99'] * ms:.0f} ms), load avg {r['loadavg']:.1f}")


def fleet(bootstrap: str, a: argparse.Namespace) -> None:
    roots = [("this checkout", ROOT)]
    if a.compare:
        roots.insert(0, (f"before ({a.compare})", Path(a.compare).resolve()))
    runs: dict[str, list[dict]] = {name: [] for name, _ in roots}
    for _ in range(a.runs):  # alternate, so both see the same machine
        for name, root in roots:
            runs[name].append(fleet_run(bootstrap, seconds=a.seconds, root=root,
                                        one_process=a.one_process))
    for name, _ in roots:
        fleet_report(f"fleet scenario, web API of {name}", runs[name])


def orchestrate(a: argparse.Namespace) -> None:
    print("FleetStream web API benchmark (2 shared cores: numbers are noisy; medians shown)")
    with broker() as bootstrap:
        if a.only == "fleet":
            fleet(bootstrap, a)
            return
        if a.only in (None, "single"):
            single = [latency_run(bootstrap, rate=1000, clients=10, batch=False,
                                  seconds=a.seconds, vehicles=1000) for _ in range(a.runs)]
            report("1,000 events/s -> 10 WS clients, one event per frame", single, 100)
        if a.only not in (None, "batch"):
            return
        batched = [latency_run(bootstrap, rate=5000, clients=50, batch=True,
                               seconds=a.seconds, vehicles=5000) for _ in range(a.runs)]
        report("5,000 events/s -> 50 WS clients, batch mode (?batch=1)", batched, 250)
        ms = 1000.0
        print("  REST under that load (same run):")
        print(f"    GET /telemetry/recent?limit=2000  p50 "
              f"{median_of(batched, 'recent2000_p50') * ms:6.1f} ms   p99 "
              f"{median_of(batched, 'recent2000_p99') * ms:6.1f} ms")
        print(f"    baseline GET /health              p50 "
              f"{median_of(batched, 'health_p50') * ms:6.1f} ms   p99 "
              f"{median_of(batched, 'health_p99') * ms:6.1f} ms")
        print(f"    ratio recent / health p99: "
              f"{median_of(batched, 'recent2000_p99') / median_of(batched, 'health_p99'):.2f} x")
        if not a.skip_rss:
            r = rss_run(bootstrap, a.rss_events, a.rss_vehicles)
            print(f"\nMemory after {r['consumed']:,} events from {r['vehicles']:,} vehicles "
                  f"({r['seconds']:.0f} s): RSS {r['rss_mb']:.0f} MB, peak {r['peak_mb']:.0f} MB"
                  f" (target < 400 MB: {'met' if r['peak_mb'] < 400 else 'MISSED'})")
            print(f"  baseline: the same process idle after start-up {r['idle_mb']:.0f} MB; "
                  f"ratio {r['rss_mb'] / r['idle_mb']:.2f} x")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.webapi", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", nargs="?", default="run", choices=["run", "_load", "_clients"])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--only", choices=["single", "batch", "fleet"], default=None,
                   help="run only one latency scenario (and the RSS run unless --skip-rss); "
                        "fleet: issue 13's, with the producer daemon, no RSS run")
    p.add_argument("--compare", default=None,
                   help="fleet: also run the web API of this checkout, alternating runs")
    p.add_argument("--one-process", action="store_true",
                   help="fleet: all clients and the raw consumer in one process (as before "
                        "the probe/batch split)")
    p.add_argument("--event-clients", type=int, default=0)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--rss-events", type=int, default=1_000_000)
    p.add_argument("--rss-vehicles", type=int, default=10_000)
    # subprocess options
    p.add_argument("--bootstrap")
    p.add_argument("--topic")
    p.add_argument("--url")
    p.add_argument("--rate", type=float, default=1000)
    p.add_argument("--total", type=int, default=0)
    p.add_argument("--vehicles", type=int, default=1000)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--batch", action="store_true")
    p.add_argument("--rest", action="store_true")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--partitions", type=int, default=PARTITIONS)
    p.add_argument("--role", choices=["all", "probe", "batch"], default="all")
    a = p.parse_args(argv)
    if a.mode == "_load":
        asyncio.run(load_main(a))
    elif a.mode == "_clients":
        asyncio.run(clients_main(a))
    else:
        orchestrate(a)


if __name__ == "__main__":
    main()
