"""The real-world figures the report compares with, and where each comes from."""

from __future__ import annotations

REAL: dict[str, tuple[str, str]] = {
    "stopped": (
        "20-35 %",
        "standstill share of urban driving cycles built from recorded city traffic, as "
        "commonly tabulated (not re-derived here): roughly a quarter of the time in WLTC's Low "
        "phase (UNECE GTR 15) and the CADC/Artemis Urban cycle (Andre 2004), about a fifth in "
        "US EPA's UDDS, about a third in its New York City Cycle"),
    "hard_brakes": (
        "< 5 /100 km",
        "-4 m/s^2 (about 0.4 g) is the harsh-braking threshold usage-based-insurance and fleet "
        "telematics programmes commonly use (0.3-0.45 g); the rate target is issue 10's: "
        "ordinary drivers trigger such events a few times per 100 km at most"),
    "red": (
        "~0 (<= 0.5 % of crossings)",
        "red-light running observed at urban junctions (IIHS/FHWA camera studies) is of the "
        "order of a few violations per thousand crossings; a law-abiding simulated driver "
        "should be ~0"),
    "amber": (
        "some",
        "entering on amber is legal when stopping is not safe (Vienna Convention on Road "
        "Signs and Signals, 1968, art. 23); shown for information"),
    "wrong_way": ("0", "driving against a one-way is illegal; OSM's oneway/junction tags"),
    "overlap": ("0", "two vehicles cannot occupy the same 3 m of road"),
    "fuel": (
        "6-9 L/100 km",
        "real-world consumption of ordinary petrol cars: ICCT's 'From laboratory to road' "
        "series and the EU's on-board fuel meter (OBFCM) data both find it well above type "
        "approval (roughly 25-40 %), about 6-8 L/100 km; urban driving sits at the high end"),
    "refuel_speed": ("0 km/h (parked)", "fuel is pumped into a parked car"),
    "refuel_duration": (
        "minutes (>= 60 s)",
        "pumps deliver at most about 38 L/min (the US EPA's 10 gal/min limit for car pumps), "
        "so a 30-45 L fill plus parking and paying takes a few minutes"),
    "highway_time": (
        "small (<= 15 %)",
        "issue 10: a city fleet spends a small share of its time on motorways"),
}
