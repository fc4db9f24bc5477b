"""From fleet state to telemetry events: vehicle ids, trip ids and fast JSON encoding.

``trip_id`` is a UUID per trip of each car (uuid5 of the run key, the vehicle id and the trip
number: deterministic for a seed in ``--stdout`` mode); ``ignition`` is false while the car is
parked; ``vehicle_type`` is car, van or truck.

The hot path (``Encoder.encode``) builds the JSON of a whole tick straight from the state
arrays with orjson; ``Encoder.events`` parses the same bytes into ``TelemetryEvent`` models,
and the tests check the two agree with the contract in ``common/contract.py``.
"""

from __future__ import annotations

import gc
import re
import uuid
from datetime import datetime, timedelta

import numpy as np
import orjson

from common.contract import SCHEMA_VERSION, TelemetryEvent, format_timestamp
from producer.fleet import FleetState, stop_lines
from producer.roads import ROAD_TYPES, RoadNetwork
from producer.vehicle import DTC_CODES, VEHICLE_TYPES

TRIP_NAMESPACE = uuid.UUID("6f1b2c3d-4e5f-5a6b-8c7d-9e0f1a2b3c4d")
_ROAD_NAMES = np.array(ROAD_TYPES, dtype=object)
_FAULT_LISTS = np.empty(len(DTC_CODES) + 1, dtype=object)
for _i, _code in enumerate(DTC_CODES):
    _FAULT_LISTS[_i] = [_code]
_FAULT_LISTS[-1] = []  # index -1: no fault
_VEHICLE_TYPES = np.array(VEHICLE_TYPES, dtype=object)


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


def trip_id(run_key: str, vid: str, trip: int = 0) -> str:
    """A UUID derived from the run (seed in --stdout mode, a random run id otherwise), the
    vehicle and its trip number (each trip of a car has its own id)."""
    name = f"{run_key}/{vid}" if trip == 0 else f"{run_key}/{vid}/{trip}"
    return str(uuid.uuid5(TRIP_NAMESPACE, name))


def _stamps(ts: datetime, offsets_us: np.ndarray | None, n: int) -> list[str]:
    """``format_timestamp(ts + offset)`` for each car, vectorised when ``ts`` is in UTC."""
    if offsets_us is None:
        return [format_timestamp(ts)] * n
    if ts.utcoffset() == timedelta(0):
        base = np.datetime64(ts.replace(tzinfo=None), "us")
        text = np.datetime_as_string(base + offsets_us.astype("timedelta64[us]"), unit="us")
        return [t + "+00:00" for t in text.tolist()]
    return [format_timestamp(ts + timedelta(microseconds=int(o))) for o in offsets_us.tolist()]


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
        self.trip_no: list[int] = []

    def ensure(self, n: int) -> None:
        """Make ids, Kafka keys and trip ids of the first ``n`` cars available."""
        for i in range(len(self.ids), n):
            vid = vehicle_id(self.first_vehicle_id, i)
            self.ids.append(vid)
            self.keys.append(vid.encode())
            self.trips.append(trip_id(self.run_key, vid))
            self.trip_no.append(0)

    def _trip_ids(self, trip: np.ndarray, idx: np.ndarray) -> list[str]:
        for i, k in zip(idx.tolist(), trip[idx].tolist(), strict=True):
            if self.trip_no[i] != k:
                self.trip_no[i] = k
                self.trips[i] = trip_id(self.run_key, self.ids[i], k)
        return [self.trips[i] for i in idx.tolist()]

    def encode(self, s: FleetState, ts: datetime, idx: np.ndarray | None = None,
               ahead_s: np.ndarray | None = None) -> list[bytes]:
        """One JSON document per car of ``idx`` (default: all, in fleet order), stamped ``ts``
        plus ``ahead_s[k]`` seconds for car ``idx[k]``, where it then is (moved on along its
        edge at its speed, no further than the edge's end, nor than the stop line of a red (or
        amber) light it is stopping for: the fleet holds it there)."""
        net = self.net
        self.ensure(s.size)
        if idx is None:
            idx = np.arange(s.size)
        n = idx.size
        edge, v = s.edge[idx], s.v[idx]
        pos = s.pos[idx]
        if ahead_s is not None:
            # no further than the stop line the fleet will stop it at (red, or amber it can
            # stop for; on this edge or, before a short light edge, the line on this one)
            _, stop_d = stop_lines(net, s, np.maximum(net.edge_len[s.edge] - s.pos, 0.0))
            move = np.minimum(v * ahead_s, np.maximum(stop_d[idx], 0.0))
            pos = np.minimum(pos + move, net.edge_len[edge])
        e_from, e_to = net.edge_from[edge], net.edge_to[edge]
        f = np.clip(pos / net.edge_len[edge], 0.0, 1.0)
        lat = net.node_lat[e_from] + f * (net.node_lat[e_to] - net.node_lat[e_from])
        lon = net.node_lon[e_from] + f * (net.node_lon[e_to] - net.node_lon[e_from])
        speed = np.round(v * 3.6, 1)
        limit = net.edge_limit[edge].astype(np.int64)
        speeding = speed > limit + self.tolerance
        rpm = s.rpm[idx]
        over = rpm > self.redline
        heading = np.round(net.edge_heading[edge], 1) % 360.0
        stamps = _stamps(ts, None if ahead_s is None else np.rint(ahead_s * 1e6), n)
        ids = [self.ids[i] for i in idx.tolist()]
        dumps = orjson.dumps
        cols = zip(
            ids, stamps, np.round(lat, 6).tolist(), np.round(lon, 6).tolist(), speed.tolist(),
            rpm.tolist(), s.gear[idx].tolist(), np.round(s.fuel[idx], 2).tolist(),
            _FAULT_LISTS[s.fault[idx]].tolist(), _ROAD_NAMES[net.edge_type[edge]].tolist(),
            limit.tolist(), speeding.tolist(), over.tolist(), s.seq[idx].tolist(),
            heading.tolist(), np.round(s.odo[idx], 3).tolist(), self._trip_ids(s.trip, idx),
            (~s.parked[idx]).tolist(), _VEHICLE_TYPES[s.vclass[idx]].tolist(), strict=True)
        # Thousands of short-lived dicts would trigger the cyclic GC over and over (it more
        # than doubles the cost); they hold no cycles, so pause it for the tick.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return [
                dumps({"vehicle_id": vid, "timestamp": stamp,
                       "location": {"lat": la, "lon": lo}, "speed_kmh": sp, "engine_rpm": rp,
                       "gear": g, "fuel_level_pct": fu, "fault_codes": fc, "road_type": rt,
                       "speed_limit_kmh": lim, "speeding": spd, "rpm_over_redline": ov,
                       "seq": q, "heading_deg": hd, "odometer_km": od, "trip_id": tr,
                       "schema_version": SCHEMA_VERSION, "ignition": ig, "vehicle_type": vt})
                for vid, stamp, la, lo, sp, rp, g, fu, fc, rt, lim, spd, ov, q, hd, od, tr, ig, vt
                in cols
            ]
        finally:
            if was_enabled:
                gc.enable()

    def events(self, s: FleetState, ts: datetime) -> list[TelemetryEvent]:
        """The same events as validated models (slow path: tests, status messages)."""
        return [TelemetryEvent.model_validate_json(b) for b in self.encode(s, ts)]
