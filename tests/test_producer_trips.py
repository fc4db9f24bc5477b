"""Trips, parking, heartbeats, time of day, vehicle classes, fault codes and report phases."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest

from common.contract import EVENT_FIELDS, read_event
from producer import demand
from producer import vehicle as vh
from producer.builtin import warsaw
from producer.fleet import FleetParams, init_fleet, step
from producer.geo import haversine_m
from producer.geojson import load_roads
from producer.settings import Settings, fleet_mix
from producer.sim import Simulation, sim_options

MORNING = datetime(2026, 3, 10, 7, 0, tzinfo=UTC)  # 08:24 local solar time in Warsaw
NIGHT = datetime(2026, 3, 10, 1, 0, tzinfo=UTC)


def _sim(n: int, start: datetime, seed: int = 5, **kw: object) -> Simulation:
    opts = sim_options(Settings(**kw))  # type: ignore[arg-type]
    return Simulation(warsaw(), seed=seed, fleet_size=n, rate_hz=1.0,
                      first_vehicle_id="TESTCAR01", run_key=f"seed={seed}", start_time=start,
                      **opts)


def _run(sim: Simulation, start: datetime, ticks: int) -> list[dict]:
    docs = []
    for k in range(ticks):
        docs += [orjson.loads(b) for b in sim.encode(start + timedelta(seconds=k))]
        sim.advance()
    return docs


def test_time_of_day_sets_how_many_cars_drive() -> None:
    share = {}
    for name, start in (("morning", MORNING), ("night", NIGHT)):
        sim = _sim(400, start)
        driving = []
        for k in range(600):
            sim.encode(start + timedelta(seconds=k))
            sim.advance()
            driving.append(float(np.mean(~sim.state.parked)))
        share[name] = float(np.mean(driving[300:]))
    assert share["night"] < 0.05 < 0.2 < share["morning"]
    hours = np.arange(24) + 0.5
    profile = np.array([demand.driving_share(float(h)) for h in hours])
    assert profile.argmax() in (8, 17) and profile[[7, 8, 16, 17]].min() > 3 * profile[:5].max()


def test_parked_cars_send_heartbeats_with_the_ignition_off() -> None:
    sim = _sim(60, MORNING, sim_phase_jitter=False)
    docs = _run(sim, MORNING, 900)
    by_car: dict[str, list[dict]] = defaultdict(list)
    for d in docs:
        assert list(d) == list(EVENT_FIELDS)
        by_car[d["vehicle_id"]].append(d)
    assert len(by_car) == 60
    heartbeats = 0
    for events in by_car.values():
        assert [e["seq"] for e in events] == list(range(len(events)))  # +1 per event sent
        t = [datetime.fromisoformat(e["timestamp"]) for e in events]
        for a, b, ea, eb in zip(t, t[1:], events, events[1:], strict=False):
            gap = (b - a).total_seconds()
            if not ea["ignition"] and not eb["ignition"]:
                heartbeats += 1
                assert gap == 60.0  # parked: one heartbeat a minute
                assert ea["location"] == eb["location"]
            elif ea["ignition"]:
                assert gap == 1.0  # driving: every tick
        for e in events:
            if not e["ignition"]:
                assert (e["speed_kmh"], e["engine_rpm"], e["gear"]) == (0.0, 0, 0)
    assert heartbeats > 100


def test_trips_end_parked_and_each_trip_has_its_own_id() -> None:
    sim = _sim(40, MORNING, sim_phase_jitter=False)
    docs = _run(sim, MORNING, 1800)
    trips: dict[str, list[str]] = defaultdict(list)
    for d in docs:
        ids = trips[d["vehicle_id"]]
        if not ids or ids[-1] != d["trip_id"]:
            ids.append(d["trip_id"])
    assert sum(len(v) - 1 for v in trips.values()) >= 10  # cars left on new trips
    all_ids = [t for v in trips.values() for t in v]
    assert len(all_ids) == len(set(all_ids))
    # a new trip starts from a parked car; it arrives (stops, then the ignition goes off)
    prev: dict[str, dict] = {}
    arrivals = 0
    for d in docs:
        p = prev.get(d["vehicle_id"])
        if p is not None and p["trip_id"] != d["trip_id"]:
            assert not p["ignition"] and d["ignition"]
        if p is not None and p["ignition"] and not d["ignition"]:
            arrivals += 1
            assert p["speed_kmh"] / 3.6 <= 4.0  # stopped from there within a second, gently
        prev[d["vehicle_id"]] = d
    assert arrivals >= 10
    # deterministic for the seed
    again = _run(_sim(40, MORNING, sim_phase_jitter=False), MORNING, 1800)
    assert again == docs


def test_a_trip_starts_with_the_engine_idling_at_the_kerb() -> None:
    """The engine starts, the car idles for demand.START_IDLE_S without moving and without
    holding up the cars on the lane, then drives off."""
    sim = _sim(60, MORNING, sim_phase_jitter=False)
    docs = _run(sim, MORNING, 900)
    by_car: dict[str, list[dict]] = defaultdict(list)
    for d in docs:
        by_car[d["vehicle_id"]].append(d)
    lo, hi = demand.START_IDLE_S
    idles = []
    for events in by_car.values():
        for k in range(1, len(events)):
            if events[k - 1]["ignition"] or not events[k]["ignition"]:
                continue
            idle = 0
            while k + idle < len(events) and events[k + idle]["speed_kmh"] == 0.0:
                if idle > 0:
                    assert events[k + idle]["engine_rpm"] >= 600  # idling, not off
                assert events[k + idle]["location"] == events[k]["location"]
                idle += 1
            if k + idle == len(events):
                continue  # still idling when the run ended
            idles.append(idle)
            assert events[k + idle]["ignition"]
    assert len(idles) >= 5 and min(idles) >= lo
    # longer only while the lane beside the spot is not free (a queue stands there)
    assert np.mean(np.array(idles) <= hi + 1) >= 0.8, idles
    # idling cars are not in traffic: nobody queues behind them
    s = sim.state
    idling = ~s.parked & (s.dwell_ttl > 0)
    assert demand.start_idle_s(np.array([0.0, 1.0])).tolist() == [lo, hi]
    assert not (idling & (s.v > 0)).any()


def test_refuelling_happens_parked_for_minutes() -> None:
    net = warsaw()
    rng = np.random.default_rng(3)
    s = init_fleet(50, rng, net, trips=True, clock0=7 * 3600.0)
    s = replace(s, fuel=np.full(50, 9.0), refuel_at=np.full(50, 8.0), parked=np.zeros(50, bool),
                trip_left=np.full(50, 50_000.0))
    params = FleetParams(trips=True)
    fuel, parked, v = [], [], []
    for _ in range(2400):
        s = step(s, 1.0, rng, net, params)
        fuel.append(s.fuel.copy())
        parked.append(s.parked.copy())
        v.append(s.v.copy())
    f, pk, sp = np.array(fuel), np.array(parked), np.array(v)
    rises = np.diff(f, axis=0) > 0
    assert rises.any(axis=0).sum() >= 40  # most cars refuelled
    assert pk[1:][rises].all() and (sp[1:][rises] == 0).all()  # only while parked
    assert np.diff(f, axis=0).max() <= demand.PUMP_PCT_PER_S + 1e-9  # at the pump's rate
    full_after = [int(np.argmax(rises[:, c])) for c in range(50) if rises[:, c].any()]
    durations = [int(rises[:, c].sum()) for c in range(50) if rises[:, c].any()]
    assert min(durations) >= 60 and f.max() == 100.0 and full_after  # a minute or more


def test_fault_codes_persist_until_repaired() -> None:
    net = warsaw()
    rng = np.random.default_rng(4)
    s = init_fleet(30, rng, net, trips=True, clock0=7 * 3600.0)
    s = replace(s, parked=np.zeros(30, bool), fault=np.full(30, 3, np.int16),
                fault_ttl=np.full(30, 500.0), trip_left=np.full(30, 1e9),
                to_depot=np.zeros(30, bool))
    params = FleetParams(trips=True, repair_s=500.0)
    for k in range(600):
        s = step(s, 1.0, rng, net, params)
        if k < 495:
            assert (s.fault == 3).all()  # nothing clears a fault code but the repair
    assert (s.fault[s.fault_ttl <= 0] == -1).all() and (s.fault != 3).sum() >= 29
    # a depot visit repairs at once
    s = replace(s, fault=np.full(30, 5, np.int16), fault_ttl=np.full(30, 1e6),
                to_depot=np.ones(30, bool), trip_left=np.full(30, 30.0),
                parked=np.zeros(30, bool))
    for _ in range(60):
        s = step(s, 1.0, rng, net, params)
    assert s.parked.sum() >= 25 and (s.fault[s.parked] == -1).all()


def test_vehicle_classes_and_the_fleet_mix() -> None:
    assert fleet_mix("8,1.5,0.5") == pytest.approx((0.8, 0.15, 0.05))
    with pytest.raises(ValueError, match="SIM_FLEET_MIX"):
        Settings(sim_fleet_mix="1,2")
    sim = _sim(2000, MORNING, sim_fleet_mix="0.5,0.3,0.2")
    types = [orjson.loads(b)["vehicle_type"] for b in sim.encode(MORNING)]
    counts = {t: types.count(t) for t in vh.VEHICLE_TYPES}
    assert counts["car"] / 2000 == pytest.approx(0.5, abs=0.04)
    assert counts["van"] / 2000 == pytest.approx(0.3, abs=0.04)
    assert counts["truck"] / 2000 == pytest.approx(0.2, abs=0.04)
    for _ in range(300):
        sim.encode(MORNING)
        sim.advance()
    st = sim.state
    trucks = st.vclass == vh.TRUCK
    assert (st.v[trucks] * 3.6 <= vh.CLASS_TOP_KMH[vh.TRUCK] + 1e-6).all()
    one_km = [vh.fuel_used_pct(np.array([10.0]), np.array([10.0]), np.array([1000.0]), 1.0,
                               np.array([c]))[0] / 100 * vh.CLASS_TANK_L[c]
              for c in (vh.CAR, vh.VAN, vh.TRUCK)]  # litres per km at 36 km/h
    assert 0.04 < one_km[0] < one_km[1] < one_km[2] < 0.4


def test_each_car_reports_on_its_own_phase() -> None:
    sim = _sim(30, MORNING, sim_trips=False)
    docs = _run(sim, MORNING, 5)
    offsets: dict[str, set[float]] = defaultdict(set)
    for k, d in enumerate(docs):
        ev = read_event(orjson.dumps(d))
        tick = k // 30
        off = (ev.timestamp - MORNING).total_seconds() - tick
        assert 0 <= off < 1.0
        offsets[d["vehicle_id"]].add(round(off, 6))
    assert all(len(o) == 1 for o in offsets.values())  # a fixed phase per car
    assert len({next(iter(o)) for o in offsets.values()}) == 30  # spread over the tick
    stamps = [d["timestamp"] for d in docs]
    assert stamps == sorted(stamps)  # each tick's events in time order
    assert _run(_sim(30, MORNING, sim_trips=False), MORNING, 5) == docs


def _grid_with_fuel(path: Path, stations: list[tuple[int, int]]) -> Path:
    """A 5 x 5 grid of two-way residential streets 150 m apart (split every 15 m), with
    ``amenity=fuel`` Points (one a polygon) next to the given crossings."""
    lat0, lon0, k = 60.52, 26.94, 150.0
    dlat, dlon = k / 111_320.0, k / (111_320.0 * np.cos(np.radians(lat0)))
    feats: list[dict] = []
    for axis in (0, 1):
        for a in range(5):
            pts = [(a, b / 10) if axis == 0 else (b / 10, a) for b in range(41)]
            feats.append({"type": "Feature", "properties": {"highway": "residential"},
                          "geometry": {"type": "LineString", "coordinates": [
                              [lon0 + j * dlon, lat0 + i * dlat] for i, j in pts]}})
    for n, (i, j) in enumerate(stations):
        lat, lon = lat0 + i * dlat + 0.00005, lon0 + j * dlon + 0.00005
        geom = ({"type": "Point", "coordinates": [lon, lat]} if n == 0 else
                {"type": "Polygon", "coordinates": [[[lon, lat], [lon + 1e-4, lat],
                                                     [lon, lat + 1e-4], [lon, lat]]]})
        feats.append({"type": "Feature", "properties": {"amenity": "fuel", "name": f"F{n}"},
                      "geometry": geom})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def test_cars_low_on_fuel_refuel_at_the_maps_fuel_stations(tmp_path: Path) -> None:
    net = load_roads(_grid_with_fuel(tmp_path / "fuel.geojson", [(0, 0), (4, 3)]))
    assert net.fuel_places.size == 2
    station_nodes = set(net.places[net.fuel_places].tolist())
    rng = np.random.default_rng(4)
    s = init_fleet(30, rng, net, trips=True, clock0=7 * 3600.0)
    s = replace(s, fuel=np.full(30, 9.0), refuel_at=np.full(30, 8.0), parked=np.zeros(30, bool),
                trip_left=np.full(30, 50_000.0))
    params = FleetParams(trips=True)
    prev = s
    away: list[float] = []  # metres from the pumping car to the nearest station node
    pumped = np.zeros(30, dtype=bool)
    slat, slon = net.node_lat[list(station_nodes)], net.node_lon[list(station_nodes)]
    for _ in range(1800):
        s = step(s, 1.0, rng, net, params)
        rising = s.fuel > prev.fuel
        assert (s.parked[rising] & (s.v[rising] == 0)).all()  # pumped only while parked
        for c in np.flatnonzero(rising).tolist():
            f = s.pos[c] / net.edge_len[s.edge[c]]
            a, b = net.edge_from[s.edge[c]], net.edge_to[s.edge[c]]
            lat = net.node_lat[a] + f * (net.node_lat[b] - net.node_lat[a])
            lon = net.node_lon[a] + f * (net.node_lon[b] - net.node_lon[a])
            away.append(float(haversine_m(slat, slon, lat, lon).min()))
        pumped |= rising
        prev = s
    assert pumped.sum() >= 20  # most cars refuelled, in half an hour
    assert max(away) < 1.0  # all of them at a station
