"""One car's mechanics, vectorised over the fleet: drivers, gearbox, engine, fuel, faults.

Pure numpy functions of arrays; no state of their own, no randomness of their own (the
caller passes in uniform draws), so the fleet step stays deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# --- gearbox and engine --------------------------------------------------------------------
GEAR_RPM_PER_KMH = np.array([0.0, 120.0, 72.0, 50.0, 38.0, 31.0, 26.0])
"""Engine rpm per km/h in each gear (index 0 = neutral). 6200 rpm is 52 km/h in 1st."""
GEAR_ACCEL = np.array([1.0, 1.0, 0.82, 0.62, 0.46, 0.36, 0.28])
"""Share of the maximum acceleration available in each gear."""
IDLE_RPM = 800
MIN_IN_GEAR_RPM = 900  # slipping the clutch below this
RPM_NOISE = 40  # |noise| bound added to the engine rpm
UPSHIFT_RPM, DOWNSHIFT_RPM = 3000.0, 1400.0
SPORT_UPSHIFT_RPM, SPORT_DOWNSHIFT_RPM = 4500.0, 2200.0
SPRINT_UPSHIFT_RPM = 6500.0  # a sprinting driver revs past the redline before shifting
TOP_SPEED_KMH = 230.0

# --- driving ------------------------------------------------------------------------------
A_MAX = 3.2  # m/s^2 in first gear for an average driver
B_COMFORT = 2.5  # m/s^2 planned braking
B_MAX = 7.5  # m/s^2 emergency braking
SPRINT_FACTOR = 1.4  # target speed = limit * this during a sprint
SPRINT_RATE_PER_S = 1 / 900  # non-cautious drivers start a sprint about every 15 min
SPRINT_MIN_S, SPRINT_MAX_S = 6.0, 16.0
CAUTIOUS, NORMAL, SPEEDER = 0, 1, 2
DRIVER_SHARES = (0.3, 0.5, 0.2)

# --- vehicle classes ------------------------------------------------------------------------
VEHICLE_TYPES: tuple[str, ...] = ("car", "van", "truck")
CAR, VAN, TRUCK = 0, 1, 2
DEFAULT_FLEET_MIX = (0.8, 0.15, 0.05)
"""Shares of cars, vans and trucks (env SIM_FLEET_MIX)."""
CLASS_LENGTH_M = np.array([4.5, 5.5, 10.0])
CLASS_ACCEL = np.array([1.0, 0.8, 0.55])
"""Scale of the driver's acceleration: a loaded van or a truck pulls away slower."""
CLASS_TOP_KMH = np.array([TOP_SPEED_KMH, 160.0, 90.0])
"""A truck's speed limiter is set at 90 km/h (EU Directive 92/6/EEC)."""
CLASS_FUEL = np.array([1.0, 1.4, 4.0])
"""Consumption relative to a car (a car ~7 L/100 km in town, a rigid truck ~28)."""
CLASS_TANK_L = np.array([50.0, 70.0, 200.0])

# --- fuel and faults ----------------------------------------------------------------------
TANK_L = 50.0
IDLE_L_PER_H = 0.7
REFUEL_MIN_PCT, REFUEL_MAX_PCT = 6.0, 15.0
FAULT_RATE_PER_S = 1 / 30000  # a new DTC about every eight hours of driving
FAULT_MIN_S, FAULT_MAX_S = 120.0, 1800.0
DTC_CODES: tuple[str, ...] = (
    "P0300", "P0301", "P0171", "P0420", "P0128", "P0442", "P0455", "P0101", "P0113",
    "P0500", "P0562", "C0035", "U0100",
)


@dataclass(frozen=True)
class Drivers:
    """Per-vehicle driver traits."""

    kind: np.ndarray  # CAUTIOUS / NORMAL / SPEEDER
    factor: np.ndarray  # target speed / limit
    accel: np.ndarray  # scale of A_MAX
    up_rpm: np.ndarray
    down_rpm: np.ndarray


def draw_drivers(u: np.ndarray, sport_mode: bool) -> Drivers:
    """Driver traits from uniform draws ``u`` of shape (n, 3)."""
    kind = np.searchsorted(np.cumsum(DRIVER_SHARES), u[:, 0], side="right").clip(0, 2)
    lo = np.array([0.82, 0.95, 1.10])[kind]
    hi = np.array([0.95, 1.04, 1.28])[kind]
    factor = lo + (hi - lo) * u[:, 1]
    accel = np.array([0.6, 0.85, 1.1])[kind] + np.array([0.2, 0.25, 0.3])[kind] * u[:, 2]
    base_up = SPORT_UPSHIFT_RPM if sport_mode else UPSHIFT_RPM
    base_down = SPORT_DOWNSHIFT_RPM if sport_mode else DOWNSHIFT_RPM
    up = base_up + np.array([-400.0, 0.0, 600.0])[kind]
    down = np.full(kind.size, base_down)
    return Drivers(kind=kind.astype(np.int8), factor=factor, accel=accel, up_rpm=up,
                   down_rpm=down)


def select_gear(kmh: np.ndarray, gear: np.ndarray, up_rpm: np.ndarray,
                down_rpm: np.ndarray) -> np.ndarray:
    """Next gear: neutral when stopped, shift up above ``up_rpm``, down below ``down_rpm``."""
    stopped = kmh < 0.5
    g = np.where(gear == 0, 1, gear)
    rpm_all = kmh[:, None] * GEAR_RPM_PER_KMH[None, 1:]  # (n, 6), falling with the gear
    fit_up = np.minimum(1 + (rpm_all > up_rpm[:, None]).sum(axis=1), 6)
    fit_down = np.maximum((rpm_all >= down_rpm[:, None]).sum(axis=1), 1)
    rpm_now = kmh * GEAR_RPM_PER_KMH[g]
    g = np.where((rpm_now > up_rpm) & (g < 6), np.maximum(fit_up, g), g)
    g = np.where((rpm_now < down_rpm) & (g > 1), np.minimum(fit_down, g), g)
    return np.where(stopped, 0, g).astype(np.int8)


def engine_rpm(kmh: np.ndarray, gear: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """RPM from gear and speed (idle in neutral), plus bounded noise in [-1, 1] * RPM_NOISE."""
    base = np.where(gear == 0, float(IDLE_RPM),
                    np.maximum(kmh * GEAR_RPM_PER_KMH[gear], float(MIN_IN_GEAR_RPM)))
    return np.rint(base + noise * RPM_NOISE).astype(np.int32)


def max_accel(v_ms: np.ndarray, gear: np.ndarray, accel: np.ndarray,
              sprint: np.ndarray) -> np.ndarray:
    """Acceleration available now (m/s^2): less in high gears and near top speed."""
    top = TOP_SPEED_KMH / 3.6
    return np.asarray(A_MAX * accel * GEAR_ACCEL[np.maximum(gear, 1)]
                      * np.where(sprint, 1.5, 1.0) * np.clip(1 - (v_ms / top) ** 2, 0.0, 1.0))


def fuel_used_pct(v0: np.ndarray, v1: np.ndarray, dist_m: np.ndarray, dt: float,
                  vclass: np.ndarray | None = None) -> np.ndarray:
    """Share of the tank burnt over one step: speed-dependent per km, plus idling."""
    kmh = 0.5 * (v0 + v1) * 3.6
    accel = np.maximum(v1 - v0, 0.0) / dt
    l_per_100km = 4.8 + 0.0007 * (kmh - 65.0) ** 2 + 2.5 * accel
    litres = l_per_100km * dist_m / 100_000.0 + np.where(v1 < 0.3, IDLE_L_PER_H * dt / 3600, 0.0)
    if vclass is None:
        return np.asarray(litres / TANK_L * 100.0)
    return np.asarray(litres * CLASS_FUEL[vclass] / CLASS_TANK_L[vclass] * 100.0)
