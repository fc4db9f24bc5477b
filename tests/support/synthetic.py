"""Deterministic synthetic telemetry, for the Streamlit app's tests and benchmark.

Builds real :class:`common.contract.TelemetryEvent` instances, so anything fed from here
matches the contract exactly.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta

from common.contract import Location, RoadType, TelemetryEvent
from producer.roads import DEFAULT_LIMITS

LIMITS = DEFAULT_LIMITS
"""The real network's speed limits by road type, so fake events agree with real ones."""
CENTRE = (48.137, 11.575)


def fleet_events(vehicles: int, steps: int, start: datetime, *, seed: int = 7,
                 dt_s: float = 1.0, prefix: str = "CAR") -> list[TelemetryEvent]:
    """``vehicles`` x ``steps`` events, oldest first, with every state represented.

    Vehicle i drives on a road type by i % 3; every 4th vehicle speeds, every 7th revs over
    the redline, every 5th has a fault code, every 6th runs low on fuel, every 9th is parked.
    """
    rng = random.Random(seed)
    out: list[TelemetryEvent] = []
    for i in range(vehicles):
        road: RoadType = ("urban", "rural", "highway")[i % 3]
        limit = LIMITS[road]
        lat = CENTRE[0] + rng.uniform(-0.08, 0.08)
        lon = CENTRE[1] + rng.uniform(-0.12, 0.12)
        heading = rng.uniform(0, 360)
        fuel = 8.0 + rng.uniform(0, 4) if i % 6 == 5 else rng.uniform(30, 95)
        parked = i % 9 == 8
        vid = f"{prefix}{i:05d}"
        for s in range(steps):
            base = 0.0 if parked else limit * (1.2 if i % 4 == 3 else 0.8)
            speed = max(0.0, base + (0.0 if parked else 10 * math.sin(s / 5 + i)))
            rpm = 800 if parked else int(1500 + speed * 25)
            if i % 7 == 6 and s % 3 == 0:
                rpm = 6600
            km = speed * dt_s / 3600
            heading = (heading + rng.uniform(-8, 8)) % 360
            lat += km / 111.0 * math.cos(math.radians(heading))
            lon += km / (111.0 * math.cos(math.radians(lat))) * math.sin(math.radians(heading))
            fuel = max(0.0, fuel - 0.002 * speed * dt_s / 60)
            out.append(TelemetryEvent(
                vehicle_id=vid, timestamp=start + timedelta(seconds=s * dt_s),
                location=Location(lat=round(lat, 6), lon=round(lon, 6)),
                speed_kmh=round(speed, 1), engine_rpm=rpm,
                gear=0 if speed < 1 else min(6, 1 + int(speed // 25)),
                fuel_level_pct=round(fuel, 2),
                fault_codes=["P0300"] if i % 5 == 4 else [],
                road_type=road, speed_limit_kmh=limit, speeding=speed > limit + 5,
                rpm_over_redline=rpm > 6200, seq=s, heading_deg=round(heading, 1) % 360,
                trip_id=f"{vid}-t0",
            ))
    out.sort(key=lambda e: (e.timestamp, e.vehicle_id))
    return out


def as_items(events: list[TelemetryEvent]) -> list[dict]:
    """Events as the web API serves them (JSON-mode dumps)."""
    return [e.model_dump(mode="json") for e in events]


def trail_items(events: list[TelemetryEvent], points: int = 60) -> list[dict]:
    """The /telemetry/trails shape, from events (last ``points`` per vehicle)."""
    by_vehicle: dict[str, list[dict]] = {}
    for e in events:
        by_vehicle.setdefault(e.vehicle_id, []).append({
            "timestamp": e.model_dump(mode="json")["timestamp"], "lat": e.location.lat,
            "lon": e.location.lon, "speed_kmh": e.speed_kmh,
        })
    return [{"vehicle_id": v, "points": pts[-points:]} for v, pts in sorted(by_vehicle.items())]
