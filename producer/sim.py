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

from producer.builtin import warsaw
from producer.events import Encoder
from producer.fleet import FleetState, concat, init_fleet, step, take
from producer.geojson import load_roads
from producer.roads import RoadNetwork


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
        self.rate_hz = rate_hz
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
        if not 0 < rate_hz <= 50:
            raise ValueError(f"rate_hz must be > 0 and <= 50, got {rate_hz}")
        self.rate_hz = rate_hz

    def resize(self, n: int) -> None:
        """Grow (parked cars first, then new ones) or shrink (the last cars park)."""
        if n < 1:
            raise ValueError(f"fleet_size must be >= 1, got {n}")
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
        self.state = step(self.state, self.dt, self.rng, self.net)

