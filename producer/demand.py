"""Travel demand over the day: when cars leave, how far they go, how long they stay.

Pure functions of the local hour and uniform draws. The local hour is the simulated clock
(UTC) shifted by the network's longitude (solar time, lon / 15 hours: Warsaw is UTC+1.4 h,
close to CET), so ``--start-time`` matters: at 03:00 nearly the whole fleet is parked, at
08:00 and 17:00 the most cars are on the road.

DRIVING_SHARE is the share of the fleet driving at each local hour: a two-peak weekday
profile (morning 7-9 h, evening 16-18 h, low at night), the shape of the hourly traffic
counts of European cities (e.g. TomTom Traffic Index hourly curves, national weekday count
profiles), scaled for a service fleet whose cars spend most of the day parked.
Parked cars whose minimum dwell is over leave at the rate that steers the fleet's share on
the road to that profile (time constant SHARE_TAU_S).
"""

from __future__ import annotations

import numpy as np

DRIVING_SHARE = np.array([
    0.02, 0.01, 0.01, 0.01, 0.02, 0.05, 0.15, 0.32, 0.40, 0.28, 0.22, 0.22,
    0.24, 0.23, 0.22, 0.25, 0.33, 0.40, 0.32, 0.20, 0.12, 0.08, 0.05, 0.03,
])
"""Share of the fleet driving, by local hour (value at hh:30, linear in between)."""
SHARE_TAU_S = 120.0
TRIP_MEDIAN_M = 5000.0
TRIP_SIGMA = 0.7  # lognormal spread of trip lengths
TRIP_MIN_M, TRIP_MAX_M = 800.0, 30_000.0
DWELL_MIN_S, DWELL_MAX_S = 180.0, 3 * 3600.0  # minimum stay at a destination
REFUEL_DWELL_S = (240.0, 480.0)  # minutes at the pump
REFUEL_TRIP_M = 1500.0  # a car low on fuel ends its trip at a station within this
PUMP_PCT_PER_S = 1.2  # about 36 L/min into a 50 L tank
DEPOT_START_H = (6.0, 9.0)  # a car's day starts from its depot between these hours
START_IDLE_S = (11.0, 20.0)
"""Seconds a driver idles at the kerb after starting the engine, before pulling out (drawn
uniformly): the driving cycles built from recorded trips open with such an idle, 11 s in
WLTC (UNECE GTR 15, Annex 1: the Low phase of every class) and 20 s in US EPA's UDDS
(40 CFR 86, Appendix I)."""


def local_hour(clock0_s: float, t: float, lon: float) -> float:
    """Local solar hour in [0, 24) at simulated time ``t``."""
    return float(((clock0_s + t) / 3600.0 + lon / 15.0) % 24.0)


def driving_share(hour: float) -> float:
    x = (hour - 0.5) % 24.0
    i = int(x)
    f = x - i
    return float(DRIVING_SHARE[i] * (1 - f) + DRIVING_SHARE[(i + 1) % 24] * f)


def departure_chance(hour: float, driving: float, fleet: int, free: int, h: float) -> float:
    """Chance that each of ``free`` parked cars (minimum stay over) leaves in the next ``h``
    seconds: the fleet's share on the road (``driving``) is steered to DRIVING_SHARE with a
    time constant of SHARE_TAU_S."""
    need = max(driving_share(hour) - driving, 0.0) * fleet * h / SHARE_TAU_S
    return min(need / max(free, 1), 1.0)


def depot_share(hour: float) -> float:
    """Chance that a trip starting now is the last one of the car's day (to its depot)."""
    if hour >= 21.0 or hour < 4.0:
        return 0.9
    if hour >= 18.0:
        return 0.5
    return 0.05


def trip_length_m(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Lognormal trip lengths from two uniform draws (Box-Muller)."""
    z = np.sqrt(-2.0 * np.log(np.maximum(u1, 1e-12))) * np.cos(2 * np.pi * u2)
    return np.asarray(np.clip(TRIP_MEDIAN_M * np.exp(TRIP_SIGMA * z), TRIP_MIN_M, TRIP_MAX_M))


def start_idle_s(u: np.ndarray) -> np.ndarray:
    """Idle after the engine starts, before the car pulls out (START_IDLE_S)."""
    return np.asarray(START_IDLE_S[0] + (START_IDLE_S[1] - START_IDLE_S[0]) * u)


def dwell_s(u: np.ndarray) -> np.ndarray:
    """Minimum stay at a destination: log-uniform between minutes and hours."""
    return np.asarray(DWELL_MIN_S * (DWELL_MAX_S / DWELL_MIN_S) ** u)


def until_morning_s(hour: float, u: np.ndarray) -> np.ndarray:
    """Seconds from ``hour`` to each car's start of the next day at its depot."""
    start = DEPOT_START_H[0] + (DEPOT_START_H[1] - DEPOT_START_H[0]) * u
    return np.asarray(((start - hour) % 24.0) * 3600.0)
