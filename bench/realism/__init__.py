"""Realism report: does the simulated traffic pass for real traffic? (issue 10's table)

    .venv/bin/python -m bench.realism [--networks builtin,helsinki,kotka] [--vehicles 50]
        [--minutes 15] [--seed 42] [--runs 3] [--start-time ISO] [--long-hours 4]
        [--long-vehicles 20] [--producer-root DIR]

For each network it runs what a user runs, ``python -m producer --stdout --seed S --vehicles N
--rate-hz 1 --steps 60*M [--roads FILE]`` (a subprocess writing to a temp file, timed: the
throughput line is the events/s of the longest run less start-up, the fastest of three
one-step runs), then reads the
events back line by line into numpy columns (about 60 bytes per event; no JSON is kept) and
measures them against the network's geometry.
Networks: ``builtin`` (the schematic Warsaw) or a name from tools/osm.py's registry (its
GeoJSON is fetched on first use, like ``make osm-data``), or a path to a GeoJSON file.
With ``--runs R`` the seeds S..S+R-1 are run and every figure is the median over the runs.
Refuels are rare in minutes of driving, so the refuelling rows come from one extra run of
``--long-hours`` (default 4 h) with ``--long-vehicles`` (default 20).
``--producer-root`` runs (and imports the light phases of) the producer of another checkout,
e.g. a ``git worktree`` of an older commit, to print a baseline.

What each measure is, and where its real-world figure comes from (``REAL`` below):

- stopped: share of driving time (ignition on, when the event says) on urban roads with
  speed < 1 km/h, time-weighted by the interval to the car's next event;
- hard brakes: a car's speed falling faster than 4 m/s^2 between consecutive events <= 2 s
  apart; consecutive hard intervals are one event; per 100 km driven (distance = speeds
  integrated over time, not the odometer);
- light crossings: a car passing a light's stop line between two events (the line stands
  ``SETBACK_M`` before the light's node when the producer's fleet module defines it, else at
  the node); the light's state at the (interpolated) moment of crossing comes from the
  producer's own phase function (``RoadNetwork.light_state``, or ``red_for`` in older
  producers, which cannot tell amber from red); beside it, the simulator's own count when
  the producer logs one on stderr: a JSON object with ``red_crossings`` (and
  ``light_crossings``), e.g. ``{"light_crossings": 812, "red_crossings": 0}``;
- wrong way: moving samples (>= 1 km/h) matched to a way of the GeoJSON (nearest segment, its
  axis agreeing with the car's heading) that is one-way (``oneway=yes/1/true/-1``,
  ``junction=roundabout``) while the heading opposes the way's direction by more than 90 deg;
- overlap: moving samples with another car (parked ones excluded) within 3 m at the same tick,
  oncoming cars excepted (both directions of a road share its centreline in the producer);
- fuel: litres burnt on urban roads (drops of fuel_level_pct x the tank of the vehicle's class,
  rises excluded) per 100 km driven there, cars only when the event names the vehicle type;
- refuelling: runs of rising fuel_level_pct: the highest speed during each and its duration
  (from the last event before the rise to the last rising event);
- road classes: distance share per road_type, per OSM ``highway`` class of the matched way
  (OSM networks), and the share of driving time on highways.
"""

from bench.realism.events import (
    ROAD_CODES,
    VEHICLE_TYPES,
    Events,
    Projection,
    angle_diff,
    bearing,
    pairs,
    parse_events,
)
from bench.realism.figures import REAL
from bench.realism.matching import (
    Crossings,
    SegmentIndex,
    Ways,
    class_shares,
    edge_index,
    light_crossings,
    load_ways,
    oneway_of,
    way_index,
    way_of,
    wrong_way,
)
from bench.realism.measures import (
    Refuel,
    at_kerb,
    distance_m,
    fuel_use,
    hard_brakes,
    overlaps,
    refuels,
    road_shares,
    stopped_share,
)
from bench.realism.report import (
    DEFAULT_START,
    ROOT,
    Network,
    check,
    measure,
    render,
    report,
    resolve,
    run_producer,
    sim_counts,
)

__all__ = [
    "DEFAULT_START", "REAL", "ROAD_CODES", "ROOT", "VEHICLE_TYPES", "Crossings", "Events",
    "Network", "Projection", "Refuel", "SegmentIndex", "Ways", "angle_diff", "at_kerb",
    "bearing", "check",
    "class_shares", "distance_m", "edge_index", "fuel_use", "hard_brakes", "light_crossings",
    "load_ways", "measure", "oneway_of", "overlaps", "pairs", "parse_events", "refuels",
    "render", "report", "resolve", "road_shares", "run_producer", "sim_counts", "stopped_share",
    "way_index", "way_of", "wrong_way",
]
