"""From fleet state to telemetry events: vehicle ids, trip ids and fast JSON encoding.

The hot path (``Encoder.encode``) builds the JSON of a whole tick straight from the state
arrays with orjson; ``Encoder.events`` parses the same bytes into ``TelemetryEvent`` models,
and the tests check the two agree with the contract in ``common/contract.py``.
"""

from __future__ import annotations

import gc
import re
import uuid
from datetime import datetime

import numpy as np
import orjson

from common.contract import SCHEMA_VERSION, TelemetryEvent, format_timestamp
from producer.fleet import FleetState
from producer.roads import ROAD_TYPES, RoadNetwork
from producer.vehicle import DTC_CODES

TRIP_NAMESPACE = uuid.UUID("6f1b2c3d-4e5f-5a6b-8c7d-9e0f1a2b3c4d")
_ROAD_NAMES = np.array(ROAD_TYPES, dtype=object)
_FAULT_LISTS = np.empty(len(DTC_CODES) + 1, dtype=object)
for _i, _code in enumerate(DTC_CODES):
    _FAULT_LISTS[_i] = [_code]
_FAULT_LISTS[-1] = []  # index -1: no fault


def vehicle_id(first: str, index: int) -> str:
    """Id of car ``index`` (0-based): TESTCAR01 -> TESTCAR02 ... (the suffix keeps its width
    and grows past it: TESTCAR99 -> TESTCAR100). Without a numeric suffix: CAR, CAR-2, CAR-3."""
    if index == 0:
        return first
    m = re.fullmatch(r"(.*?)(\d+)", first)
    if m is None:
        return f"{first}-{index + 1}"
    prefix, digits = m.groups()
    return f"{prefix}{int(digits) + index:0{len(digits)}d}"


def trip_id(run_key: str, vid: str) -> str:
    """A UUID derived from the run (seed in --stdout mode, a random run id otherwise)."""
    return str(uuid.uuid5(TRIP_NAMESPACE, f"{run_key}/{vid}"))


class Encoder:
    """Turns fleet states into event JSON; caches per-vehicle ids, keys and trip ids."""

    def __init__(self, net: RoadNetwork, *, first_vehicle_id: str, run_key: str,
                 speed_tolerance_kmh: float, redline_rpm: int) -> None:
        self.net = net
        self.first_vehicle_id = first_vehicle_id
        self.run_key = run_key
        self.tolerance = speed_tolerance_kmh
        self.redline = redline_rpm
        self.ids: list[str] = []
        self.keys: list[bytes] = []
        self.trips: list[str] = []

    def ensure(self, n: int) -> None:
        """Make ids, Kafka keys and trip ids of the first ``n`` cars available."""
        for i in range(len(self.ids), n):
            vid = vehicle_id(self.first_vehicle_id, i)
            self.ids.append(vid)
            self.keys.append(vid.encode())
            self.trips.append(trip_id(self.run_key, vid))

    def encode(self, s: FleetState, ts: datetime) -> list[bytes]:
        """One JSON document per car, in fleet order."""
        net, n = self.net, s.size
        self.ensure(n)
        e_from, e_to = net.edge_from[s.edge], net.edge_to[s.edge]
        f = np.clip(s.pos / net.edge_len[s.edge], 0.0, 1.0)
        lat = net.node_lat[e_from] + f * (net.node_lat[e_to] - net.node_lat[e_from])
        lon = net.node_lon[e_from] + f * (net.node_lon[e_to] - net.node_lon[e_from])
        speed = np.round(s.v * 3.6, 1)
        limit = net.edge_limit[s.edge].astype(np.int64)
        speeding = speed > limit + self.tolerance
        over = s.rpm > self.redline
        heading = np.round(net.edge_heading[s.edge], 1) % 360.0
        stamp = format_timestamp(ts)
        dumps = orjson.dumps
        cols = zip(
            self.ids[:n], np.round(lat, 6).tolist(), np.round(lon, 6).tolist(), speed.tolist(),
            s.rpm.tolist(), s.gear.tolist(), np.round(s.fuel, 2).tolist(),
            _FAULT_LISTS[s.fault].tolist(), _ROAD_NAMES[net.edge_type[s.edge]].tolist(),
            limit.tolist(), speeding.tolist(), over.tolist(), s.seq.tolist(), heading.tolist(),
            np.round(s.odo, 3).tolist(), self.trips[:n], strict=True)
        # Thousands of short-lived dicts would trigger the cyclic GC over and over (it more
        # than doubles the cost); they hold no cycles, so pause it for the tick.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return [
                dumps({"vehicle_id": vid, "timestamp": stamp,
                       "location": {"lat": la, "lon": lo}, "speed_kmh": sp, "engine_rpm": rpm,
                       "gear": g, "fuel_level_pct": fu, "fault_codes": fc, "road_type": rt,
                       "speed_limit_kmh": lim, "speeding": spd, "rpm_over_redline": ov,
                       "seq": q, "heading_deg": hd, "odometer_km": od, "trip_id": tr,
                       "schema_version": SCHEMA_VERSION})
                for vid, la, lo, sp, rpm, g, fu, fc, rt, lim, spd, ov, q, hd, od, tr in cols
            ]
        finally:
            if was_enabled:
                gc.enable()

    def events(self, s: FleetState, ts: datetime) -> list[TelemetryEvent]:
        """The same events as validated models (slow path: tests, status messages)."""
        return [TelemetryEvent.model_validate_json(b) for b in self.encode(s, ts)]
