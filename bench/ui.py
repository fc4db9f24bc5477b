"""Benchmark of the Streamlit app's live refresh: ``python -m bench.ui``.

For fleets of 1,000, 10,000 and 50,000 vehicles it measures, over several repetitions
(medians reported):

* baseline  - the raw API fetch of the same data: exactly the HTTP GETs one refresh made
              (recorded by the server), with ``json`` parsing, nothing else;
* refresh   - one refresh of the live panels as the app does it: the same GETs through
              ui.api, frames, KPIs, the deck and charts built, and everything serialised the
              way it goes to the browser (deck JSON, Vega-Lite JSON, Arrow tables);
* app run   - one whole run of ui/app.py under streamlit's AppTest against the same API
              (sidebar, live panels and analytics, with Streamlit's own marshalling);
* bytes     - the size of what is sent to the browser per refresh, by part.

The API is a local HTTP server answering with pre-serialised JSON in the web API's shapes
(the same bodies the real API returns for such a fleet; ``/telemetry/latest`` honours
``limit`` and ``bbox``, ``/telemetry/density`` counts the fleet on the grid, ``/network`` is
the producer's built-in network with its ETag and 304), so the numbers are the app's own
cost, not the broker's. The fleet is placed over the network. Above the app's point budget
(5,000) the refresh draws the density grid, not every car. The machine is shared and has 2
cores: figures are noisy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import requests
from streamlit.testing.v1 import AppTest

from producer.network import network_geojson
from producer.sim import load_network
from tests.support.synthetic import CENTRE, as_items, fleet_events, trail_items
from ui.api import ApiClient
from ui.basemap import parse_network, road_layers
from ui.panels import Layers, build_panels, page
from ui.snapshot import ViewOptions, fetch_snapshot

NOW = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
OPTS = ViewOptions()
PAGE_SIZE = 50
APP = Path(__file__).resolve().parent.parent / "ui" / "app.py"


NETWORK = network_geojson(load_network(None))
BASE = parse_network(NETWORK)


def _over_network(items: list[dict]) -> list[dict]:
    """Move synthetic events (centred on synthetic.CENTRE) to the network's centre."""
    minlon, minlat, maxlon, maxlat = BASE.bounds or (CENTRE[1], CENTRE[0]) * 2
    dlat, dlon = (minlat + maxlat) / 2 - CENTRE[0], (minlon + maxlon) / 2 - CENTRE[1]
    for it in items:
        if loc := it.get("location"):
            loc["lat"] = round(loc["lat"] + dlat, 6)
            loc["lon"] = round(loc["lon"] + dlon, 6)
        for p in it.get("points", []):
            p["lat"], p["lon"] = round(p["lat"] + dlat, 6), round(p["lon"] + dlon, 6)
    return items


class Latest:
    """/telemetry/latest and /telemetry/density over one fleet, as the web API answers."""

    def __init__(self, items: list[dict]) -> None:
        self.raws = [json.dumps(i).encode() for i in items]
        self.lon = np.array([i["location"]["lon"] for i in items])
        self.lat = np.array([i["location"]["lat"] for i in items])
        self.speed = np.array([i["speed_kmh"] for i in items])

    def latest(self, q: dict[str, list[str]]) -> bytes:
        idx = np.arange(len(self.raws))
        if "bbox" in q:
            minlon, minlat, maxlon, maxlat = map(float, q["bbox"][0].split(","))
            idx = idx[(self.lon >= minlon) & (self.lon <= maxlon) & (self.lat >= minlat)
                      & (self.lat <= maxlat)]
        idx = idx[: min(int(q.get("limit", ["10000"])[0]), 10_000)]
        return b'{"items":[' + b",".join(self.raws[i] for i in idx) + b"]}"

    def density(self, q: dict[str, list[str]]) -> bytes:
        minlon, minlat, maxlon, maxlat = map(float, q["bbox"][0].split(","))
        cells = int(q.get("cells", ["64"])[0])
        counts, _, _ = np.histogram2d(self.lon, self.lat, bins=cells,
                                      range=[[minlon, maxlon], [minlat, maxlat]])
        speeds, _, _ = np.histogram2d(self.lon, self.lat, bins=cells, weights=self.speed,
                                      range=[[minlon, maxlon], [minlat, maxlat]])
        dlon, dlat = (maxlon - minlon) / cells, (maxlat - minlat) / cells
        items = [{"col": int(c), "row": int(r), "lon": round(minlon + (c + 0.5) * dlon, 6),
                  "lat": round(minlat + (r + 0.5) * dlat, 6), "count": int(counts[c, r]),
                  "mean_speed_kmh": round(float(speeds[c, r] / counts[c, r]), 2)}
                 for c, r in zip(*np.nonzero(counts), strict=True)]
        return json.dumps({"bbox": [minlon, minlat, maxlon, maxlat], "cells": cells,
                           "cell_size_deg": [dlon, dlat], "total": int(counts.sum()),
                           "items": items}).encode()


def fleet_bodies(vehicles: int) -> dict[str, bytes]:
    """The JSON bodies of every endpoint a refresh calls, for a fleet of ``vehicles``."""
    start = NOW - timedelta(minutes=2)
    latest_events = fleet_events(vehicles, 1, NOW, seed=1)
    recent = as_items(fleet_events(max(1, OPTS.recent_limit // 20), 20, start, seed=2))
    series = as_items(fleet_events(OPTS.chart_vehicles, 300, start, seed=3, dt_s=0.4))
    viol = [i for i in as_items(fleet_events(200, 20, start, seed=4))
            if i["speeding"] or i["rpm_over_redline"]][: OPTS.violations_limit]
    trails = trail_items(fleet_events(min(vehicles, OPTS.max_trails), OPTS.trail_points,
                                      start, seed=5), OPTS.trail_points)
    body = {
        "/stats": {"vehicles_reporting": vehicles, "events_per_s": vehicles * 1.0,
                   "consumed_total": 0, "malformed_total": 0, "violations_total": len(viol)},
        "/telemetry/latest": {"items": _over_network(as_items(latest_events))},
        "/telemetry/recent?all": {"items": _over_network(recent[-OPTS.recent_limit:])},
        "/telemetry/recent?series": {"items": _over_network(series[-OPTS.series_limit:])},
        "/telemetry/violations": {"items": _over_network(viol[::-1])},
        "/telemetry/trails": {"items": _over_network(trails)},
        "/network": NETWORK,
    }
    extra = {
        "/health": {"status": "ok"},
        "/status": {"running": True, "rate_hz": 1.0, "vehicles": vehicles, "events_sent": 0},
        "/vehicles": {"items": [e.vehicle_id for e in latest_events]},
        "/analytics/vehicle-windows": {"items": [], "available": False},
        "/analytics/road-windows": {"items": [], "available": False},
    }
    return {k: json.dumps(v).encode() for k, v in {**body, **extra}.items()}


class Server:
    """The stand-in API; ``log`` holds every path asked for (so the baseline repeats them)."""

    def __init__(self, bodies: dict[str, bytes]) -> None:
        self.bodies = bodies
        self.fleet = Latest(json.loads(bodies["/telemetry/latest"])["items"])
        self.etag = f'"{NETWORK["network_id"]}"'
        self.log: list[str] = []
        self.sent = 0
        self.url = ""


@contextmanager
def serve(bodies: dict[str, bytes]) -> Iterator[Server]:
    state = Server(bodies)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            state.log.append(self.path)
            url = urlsplit(self.path)
            key, q = url.path, parse_qs(url.query)
            status, data = 200, b""
            if key == "/telemetry/recent":
                key += "?series" if "vehicle_id=" in url.query else "?all"
            if key == "/telemetry/latest":
                data = state.fleet.latest(q)
            elif key == "/telemetry/density":
                data = state.fleet.density(q)
            elif key == "/network" and self.headers.get("If-None-Match") == state.etag:
                status = 304
            else:
                data = bodies.get(key, b'{"items": []}')
            state.sent += len(data)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if key == "/network":
                self.send_header("ETag", state.etag)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def raw_fetch(session: requests.Session, url: str, paths: list[str], etag: str) -> int:
    """Baseline: the GETs a refresh made, JSON-parsed, nothing built."""
    n = 0
    for p in paths:
        headers = {"If-None-Match": etag} if p.startswith("/network") else None
        resp = session.get(url + p, timeout=30, headers=headers)
        n += len(resp.json()) if resp.content else 0
    return n


def arrow_bytes(df) -> int:
    """Size of a frame as Streamlit ships it (Arrow IPC)."""
    table = pa.Table.from_pandas(df.astype({c: str for c in df.columns
                                            if df[c].dtype == object}), preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().size


def vega_bytes(chart) -> int:
    """Size of a chart as Streamlit ships it: the spec as JSON, its datasets as Arrow."""
    spec = chart.to_dict()
    datasets = spec.pop("datasets", {})
    return len(json.dumps(spec)) + sum(arrow_bytes(pd.DataFrame(rows))
                                       for rows in datasets.values())


def refresh(client: ApiClient, etag: str) -> dict[str, int]:
    """One refresh of the live panels, as the app makes it (the network revalidated by ETag,
    its layers built from the cached parse), serialised; returns bytes by part."""
    client.network(etag)
    opts = ViewOptions(area=BASE.bounds)
    snap = fetch_snapshot(client, opts, NOW)
    panels = build_panels(snap, Layers(), None, 6200, OPTS.violation_window_min,
                          road_layers(BASE))
    deck = len(panels.deck.to_json())
    charts = sum(vega_bytes(c) for c in panels.charts.values() if c is not None)
    tables = (arrow_bytes(page(panels.fleet, "vehicle_id", True, 1, PAGE_SIZE))
              + arrow_bytes(panels.violations.head(500)))
    return {"deck": deck, "charts": charts, "tables": tables}


def measure(vehicles: int, reps: int) -> dict[str, float]:
    bodies = fleet_bodies(vehicles)
    with serve(bodies) as srv, requests.Session() as session, \
            ApiClient(srv.url, timeout_s=60) as c:
        url = srv.url
        srv.log.clear()
        refresh(c, srv.etag)  # warm-up, and the list of GETs one refresh makes
        paths, srv.log[:] = list(srv.log), []
        raw_fetch(session, url, paths, srv.etag)
        base, full, sizes, api_bytes = [], [], {}, 0
        for _ in range(reps):
            t0 = time.perf_counter()
            raw_fetch(session, url, paths, srv.etag)
            base.append(time.perf_counter() - t0)
            srv.sent = 0
            t0 = time.perf_counter()
            sizes = refresh(c, srv.etag)
            full.append(time.perf_counter() - t0)
            api_bytes = srv.sent
        app_runs = []
        os.environ["FLEETSTREAM_API_URL"] = url
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.run()  # first run: imports, caches
        for _ in range(reps):
            t0 = time.perf_counter()
            at.run()
            app_runs.append(time.perf_counter() - t0)
        assert not at.exception, at.exception
    return {"vehicles": vehicles, "api_bytes": api_bytes,
            "app_run_s": statistics.median(app_runs),
            "baseline_s": statistics.median(base), "refresh_s": statistics.median(full),
            **{f"{k}_bytes": v for k, v in sizes.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__.split("\n")[0])
    parser.add_argument("--fleets", default="1000,10000,50000")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args(argv)
    print(f"FleetStream UI refresh benchmark (medians of {args.reps} runs; "
          "shared 2-core machine, noisy)")
    print(f"{'vehicles':>8} {'API JSON':>10} {'baseline':>9} {'refresh':>9} {'ratio':>6} "
          f"{'app run':>8} {'ratio':>6} {'to browser':>11} {'deck':>10} {'charts':>9} "
          f"{'tables':>8}")
    logging.getLogger("streamlit").setLevel(logging.ERROR)  # "missing ScriptRunContext"
    measure(100, 1)  # warm-up: imports, caches, first connections
    for n in (int(x) for x in args.fleets.split(",")):
        r = measure(n, args.reps)
        sent = r["deck_bytes"] + r["charts_bytes"] + r["tables_bytes"]
        print(f"{n:>8,} {r['api_bytes'] / 1e6:>8.2f}MB {r['baseline_s'] * 1e3:>7.0f}ms "
              f"{r['refresh_s'] * 1e3:>7.0f}ms {r['refresh_s'] / r['baseline_s']:>5.1f}x "
              f"{r['app_run_s'] * 1e3:>6.0f}ms {r['app_run_s'] / r['baseline_s']:>5.1f}x "
              f"{sent / 1e6:>9.2f}MB {r['deck_bytes'] / 1e6:>8.2f}MB "
              f"{r['charts_bytes'] / 1e6:>7.2f}MB {r['tables_bytes'] / 1e3:>6.0f}kB")
    print("ratio = refresh (or app run) / baseline, the raw fetch of the same data in the "
          "same run;\napp run = one whole script run of ui/app.py under AppTest (sidebar + "
          "live panels + analytics),\nto browser = deck JSON + Vega-Lite specs with Arrow "
          "datasets + Arrow tables, per refresh")


if __name__ == "__main__":
    main()
