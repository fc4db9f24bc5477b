"""Benchmark of the Streamlit app's live refresh: ``python -m bench.ui``.

For fleets of 100, 1,000 and 10,000 vehicles it measures, over several repetitions
(medians reported):

* baseline  - the raw API fetch of the same data: the HTTP GETs one refresh makes, with
              ``json`` parsing, nothing else;
* refresh   - one refresh of the live panels as the app does it: the same GETs through
              ui.api, frames, KPIs, the deck and charts built, and everything serialised the
              way it goes to the browser (deck JSON, Vega-Lite JSON, Arrow tables);
* app run   - one whole run of ui/app.py under streamlit's AppTest against the same API
              (sidebar, live panels and analytics, with Streamlit's own marshalling);
* bytes     - the size of what is sent to the browser per refresh, by part.

The API is a local HTTP server answering with pre-serialised JSON in the web API's shapes
(the same bodies the real API returns for such a fleet), so the numbers are the app's own
cost, not the broker's. The machine is shared and has 2 cores: figures are noisy.
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
from urllib.parse import urlsplit

import pandas as pd
import pyarrow as pa
import requests
from streamlit.testing.v1 import AppTest

from tests.support.synthetic import as_items, fleet_events, trail_items
from ui.api import ApiClient
from ui.panels import Layers, build_panels, page
from ui.snapshot import ViewOptions, fetch_snapshot

NOW = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
OPTS = ViewOptions()
PAGE_SIZE = 50
APP = Path(__file__).resolve().parent.parent / "ui" / "app.py"


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
        "/telemetry/latest": {"items": as_items(latest_events)},
        "/telemetry/recent?all": {"items": recent[-OPTS.recent_limit:]},
        "/telemetry/recent?series": {"items": series[-OPTS.series_limit:]},
        "/telemetry/violations": {"items": viol[::-1]},
        "/telemetry/trails": {"items": trails},
    }
    extra = {
        "/health": {"status": "ok"},
        "/status": {"running": True, "rate_hz": 1.0, "vehicles": vehicles, "events_sent": 0},
        "/vehicles": {"items": [e.vehicle_id for e in latest_events]},
        "/analytics/vehicle-windows": {"items": [], "available": False},
        "/analytics/road-windows": {"items": [], "available": False},
    }
    return {k: json.dumps(v).encode() for k, v in {**body, **extra}.items()}


REFRESH_PATHS = ("/stats", "/telemetry/latest", "/telemetry/recent?all",
                 "/telemetry/recent?series", "/telemetry/violations", "/telemetry/trails")


@contextmanager
def serve(bodies: dict[str, bytes]) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            key = url.path
            if key == "/telemetry/recent":
                key += "?series" if "vehicle_id=" in url.query else "?all"
            data = bodies.get(key, b'{"items": []}')
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def raw_fetch(session: requests.Session, url: str) -> int:
    """Baseline: the same GETs, JSON-parsed, nothing built."""
    paths = ["/stats", "/telemetry/latest", "/telemetry/recent?limit=2000",
             "/telemetry/recent?limit=1500&vehicle_id=A", "/telemetry/violations?limit=2000",
             "/telemetry/trails?points=60"]
    n = 0
    for p in paths:
        n += len(session.get(url + p, timeout=30).json())
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


def refresh(client: ApiClient) -> dict[str, int]:
    """One refresh of the live panels, serialised; returns bytes by part."""
    snap = fetch_snapshot(client, OPTS, NOW)
    panels = build_panels(snap, Layers(), None, 6200, OPTS.violation_window_min)
    deck = len(panels.deck.to_json())
    charts = sum(vega_bytes(c) for c in panels.charts.values() if c is not None)
    tables = (arrow_bytes(page(panels.fleet, "vehicle_id", True, 1, PAGE_SIZE))
              + arrow_bytes(panels.violations.head(500)))
    return {"deck": deck, "charts": charts, "tables": tables}


def measure(vehicles: int, reps: int) -> dict[str, float]:
    bodies = fleet_bodies(vehicles)
    with serve(bodies) as url, requests.Session() as session, ApiClient(url, timeout_s=60) as c:
        raw_fetch(session, url)  # warm-up
        refresh(c)
        base, full, sizes = [], [], {}
        for _ in range(reps):
            t0 = time.perf_counter()
            raw_fetch(session, url)
            base.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sizes = refresh(c)
            full.append(time.perf_counter() - t0)
        app_runs = []
        os.environ["FLEETSTREAM_API_URL"] = url
        at = AppTest.from_file(str(APP), default_timeout=120)
        at.run()  # first run: imports, caches
        for _ in range(reps):
            t0 = time.perf_counter()
            at.run()
            app_runs.append(time.perf_counter() - t0)
        assert not at.exception, at.exception
    return {"vehicles": vehicles, "api_bytes": sum(len(bodies[p]) for p in REFRESH_PATHS),
            "app_run_s": statistics.median(app_runs),
            "baseline_s": statistics.median(base), "refresh_s": statistics.median(full),
            **{f"{k}_bytes": v for k, v in sizes.items()}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ui", description=__doc__.split("\n")[0])
    parser.add_argument("--fleets", default="100,1000,10000")
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
