"""From fleet state to telemetry events: vehicle ids, trip ids and fast JSON encoding.

``trip_id`` is a UUID per trip of each car (uuid5 of the run key, the vehicle id and the trip
number: deterministic for a seed in ``--stdout`` mode); ``ignition`` is false while the car is
parked; ``vehicle_type`` is car, van or truck.

The hot path (``Encoder.encode``) writes the JSON of a whole tick a column at a time, with no
Python work per event: the bytes are exactly those of ``orjson.dumps`` of each event's dict
(tests/test_producer_encode.py checks it against that dict, byte for byte). Numeric columns
go through one ``orjson.dumps`` each (lat and lon together: a 2-d array with sentinel numbers
between the fields, each sentinel's text then replaced by the JSON between them, ``_rows``);
fields with few distinct values (speed, rpm, gear, fuel) are looked up from tables of their
texts (``_Steps``); text that depends only on the car (its id; its trip id, ignition and type)
or on its road segment (type, limit, heading) is cached; timestamps are written from integer
arithmetic; one ``bytes.join`` assembles the tick and one split on newlines (JSON text never
holds a raw one) cuts it into events. ``Encoder.events`` parses the same bytes into
``TelemetryEvent`` models.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson

from common.contract import SCHEMA_VERSION, TelemetryEvent, format_timestamp, read_event
from producer.fleet import FleetState, stop_lines
from producer.roads import ROAD_TYPES, RoadNetwork
from producer.vehicle import DTC_CODES, VEHICLE_TYPES

TRIP_NAMESPACE = uuid.UUID("6f1b2c3d-4e5f-5a6b-8c7d-9e0f1a2b3c4d")
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_US = 86_400_000_000


def _table(texts: list[bytes]) -> np.ndarray:
    """``texts`` as a 1-d object array (an index array picks many at once)."""
    out = np.empty(len(texts), dtype=object)
    out[:] = texts
    return out


def _dumps(values: np.ndarray) -> bytes:
    return orjson.dumps(np.ascontiguousarray(values), option=_NUMPY)


# Sentinels between the fields of a row (``_rows``): numbers no field ever takes (fields are
# bounded physical values, counters and codes, all far from these); orjson writes their text.
_SENTINELS = {"f": np.array([1e300, 2e300, 3e300, 4e300]),
              "i": np.iinfo(np.int64).min + np.arange(4, dtype=np.int64)}
_SENTINEL_TEXT = {kind: [b"," + t + b"," for t in _dumps(s)[1:-1].split(b",")]
                  for kind, s in _SENTINELS.items()}


def _rows(cols: list[np.ndarray], seps: list[bytes], end: bytes = b"") -> list[bytes]:
    """Per row k: the text of ``cols[0][k]``, ``seps[0]``, the text of ``cols[1][k]``, ...,
    ``end``; the digits are orjson's for the same Python number. The columns are all floats
    or all integers (one ``orjson.dumps`` of a 2-d array, sentinels between the fields)."""
    n = cols[0].size
    if n == 0:
        return []
    kind = "f" if cols[0].dtype.kind == "f" else "i"
    if len(cols) == 1:
        text = _dumps(cols[0])[1:-1]
        if not end:
            return text.split(b",")
        return (text.replace(b",", end + b"\n") + end).split(b"\n")
    grid = np.empty((n, 2 * len(cols) - 1), dtype=np.float64 if kind == "f" else np.int64)
    for j, col in enumerate(cols):
        grid[:, 2 * j] = col
    grid[:, 1::2] = _SENTINELS[kind][: len(cols) - 1]
    text = _dumps(grid)[2:-2]
    for sentinel, sep in zip(_SENTINEL_TEXT[kind], seps, strict=False):
        text = text.replace(sentinel, sep)
    if not end:
        return text.split(b"],[")
    return (text.replace(b"],[", end + b"\n") + end).split(b"\n")


def _stamps(ts: datetime, offsets_us: np.ndarray | None, n: int,
            end: bytes) -> bytes | np.ndarray | list[bytes]:
    """The text of ``format_timestamp(ts + offset)`` followed by ``end``, for each car (one
    for all without offsets). In UTC, written from integer arithmetic: the date of each of the
    (at most few) days, then hours, minutes, seconds and microseconds as digits."""
    if offsets_us is None:
        return format_timestamp(ts).encode() + end
    if ts.utcoffset() != timedelta(0):
        return [format_timestamp(ts + timedelta(microseconds=int(o))).encode() + end
                for o in offsets_us.tolist()]
    base = (ts.replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
    us = base + offsets_us.astype(np.int64)
    day, tod = np.divmod(us, _DAY_US)
    days, which = np.unique(day, return_inverse=True)
    dates = np.datetime_as_string(days.astype("datetime64[D]"))
    if any(len(d) != 10 for d in dates.tolist()):  # a year outside 0000..9999
        return [format_timestamp(_EPOCH + timedelta(microseconds=int(u))).encode() + end
                for u in us.tolist()]
    suffix = b"+00:00" + end
    out = np.empty((n, 26 + len(suffix)), dtype=np.uint8)
    out[:, :10] = np.frombuffer(dates.astype("S10").tobytes(), dtype=np.uint8).reshape(-1, 10)[
        which.reshape(-1)]
    out[:, 10:26] = np.frombuffer(b"T00:00:00.000000", dtype=np.uint8)
    sec, frac = np.divmod(tod, 1_000_000)
    for col, value, digits in ((11, sec // 3600, 2), (14, sec // 60 % 60, 2), (17, sec % 60, 2),
                               (20, frac, 6)):
        for d in range(digits):
            out[:, col + digits - 1 - d] += (value // 10 ** d % 10).astype(np.uint8)
    out[:, 26:] = np.frombuffer(suffix, dtype=np.uint8)
    return out.view(f"S{out.shape[1]}").reshape(-1)


class _Steps:
    """The text of the numbers ``k / scale`` (``scale`` None: the integers ``k``) for
    k = 0, 1, 2, ... between ``before`` and ``after``, looked up instead of written: a field
    with few distinct values (a speed in tenths, a gear) costs an index, not a number to
    format. ``texts(x)`` is None when ``x`` has a value the table cannot hold (negative,
    negative zero, too big): the caller then writes them."""

    LIMIT = 1 << 20

    def __init__(self, scale: float | None, before: bytes, after: bytes) -> None:
        self.scale, self.before, self.after = scale, before, after
        self.table = np.empty(0, dtype=object)

    def texts(self, x: np.ndarray) -> np.ndarray | None:
        """``x`` rounded as ``np.round(x, digits)`` rounds it (or integers), as texts."""
        k = x.astype(np.int64) if self.scale is None else np.rint(x * self.scale)
        if k.size == 0:
            return np.empty(0, dtype=object)
        top, low = k.max(), k.min()
        if low < 0 or top >= self.LIMIT or (self.scale is not None and np.signbit(x).any()):
            return None
        if top >= self.table.size:
            self._grow(int(top) + 1)
        return np.asarray(self.table[k.astype(np.int64)])

    def _grow(self, n: int) -> None:
        n = max(n, 2 * self.table.size)
        ks = np.arange(self.table.size, n)
        values = ks if self.scale is None else ks / self.scale  # as np.round divides
        self.table = np.concatenate([self.table, _table(
            [self.before + t + self.after for t in _dumps(values)[1:-1].split(b",")])])


_AFTER_STAMP = b'","location":{"lat":'
_FAULT_TEXTS = _table([b',"fault_codes":' + orjson.dumps(codes)
                       for codes in [[c] for c in DTC_CODES] + [[]]])  # index -1: no fault
_FLAG_TEXTS = _table([b',"speeding":' + orjson.dumps(sp) + b',"rpm_over_redline":'
                      + orjson.dumps(ov) + b',"seq":'
                      for sp in (False, True) for ov in (False, True)])  # speeding * 2 + over


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


class Encoder:
    """Turns fleet states into event JSON; caches per-vehicle ids, keys and trip ids, and the
    JSON text of everything that depends only on the car or on its road segment.

    ``ids``, ``keys``, ``trips`` and ``trip_no`` are lists with a row per car of the fleet
    (producer/shards.py replaces them when cars change hands; the cached text follows)."""

    def __init__(self, net: RoadNetwork, *, first_vehicle_id: str, run_key: str,
                 speed_tolerance_kmh: float, redline_rpm: int) -> None:
        self.net = net
        self.first_vehicle_id = first_vehicle_id
        self.run_key = run_key
        self.tolerance = speed_tolerance_kmh
        self.redline = redline_rpm
        self._ids: list[str] = []
        self._keys: list[bytes] = []
        self._trips: list[str] = []
        self._trip_no: list[int] = []
        self._forget()
        # per road segment: road type and limit, then the heading (as computed per event)
        limit = net.edge_limit.astype(np.int64).tolist()
        self._edge_texts = _table([
            b',"road_type":' + orjson.dumps(rt) + b',"speed_limit_kmh":' + orjson.dumps(lim)
            for rt, lim in zip(np.array(ROAD_TYPES)[net.edge_type].tolist(), limit,
                               strict=True)])
        self._heading_texts = _table(_rows([np.round(net.edge_heading, 1) % 360.0], [],
                                           b',"odometer_km":'))
        for i, text in enumerate(self._heading_texts.tolist()):
            self._heading_texts[i] = b',"heading_deg":' + text
        # fields with few distinct values: looked up (see _Steps)
        self._speed = _Steps(10.0, b'},"speed_kmh":', b',"engine_rpm":')
        self._rpm = _Steps(None, b"", b',"gear":')
        self._gear = _Steps(None, b"", b',"fuel_level_pct":')
        self._fuel = _Steps(100.0, b"", b"")

    @staticmethod
    def _column(steps: _Steps, x: np.ndarray, rounded: Callable[[], np.ndarray]) -> Any:
        """The texts of ``rounded()`` (the field's value) with the table's text around them:
        looked up from ``x``, or written when the table cannot hold a value."""
        texts = steps.texts(x)
        if texts is not None:
            return texts
        return [steps.before + t + steps.after for t in _rows([rounded()], [])]

    # the rows; replacing one list drops the cached text (rebuilt from the lists when used)
    @property
    def ids(self) -> list[str]:
        return self._ids

    @ids.setter
    def ids(self, value: list[str]) -> None:
        self._ids = value
        self._forget()

    @property
    def keys(self) -> list[bytes]:
        return self._keys

    @keys.setter
    def keys(self, value: list[bytes]) -> None:
        self._keys = value
        self._forget()

    @property
    def trips(self) -> list[str]:
        return self._trips

    @trips.setter
    def trips(self, value: list[str]) -> None:
        self._trips = value
        self._forget()

    @property
    def trip_no(self) -> list[int]:
        return self._trip_no

    @trip_no.setter
    def trip_no(self, value: list[int]) -> None:
        self._trip_no = value
        self._forget()

    def _forget(self) -> None:
        self.key_array = np.empty(0, dtype=object)  # ``keys`` as an array (fancy indexing)
        self._heads = np.empty(0, dtype=object)  # per car: the text up to its timestamp
        # per car: the text from its trip id to the end, and the trip number, ignition and
        # vehicle class it was written for (-1: not yet)
        self._tails = np.empty(0, dtype=object)
        self._tail_of = np.empty((0, 3), dtype=np.int64)

    def ensure(self, n: int) -> None:
        """Make ids, Kafka keys and trip ids of the first ``n`` cars available."""
        for i in range(len(self._ids), n):
            vid = vehicle_id(self.first_vehicle_id, i)
            self._ids.append(vid)
            self._keys.append(vid.encode())
            self._trips.append(trip_id(self.run_key, vid))
            self._trip_no.append(0)
        have, rows = self.key_array.size, len(self._ids)
        if have < rows:
            self.key_array = np.concatenate([self.key_array, _table(self._keys[have:])])
            self._heads = np.concatenate([self._heads, _table(
                [b'{"vehicle_id":' + orjson.dumps(v) + b',"timestamp":"'
                 for v in self._ids[have:]])])
            self._tails = np.concatenate([self._tails, np.empty(rows - have, dtype=object)])
            self._tail_of = np.concatenate(
                [self._tail_of, np.full((rows - have, 3), -1, dtype=np.int64)])

    def _tail_texts(self, s: FleetState, idx: np.ndarray) -> np.ndarray:
        """Per car of ``idx``: ``,"trip_id":...`` to the closing brace and a newline (a car on
        a new trip gets its trip's id; the text is rewritten when trip, ignition or class
        change)."""
        now = np.stack([s.trip[idx], (~s.parked[idx]).astype(np.int64),
                        s.vclass[idx].astype(np.int64)], axis=1)
        for k in np.flatnonzero((now != self._tail_of[idx]).any(axis=1)).tolist():
            i, (trip, ignition, vclass) = int(idx[k]), now[k].tolist()
            if self._trip_no[i] != trip:
                self._trip_no[i] = trip
                self._trips[i] = trip_id(self.run_key, self._ids[i], trip)
            self._tails[i] = (b',"trip_id":' + orjson.dumps(self._trips[i])
                              + b',"schema_version":' + orjson.dumps(SCHEMA_VERSION)
                              + b',"ignition":' + orjson.dumps(bool(ignition))
                              + b',"vehicle_type":' + orjson.dumps(VEHICLE_TYPES[vclass])
                              + b"}\n")
            self._tail_of[i] = now[k]
        return np.asarray(self._tails[idx])

    def encode(self, s: FleetState, ts: datetime, idx: np.ndarray | None = None,
               ahead_s: np.ndarray | None = None,
               stops: tuple[np.ndarray, np.ndarray] | None = None) -> list[bytes]:
        """One JSON document per car of ``idx`` (default: all, in fleet order), stamped ``ts``
        plus ``ahead_s[k]`` seconds for car ``idx[k]``, where it then is (moved on along its
        edge at its speed, no further than the edge's end, nor than the stop line of a red (or
        amber) light it is stopping for: the fleet holds it there). ``stops``: the fleet's
        ``stop_lines`` of ``s``, when the caller has them."""
        net = self.net
        self.ensure(s.size)
        if idx is None:
            idx = np.arange(s.size)
        n = idx.size
        if n == 0:
            return []
        edge, v = s.edge[idx], s.v[idx]
        pos = s.pos[idx]
        if ahead_s is not None:
            # no further than the stop line the fleet will stop it at (red, or amber it can
            # stop for; on this edge or, before a short light edge, the line on this one)
            if stops is None:
                stops = stop_lines(net, s, np.maximum(net.edge_len[s.edge] - s.pos, 0.0))
            stop_d = stops[1]
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
        # the event's text in 14 columns, each a piece per event
        cols = np.empty((n, 14), dtype=object)
        cols[:, 0] = self._heads[idx]
        cols[:, 1] = _stamps(ts, None if ahead_s is None else np.rint(ahead_s * 1e6), n,
                             _AFTER_STAMP)
        cols[:, 2] = _rows([np.round(lat, 6), np.round(lon, 6)], [b',"lon":'])
        x = v * 3.6
        cols[:, 3] = self._column(self._speed, x, lambda: np.round(x, 1))
        cols[:, 4] = self._column(self._rpm, rpm, lambda: rpm)
        gear = s.gear[idx]
        cols[:, 5] = self._column(self._gear, gear, lambda: gear)
        fuel = s.fuel[idx]
        cols[:, 6] = self._column(self._fuel, fuel, lambda: np.round(fuel, 2))
        cols[:, 7] = _FAULT_TEXTS[s.fault[idx]]
        cols[:, 8] = self._edge_texts[edge]
        cols[:, 9] = _FLAG_TEXTS[speeding.astype(np.int64) * 2 + over]
        cols[:, 10] = _rows([s.seq[idx]], [])
        cols[:, 11] = self._heading_texts[edge]
        cols[:, 12] = _rows([np.round(s.odo[idx], 3)], [])
        cols[:, 13] = self._tail_texts(s, idx)
        events = b"".join(cols.ravel().tolist()).split(b"\n")
        events.pop()  # after the last newline
        return events

    def events(self, s: FleetState, ts: datetime) -> list[TelemetryEvent]:
        """The same events as validated models (slow path: tests, status messages)."""
        return [read_event(b) for b in self.encode(s, ts)]
