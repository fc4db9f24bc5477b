"""The column-at-a-time JSON encoder (producer/events.py) writes, byte for byte, what
``orjson.dumps`` writes for each event's dict: checked against a plain per-event reference
over long runs with trips, parking, faults, report phases, time zones and midnight."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import orjson
import pytest

from common.contract import (
    EVENT_FIELDS,
    SCHEMA_VERSION,
    format_timestamp,
    read_event,
)
from producer.builtin import warsaw
from producer.events import Encoder, _rows, _stamps, _Steps
from producer.fleet import stop_lines
from producer.roads import ROAD_TYPES
from producer.sim import Simulation
from producer.vehicle import DTC_CODES, VEHICLE_TYPES

T0 = datetime(2026, 1, 1, 7, tzinfo=UTC)


def reference(enc: Encoder, s, ts: datetime, idx: np.ndarray, ahead: np.ndarray | None):
    """The events as dicts, one at a time, through ``orjson.dumps`` (the encoder's contract)."""
    net = enc.net
    pos = s.pos[idx]
    if ahead is not None:
        _, stop_d = stop_lines(net, s, np.maximum(net.edge_len[s.edge] - s.pos, 0.0))
        move = np.minimum(s.v[idx] * ahead, np.maximum(stop_d[idx], 0.0))
        pos = np.minimum(pos + move, net.edge_len[s.edge[idx]])
    out = []
    for k, i in enumerate(idx.tolist()):
        e = int(s.edge[i])
        a, b = net.edge_from[e], net.edge_to[e]
        f = np.clip(pos[k] / net.edge_len[e], 0.0, 1.0)
        speed = float(np.round(s.v[i] * 3.6, 1))
        limit = int(net.edge_limit[e])
        off = 0 if ahead is None else int(np.rint(ahead[k] * 1e6))
        doc = {
            "vehicle_id": enc.ids[i],
            "timestamp": format_timestamp(ts + timedelta(microseconds=off)),
            "location": {"lat": float(np.round(net.node_lat[a] + f * (net.node_lat[b]
                                                                      - net.node_lat[a]), 6)),
                         "lon": float(np.round(net.node_lon[a] + f * (net.node_lon[b]
                                                                      - net.node_lon[a]), 6))},
            "speed_kmh": speed, "engine_rpm": int(s.rpm[i]), "gear": int(s.gear[i]),
            "fuel_level_pct": float(np.round(s.fuel[i], 2)),
            "fault_codes": [] if s.fault[i] < 0 else [DTC_CODES[s.fault[i]]],
            "road_type": ROAD_TYPES[net.edge_type[e]], "speed_limit_kmh": limit,
            "speeding": bool(speed > limit + enc.tolerance),
            "rpm_over_redline": bool(s.rpm[i] > enc.redline), "seq": int(s.seq[i]),
            "heading_deg": float(np.round(net.edge_heading[e], 1) % 360.0),
            "odometer_km": float(np.round(s.odo[i], 3)), "trip_id": enc.trips[i],
            "schema_version": SCHEMA_VERSION, "ignition": not bool(s.parked[i]),
            "vehicle_type": VEHICLE_TYPES[s.vclass[i]]}
        out.append(orjson.dumps(doc))
    return out


@pytest.mark.parametrize("trips", [True, False])
def test_encoder_writes_orjson_bytes_of_each_event(trips: bool) -> None:
    sim = Simulation(warsaw(), seed=4, fleet_size=300, rate_hz=1.0, first_vehicle_id="TESTCAR01",
                     run_key="k", trips=trips, phase_jitter=True, start_time=T0)
    enc, plus2 = sim.encoder, timezone(timedelta(hours=2))
    seen = {"faults": 0, "parked": 0, "new trips": 0}
    for k in range(240):
        if k == 100:  # faults on some cars, so their codes are written too
            fault = sim.state.fault.copy()
            fault[::7] = np.arange(fault[::7].size) % len(DTC_CODES)
            sim.state = replace(sim.state, fault=fault.astype(np.int16))
        ts, st = T0 + timedelta(seconds=k), sim.state
        rng = np.random.default_rng(k)
        idx = np.flatnonzero(rng.random(st.size) < 0.8)
        ahead = rng.random(idx.size)
        if k % 20 == 0:
            for args in ((ts, idx, None), (ts.astimezone(plus2), idx, ahead)):
                assert enc.encode(st, *args) == reference(enc, st, *args), k
        assert enc.encode(st, ts, idx, ahead) == reference(enc, st, ts, idx, ahead), k
        seen["faults"] += int((st.fault[idx] >= 0).sum())
        seen["parked"] += int(st.parked[idx].sum())
        seen["new trips"] = int(st.trip.max())
        sim.encode(ts)
        sim.advance()
    assert seen["faults"] > 0
    if trips:  # parked cars and cars on a later trip were among them
        assert seen["parked"] > 0 and seen["new trips"] > 0


def test_each_event_is_the_contract_in_order() -> None:
    sim = Simulation(warsaw(), seed=8, fleet_size=50, rate_hz=2.0, first_vehicle_id="VAN7",
                     run_key="k", trips=True, phase_jitter=True, start_time=T0)
    for raw in sim.encode(T0):
        doc = orjson.loads(raw)
        assert list(doc) == list(EVENT_FIELDS)
        assert read_event(raw).model_dump(mode="json") == doc
    assert sim.encoder.encode(sim.state, T0, np.zeros(0, dtype=np.int64)) == []


def test_replaced_rows_are_written_with_their_own_ids() -> None:
    """A sharded fleet swaps the encoder's rows (ids, keys, trips): the cached text follows."""
    sim = Simulation(warsaw(), seed=2, fleet_size=6, rate_hz=1.0, first_vehicle_id="TESTCAR01",
                     run_key="k")
    enc = sim.encoder
    before = enc.encode(sim.state, T0)
    enc.ids, enc.keys = enc.ids[::-1], enc.keys[::-1]
    enc.trips, enc.trip_no = enc.trips[::-1], enc.trip_no[::-1]
    after = enc.encode(sim.state, T0)
    assert [orjson.loads(x)["vehicle_id"] for x in after] == [f"TESTCAR0{i}"
                                                              for i in range(6, 0, -1)]
    assert after == reference(enc, sim.state, T0, np.arange(6), None)
    assert after != before
    assert enc.key_array.tolist() == enc.keys


def test_stamps_across_midnight_and_a_leap_day() -> None:
    for ts in (datetime(2028, 2, 28, 23, 59, 59, 999_000, tzinfo=UTC),
               datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC),
               datetime(2026, 12, 31, 23, 59, 58, 123_456, tzinfo=UTC)):
        off = np.rint(np.linspace(0.0, 2.5, 101) * 1e6)
        got = _stamps(ts, off, off.size, b"!").tolist()
        assert got == [format_timestamp(ts + timedelta(microseconds=int(o))).encode() + b"!"
                       for o in off.tolist()]


def test_rows_write_the_digits_orjson_writes() -> None:
    rng = np.random.default_rng(1)
    a = np.round(rng.uniform(-180, 180, 500), 6)
    b = np.concatenate([[0.0, -0.0, 1e-7, 123456.5], rng.uniform(0, 1e6, 496)])
    ints = rng.integers(0, 10**12, 500)
    assert _rows([a, b], [b"|"], b"!") == [orjson.dumps(x) + b"|" + orjson.dumps(y) + b"!"
                                           for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    assert _rows([ints], [], b"#") == [orjson.dumps(x) + b"#" for x in ints.tolist()]
    assert _rows([ints[:3]], []) == [orjson.dumps(x) for x in ints[:3].tolist()]
    assert _rows([a[:0], b[:0]], [b"|"]) == []


def test_looked_up_texts_are_orjson_texts_and_odd_values_are_written() -> None:
    steps = _Steps(10.0, b"<", b">")
    x = np.concatenate([np.linspace(0.0, 250.0, 10_001), [0.05, 0.15, 99.95, 1e-9]])
    got = steps.texts(x)
    assert got is not None
    assert got.tolist() == [b"<" + orjson.dumps(v) + b">" for v in np.round(x, 1).tolist()]
    for odd in (-0.0, -1.0, 1e12):  # negative zero, negative, too big: the caller writes them
        assert steps.texts(np.array([1.0, odd])) is None
    ints = _Steps(None, b"", b",")
    assert ints.texts(np.array([7, 0, 6200], dtype=np.int32)).tolist() == [b"7,", b"0,", b"6200,"]
