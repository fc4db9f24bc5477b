"""Running the producer as users do, measuring its events and printing one table per network."""

from __future__ import annotations

import importlib
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.realism.events import ROAD_CODES, Events, Projection, parse_events
from bench.realism.figures import REAL
from bench.realism.matching import (
    Ways,
    class_shares,
    edge_index,
    light_crossings,
    load_ways,
    way_index,
    way_of,
    wrong_way,
)
from bench.realism.measures import (
    fuel_use,
    hard_brakes,
    overlaps,
    refuels,
    road_shares,
    stopped_share,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_START = "2026-03-10T08:00:00+00:00"  # a Tuesday, 08:00 UTC: morning traffic


@dataclass(frozen=True)
class Network:
    name: str
    roads: Path | None  # None: the built-in city


def resolve(name: str) -> Network:
    if name == "builtin":
        return Network("builtin", None)
    path = Path(name)
    if path.suffix in (".geojson", ".json") and path.exists():
        return Network(path.stem, path)
    osm = importlib.import_module("tools.osm")
    if name not in osm.EXTRACTS:
        raise SystemExit(f"bench.realism: unknown network {name!r}: builtin, a GeoJSON file, "
                         f"or one of {list(osm.EXTRACTS)}")
    osm.fetch([name])
    return Network(name, osm.geojson_path(name))


SIM_COUNTS = re.compile(rb'\{[^{}]*"red_crossings"[^{}]*\}')


def sim_counts(stderr: bytes) -> dict[str, Any] | None:
    """The counts the simulator reports itself: the last JSON object on its stderr that has a
    ``red_crossings`` key (e.g. ``{"light_crossings": 812, "red_crossings": 0}``), or None."""
    for found in reversed(SIM_COUNTS.findall(stderr)):
        try:
            doc = orjson.loads(found)
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict):
            return doc
    return None


def run_producer(net: Network, *, seed: int, vehicles: int, steps: int, start: str,
                 producer_root: Path, out: Path) -> tuple[int, float, dict[str, Any] | None]:
    """Run the producer as users do; returns (lines, seconds, the simulator's own counts)."""
    cmd = [sys.executable, "-m", "producer", "--stdout", "--seed", str(seed), "--vehicles",
           str(vehicles), "--rate-hz", "1", "--steps", str(steps), "--start-time", start]
    if net.roads is not None:
        cmd += ["--roads", str(net.roads.resolve())]
    env = {**os.environ, "PYTHONPATH": str(producer_root)}
    with out.open("wb") as fh:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=producer_root, stdout=fh, stderr=subprocess.PIPE,
                              env=env, check=False)
        secs = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench.realism: producer failed ({proc.returncode}): "
                         f"{proc.stderr.decode(errors='replace')[-2000:]}")
    with out.open("rb") as fh:
        lines = sum(1 for _ in fh)
    return lines, secs, sim_counts(proc.stderr)


def tank_litres() -> Callable[[np.ndarray], np.ndarray]:
    vh = importlib.import_module("producer.vehicle")
    per_class = np.asarray(getattr(vh, "CLASS_TANK_L", [vh.TANK_L] * 3), dtype=float)
    default = float(vh.TANK_L)
    return lambda vt: np.where(vt >= 0, per_class[np.maximum(vt, 0)], default)


def measure(ev: Events, *, net: Any, ways: Ways | None, lines: int, secs: float,
            startup_s: float = 0.0, sim: dict[str, Any] | None = None,
            vehicle_s: float = math.nan) -> dict[str, Any]:
    """Every measure of one run, as numbers."""
    proj = Projection(float(np.median(ev.lat)), float(np.median(ev.lon)))
    m: dict[str, Any] = {}
    m["stopped"], m["urban_h"] = stopped_share(ev)
    m["urban_h"] /= 3600.0
    n_hard, km = hard_brakes(ev)
    m["km"] = km
    m["hard_brakes"] = n_hard / km * 100.0 if km > 0 else math.nan
    m["hard_brake_n"] = n_hard
    cr = light_crossings(ev, net, edge_index(net, proj))
    m["crossings"], m["separable"] = cr.total, cr.separable
    m["red"] = cr.red / cr.total if cr.total else math.nan
    m["amber"] = cr.amber / cr.total if cr.total and cr.separable else math.nan
    m["red_n"], m["amber_n"] = cr.red, cr.amber
    m["sim_red_n"] = float((sim or {}).get("red_crossings", math.nan))
    m["sim_crossings"] = float((sim or {}).get("light_crossings", math.nan))
    if ways is not None:
        widx = way_index(ways, proj)
        against, matched, on_oneway, unmatched = wrong_way(ev, ways, widx)
        m["wrong_way"] = against / matched if matched else math.nan
        m["wrong_way_of_oneway"] = against / on_oneway if on_oneway else math.nan
        m["wrong_way_n"], m["unmatched"] = against, unmatched
        m["oneway_segments"] = int((ways.oneway != 0).sum())
        m["classes"] = class_shares(ev, ways, widx)
    else:
        m["wrong_way"], m["wrong_way_n"], m["oneway_segments"] = math.nan, 0, 0
        m["wrong_way_of_oneway"], m["unmatched"] = math.nan, 0
        m["classes"] = {}
    on_way = way_of(ev, ways, widx) if ways is not None else None
    ov, moving, most, m["oncoming_n"], m["beside_n"] = overlaps(ev, proj, way=on_way)
    m["overlap"] = ov / moving if moving else math.nan
    m["overlap_n"], m["overlap_most"] = ov, most
    m["fuel"], m["fuel_km"] = fuel_use(ev, tank_litres())
    rf = refuels(ev)
    m["refuels"] = len(rf)
    m["refuel_speed"] = max((r.max_speed_kmh for r in rf), default=math.nan)
    m["refuel_duration"] = (statistics.median(r.duration_s for r in rf) if rf else math.nan)
    shares, m["highway_time"] = road_shares(ev)
    m.update({f"dist_{k}": v for k, v in shares.items()})
    # the steady rate, unless the run is too short to tell it from start-up noise
    steady = secs - startup_s > 0.25 * secs
    m["startup_s"] = startup_s if steady else 0.0
    m["events_per_s"] = lines / (secs - m["startup_s"]) if secs > 0 else math.nan
    # parked cars report less often, so also: simulated seconds of car per wall second
    m["vsec_per_s"] = vehicle_s / (secs - m["startup_s"]) if secs > 0 else math.nan
    m["events"] = lines
    m["vehicles"] = len(ev.ids)
    m["has_ignition"], m["has_vtype"] = ev.has_ignition, ev.has_vtype
    return m


def check(key: str, value: float) -> str:
    """PASS/FAIL of one measure against its real-world figure ('-' when not measurable)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    rules: dict[str, Callable[[float], bool]] = {
        "stopped": lambda x: 0.20 <= x <= 0.35,
        "hard_brakes": lambda x: x < 5.0,
        "red": lambda x: x <= 0.005,
        "wrong_way": lambda x: x == 0,
        "overlap": lambda x: x == 0,
        "fuel": lambda x: 6.0 <= x <= 9.0,
        "refuel_speed": lambda x: x < 1.0,
        "refuel_duration": lambda x: x >= 60.0,
        "highway_time": lambda x: x <= 0.15,
    }
    rule = rules.get(key)
    return "-" if rule is None else ("PASS" if rule(value) else "FAIL")


def _median(runs: list[dict[str, Any]], key: str) -> Any:
    vals = [r[key] for r in runs]
    if isinstance(vals[0], bool | dict | str):
        return vals[0]
    nums = [float(v) for v in vals if not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(nums) if nums else math.nan


def _pct(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    return f"{100 * x:.1f} %" if x == 0 or x >= 0.001 else f"{100 * x:.3f} %"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def render(name: str, runs: list[dict[str, Any]], *, roads: Path | None,
           light_source: str, long: dict[str, Any] | None = None) -> str:
    """One network's table (medians over runs), markdown."""
    m = {k: _median(runs, k) for k in runs[0] if k != "long"}
    r = len(runs)
    note = f" (median of {r} runs)" if r > 1 else ""
    rows: list[tuple[str, str, str, str]] = []

    def row(label: str, key: str, shown: str) -> None:
        rows.append((label, REAL[key][0], shown, check(key, m[key])))

    row("share of time stopped (urban)", "stopped",
        f"{_pct(m['stopped'])} of {m['urban_h']:.1f} h")
    row("hard brakes (< -4 m/s^2 over 1 s) per 100 km", "hard_brakes",
        f"{m['hard_brakes']:.1f} ({m['hard_brake_n']:.0f} in {m['km']:.0f} km)")
    if m["separable"]:
        row("light crossings on red", "red",
            f"{_pct(m['red'])} ({m['red_n']:.0f} of {m['crossings']:.0f})")
        row("light crossings on amber", "amber",
            f"{_pct(m['amber'])} ({m['amber_n']:.0f} of {m['crossings']:.0f})")
    else:
        row("light crossings on red or amber", "red",
            f"{_pct(m['red'])} ({m['red_n']:.0f} of {m['crossings']:.0f})")
    if math.isnan(m["sim_red_n"]):
        rows.append(("light crossings on red, counted by the simulator", REAL["red"][0],
                     "not reported by this producer", "n/a"))
    else:
        sim_share = (m["sim_red_n"] / m["sim_crossings"] if m["sim_crossings"] > 0
                     else math.nan)
        rows.append(("light crossings on red, counted by the simulator", REAL["red"][0],
                     f"{_pct(sim_share)} ({m['sim_red_n']:.0f} of {m['sim_crossings']:.0f})",
                     check("red", sim_share) if not math.isnan(sim_share)
                     else ("PASS" if m["sim_red_n"] == 0 else "FAIL")))
    if m["oneway_segments"]:
        row("moving samples against a one-way", "wrong_way",
            f"{_pct(m['wrong_way'])} ({m['wrong_way_n']:.0f}; "
            f"{_pct(m['wrong_way_of_oneway'])} of those on one-way ways; "
            f"{m['unmatched']:.0f} unmatched)")
    else:
        rows.append(("moving samples against a one-way", REAL["wrong_way"][0],
                     "no one-way roads", "n/a"))
    row("moving cars sharing a 3 m spot with another", "overlap",
        f"{_pct(m['overlap'])} ({m['overlap_n']:.0f} samples; up to {m['overlap_most']:.0f} "
        f"cars in one spot; not counted: {m['oncoming_n']:.0f} oncoming passes, "
        f"{m.get('beside_n', 0):.0f} beside a car on a parallel way)")
    row("urban fuel use, L/100 km", "fuel",
        f"{m['fuel']:.2f} over {m['fuel_km']:.0f} km" if not math.isnan(m["fuel"]) else "n/a")
    tp_vehicles = m["vehicles"]
    if long is not None:
        span = f" in a {long['hours']:g} h run of {long['vehicles']:.0f} vehicles"
        for key in ("refuels", "refuel_speed", "refuel_duration"):
            m[key] = long[key]
        if long["secs"] > 2 * long["startup_s"]:  # the longer run times the rate better
            m["events"], m["startup_s"] = long["events"], long["startup_s"]
            m["events_per_s"] = long["events"] / (long["secs"] - long["startup_s"])
            m["vsec_per_s"] = long["vehicle_s"] / (long["secs"] - long["startup_s"])
            tp_vehicles = long["vehicles"]
    else:
        span = ""
    row("refuelling: highest speed while refuelling", "refuel_speed",
        f"{m['refuel_speed']:.0f} km/h ({m['refuels']:.0f} refuels{span})"
        if m["refuels"] else f"no refuel{span}")
    row("refuelling: duration (median)", "refuel_duration",
        f"{m['refuel_duration']:.0f} s" if m["refuels"] else f"no refuel{span}")
    row("time on highways", "highway_time", _pct(m["highway_time"]))
    dist = ", ".join(f"{k} {_pct(m[f'dist_{k}'])}" for k in ROAD_CODES)
    rows.append(("distance share per road_type", "", dist, "-"))
    if m["classes"]:
        top = list(m["classes"].items())[:8]
        rows.append(("distance share per OSM highway class", "",
                     ", ".join(f"{k} {_pct(v)}" for k, v in top), "-"))
    rows.append(("producer --stdout throughput", "",
                 f"{m['events_per_s']:,.0f} events/s, "
                 f"{m['vsec_per_s']:,.0f} simulated vehicle-seconds/s "
                 + (f"after {m['startup_s']:.1f} s start-up " if m["startup_s"] else
                    "start-up included ") +
                 f"({m['events']:.0f} events of {tp_vehicles:.0f} vehicles); Kafka ratio: "
                 "make bench-producer", "-"))
    width = [max(len(x[i]) for x in rows) for i in range(4)]
    head = ("measure", "real world", "simulated", "")
    lines = [f"### {name}{note}: {m['vehicles']:.0f} vehicles, {m['km']:.0f} km driven"
             + (f", roads {_shown(roads)}" if roads else ", built-in city"),
             "| " + " | ".join(h.ljust(w) for h, w in zip(head, width, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in width) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(x, width, strict=True)) + " |"
              for x in rows]
    fields = (("ignition" if m["has_ignition"] else "no ignition field: all time counts as "
               "driving"), ("vehicle_type" if m["has_vtype"] else "no vehicle_type: fuel over "
                            "all vehicles"))
    lines.append(f"Light phases: {light_source}. Events carry {fields[0]}; {fields[1]}.")
    return "\n".join(lines)


def report(networks: list[str], *, vehicles: int, minutes: float, seed: int, runs: int,
           start: str, producer_root: Path, long_hours: float = 0.0, long_vehicles: int = 20,
           out: Callable[[str], None] = print) -> dict[str, list[dict[str, Any]]]:
    """Run and print every network's table; returns the raw measures."""
    nets = [resolve(name) for name in networks]  # tools.osm of this checkout
    if str(producer_root) not in sys.path:
        sys.path.insert(0, str(producer_root))
    sim = importlib.import_module("producer.sim")
    roads_mod = importlib.import_module("producer.roads")
    light_source = ("producer.roads.RoadNetwork.light_state (red and amber apart)"
                    if hasattr(roads_mod.RoadNetwork, "light_state") else
                    "producer.roads.RoadNetwork.red_for (red and amber together)")
    steps = max(2, int(round(minutes * 60)))
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="realism-") as tmp:
        for net in nets:
            road_net = sim.load_network(net.roads)
            ways = load_ways(net.roads) if net.roads is not None else None
            path = Path(tmp) / f"{net.name}.jsonl"
            # start-up (imports, network, routes) timed apart, the fastest of three one-step
            # runs: throughput is the steady rate
            startup = min(run_producer(net, seed=seed, vehicles=vehicles, steps=1, start=start,
                                       producer_root=producer_root, out=path)[1]
                          for _ in range(3))
            per_run = []
            for k in range(runs):
                lines, secs, counts = run_producer(
                    net, seed=seed + k, vehicles=vehicles, steps=steps, start=start,
                    producer_root=producer_root, out=path)
                with path.open("rb") as fh:
                    ev = parse_events(fh)
                per_run.append(measure(ev, net=road_net, ways=ways, lines=lines, secs=secs,
                                       startup_s=startup, sim=counts,
                                       vehicle_s=float(vehicles * steps)))
            long = None
            if long_hours > 0:
                lines, secs, _ = run_producer(net, seed=seed, vehicles=long_vehicles,
                                           steps=int(long_hours * 3600), start=start,
                                           producer_root=producer_root, out=path)
                with path.open("rb") as fh:
                    rf = refuels(parse_events(fh))
                long = {"hours": long_hours, "vehicles": long_vehicles, "refuels": len(rf),
                        "events": lines, "secs": secs, "startup_s": startup,
                        "vehicle_s": float(long_vehicles * int(long_hours * 3600)),
                        "refuel_speed": max((r.max_speed_kmh for r in rf), default=math.nan),
                        "refuel_duration": (statistics.median(r.duration_s for r in rf)
                                            if rf else math.nan)}
                per_run[0]["long"] = long
            path.unlink(missing_ok=True)
            results[net.name] = per_run
            out(render(net.name, per_run, roads=net.roads, light_source=light_source,
                       long=long))
            out("")
    return results
