"""The simulation as one object: network, fleet state, RNG and encoder, no I/O.

Both the daemon and ``--stdout`` mode drive it the same way: ``encode(ts)`` gives the
events of the current state (one per car), ``advance()`` steps the fleet by ``dt``.
Fleet size and rate can change between ticks; cars removed from the fleet are parked
(their state and ``seq`` kept), so a car that comes back continues its sequence.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

from common.contract import MAX_FLEET_SIZE, MAX_RATE_HZ, MIN_RATE_HZ
from producer.builtin import warsaw
from producer.events import Encoder
from producer.fleet import FleetState, concat, init_fleet, step, take
from producer.geojson import load_roads
from producer.roads import RoadNetwork

MAX_STEP_S = 1.0 / MIN_RATE_HZ
"""Longest step (the slowest rate): bounds fleet.step's sub-step loop at 100 sub-steps."""


def load_network(roads_file: Path | None) -> RoadNetwork:
    """The user's GeoJSON roads, or the built-in Warsaw network."""
    return warsaw() if roads_file is None else load_roads(roads_file)


class Simulation:
    def __init__(self, net: RoadNetwork, *, seed: int, fleet_size: int, rate_hz: float,
                 first_vehicle_id: str, run_key: str, sport_mode: bool = False,
                 speed_tolerance_kmh: float = 5.0, redline_rpm: int = 6200) -> None:
        self.net = net
        self.seed = seed
        self.sport_mode = sport_mode
        self.rng = np.random.default_rng(seed)
        self.state: FleetState = init_fleet(fleet_size, self.rng, net, sport_mode=sport_mode)
        self.parked: FleetState | None = None
        self.rate_hz = MAX_RATE_HZ
        self.set_rate(rate_hz)
        self.encoder = Encoder(net, first_vehicle_id=first_vehicle_id, run_key=run_key,
                               speed_tolerance_kmh=speed_tolerance_kmh, redline_rpm=redline_rpm)
        self.encoder.ensure(fleet_size)

    @property
    def size(self) -> int:
        return self.state.size

    @property
    def dt(self) -> float:
        return 1.0 / self.rate_hz

    @property
    def keys(self) -> list[bytes]:
        """Kafka keys (vehicle ids) of the current fleet, in fleet order."""
        self.encoder.ensure(self.size)
        return self.encoder.keys[: self.size]

    @property
    def ids(self) -> list[str]:
        self.encoder.ensure(self.size)
        return self.encoder.ids[: self.size]

    def set_rate(self, rate_hz: float) -> None:
        # also refuses NaN and infinities: every comparison with NaN is false
        if not MIN_RATE_HZ <= rate_hz <= MAX_RATE_HZ:
            raise ValueError(f"rate_hz must be between {MIN_RATE_HZ} and {MAX_RATE_HZ}, "
                             f"got {rate_hz}")
        self.rate_hz = float(rate_hz)

    def resize(self, n: int) -> None:
        """Grow (parked cars first, then new ones) or shrink (the last cars park)."""
        if not 1 <= n <= MAX_FLEET_SIZE:
            raise ValueError(f"fleet_size must be between 1 and {MAX_FLEET_SIZE}, got {n}")
        cur = self.size
        if n < cur:
            tail = take(self.state, slice(n, None))
            self.parked = tail if self.parked is None else concat(tail, self.parked)
            self.state = take(self.state, slice(0, n))
        elif n > cur:
            need = n - cur
            if self.parked is not None:
                back = take(self.parked, slice(0, need))
                rest = self.parked.size - back.size
                self.parked = take(self.parked, slice(back.size, None)) if rest else None
                self.state = concat(self.state, back)
                need -= back.size
            if need:
                fresh = init_fleet(need, self.rng, self.net, sport_mode=self.sport_mode,
                                   t=self.state.t)
                self.state = concat(self.state, fresh)
        self.encoder.ensure(n)

    def encode(self, ts: datetime) -> list[bytes]:
        """JSON events of the current state, one per car, stamped ``ts``."""
        return self.encoder.encode(self.state, ts)

    def advance(self) -> None:
        dt = self.dt
        if not 0 < dt <= MAX_STEP_S:  # set_rate makes this impossible; NaN fails too
            raise ValueError(f"dt must be > 0 and <= {MAX_STEP_S:g} s, got {dt}")
        self.state = step(self.state, dt, self.rng, self.net)

