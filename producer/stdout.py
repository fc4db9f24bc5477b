"""``--stdout`` mode: the events as JSON lines on a simulated clock, no Kafka, no sleeping.

The same settings, seed, steps and start time always give byte-identical output. A tick
writes the events due then: every driving car, and parked cars' heartbeats (see sim.py).
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from typing import BinaryIO

import orjson

from producer.settings import Settings
from producer.sim import Simulation, load_network, sim_options

DEFAULT_STDOUT_SEED = 0


def run_stdout(settings: Settings, *, steps: int, start_time: datetime, out: BinaryIO) -> int:
    """Write ``steps`` ticks of the fleet to ``out``; returns the number of lines."""
    seed = settings.sim_seed if settings.sim_seed is not None else DEFAULT_STDOUT_SEED
    sim = Simulation(
        load_network(settings.sim_roads_file), seed=seed, fleet_size=settings.fleet_size,
        rate_hz=settings.sim_rate_hz, first_vehicle_id=settings.vehicle_id,
        run_key=f"seed={seed}", start_time=start_time, **sim_options(settings))
    lines = 0
    for k in range(steps):
        ts = start_time + timedelta(seconds=k * sim.dt)
        events = sim.encode(ts)
        if events:
            out.write(b"\n".join(events) + b"\n")
        lines += len(events)
        if k + 1 < steps:
            sim.advance()
    out.flush()
    # the simulator's own count of light crossings (on red: 0 by design), for bench.realism
    sys.stderr.write(orjson.dumps({"light_crossings": sim.state.light_crossings,
                                   "red_crossings": sim.state.red_crossings}).decode() + "\n")
    return lines
