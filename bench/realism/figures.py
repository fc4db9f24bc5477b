"""The real-world figures the report compares with, and where each comes from."""

from __future__ import annotations

REAL: dict[str, tuple[str, str]] = {
    "stopped": (
        "20-35 %",
        "standstill share of urban drive cycles built from measured traffic: about 26 % in "
        "WLTC's Low phase (UNECE GTR 15), about 28 % in CADC/Artemis Urban (Andre 2004), about "
        "19 % in US EPA's UDDS and about 35 % in its New York City Cycle; FHWA's urban "
        "congestion reports show the same order of delay in city traffic"),
    "hard_brakes": (
        "< 5 /100 km",
        "-4 m/s^2 (about 0.4 g) is the harsh-braking threshold usage-based-insurance and fleet "
        "telematics programmes commonly use (0.3-0.45 g); the rate target is issue 10's: "
        "ordinary drivers trigger such events a few times per 100 km at most"),
    "red": (
        "~0 (<= 0.5 % of crossings)",
        "red-light running seen at camera-monitored urban junctions (IIHS/FHWA studies) is a "
        "few violations per thousand crossings; a law-abiding simulated driver should be ~0"),
    "amber": (
        "some",
        "entering on amber is legal when stopping is not safe (Vienna Convention art. 23); "
        "shown for information"),
    "wrong_way": ("0", "driving against a one-way is illegal; OSM's oneway/junction tags"),
    "overlap": ("0", "two vehicles cannot occupy the same 3 m of road"),
    "fuel": (
        "6-9 L/100 km",
        "real-world urban consumption of petrol cars: ICCT 'From laboratory to road' (2019) "
        "finds real-world use about 40 % above type approval (5-6 L/100 km combined), EEA's "
        "OBFCM monitoring of on-board fuel meters (2021-2022 cars) about 6-8 L/100 km; urban "
        "driving sits at the high end"),
    "refuel_speed": ("0 km/h (parked)", "fuel is pumped into a parked car"),
    "refuel_duration": (
        "minutes (>= 60 s)",
        "pumps deliver at most about 38 L/min (US EPA 10 gal/min limit, EU pumps similar), "
        "so a 30-45 L fill plus parking and paying takes a few minutes"),
    "highway_time": (
        "small (<= 15 %)",
        "issue 10: a city fleet spends a small share of its time on motorways"),
}
