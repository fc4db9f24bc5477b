"""``python -m producer --stdout``: JSON lines on a simulated clock, byte-identical runs."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from common.contract import EVENT_FIELDS, read_event

ROOT = Path(__file__).resolve().parent.parent
DESIGN_ARGS = ["--stdout", "--seed", "42", "--vehicles", "20", "--rate-hz", "1", "--steps",
               "900", "--start-time", "2026-01-01T08:00:00+00:00"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "producer", *args], cwd=ROOT,
                          capture_output=True, timeout=120, check=False, env=env)


def test_same_arguments_give_byte_identical_output() -> None:
    a, b = _run(*DESIGN_ARGS), _run(*DESIGN_ARGS)
    assert a.returncode == 0, a.stderr.decode()
    assert a.stdout == b.stdout
    lines = a.stdout.splitlines()
    # driving cars report every tick, parked ones (ignition off) once a minute
    assert 20 * 900 // 60 < len(lines) < 20 * 900
    seqs: dict[str, list[int]] = defaultdict(list)
    stamps: dict[str, list[datetime]] = defaultdict(list)
    start = datetime.fromisoformat("2026-01-01T08:00:00+00:00")
    ignition = set()
    for i, line in enumerate(lines):
        doc = orjson.loads(line)
        assert list(doc) == list(EVENT_FIELDS)
        seqs[doc["vehicle_id"]].append(doc["seq"])
        ts = datetime.fromisoformat(doc["timestamp"])
        assert start <= ts < start + timedelta(seconds=900)
        stamps[doc["vehicle_id"]].append(ts)
        ignition.add(doc["ignition"])
        if i % 997 == 0:
            ev = read_event(line)
            assert ev.timestamp == ts
    assert sorted(seqs) == [f"TESTCAR{i:02d}" for i in range(1, 21)]
    assert all(s == list(range(len(s))) for s in seqs.values())
    assert ignition == {True, False}
    for t in stamps.values():  # each car on its own fixed phase of the second
        assert all(b > a for a, b in zip(t, t[1:], strict=False))
        assert len({(x - start).microseconds for x in t}) == 1
    counts = orjson.loads(a.stderr.strip().splitlines()[-1])  # the simulator's own count
    assert counts["light_crossings"] > 20 and counts["red_crossings"] == 0
    other = _run(*DESIGN_ARGS[:2], "43", *DESIGN_ARGS[3:])
    assert other.stdout != a.stdout and len(other.stdout.splitlines()) > 300


def test_env_vars_and_flags_configure_the_run() -> None:
    env = {"PATH": "/usr/bin:/bin", "VEHICLE_ID": "VAN7", "FLEET_SIZE": "3", "SIM_SEED": "5",
           "SIM_RATE_HZ": "4", "SPEED_TOLERANCE_KMH": "0", "SIM_TRIPS": "false",
           "SIM_PHASE_JITTER": "false"}
    proc = _run("--stdout", "--steps", "3", env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    docs = [orjson.loads(x) for x in proc.stdout.splitlines()]
    assert [d["vehicle_id"] for d in docs[:3]] == ["VAN7", "VAN8", "VAN9"]
    assert docs[3]["timestamp"] == "2026-01-01T00:00:00.250000+00:00"
    assert all(d["speeding"] == (d["speed_kmh"] > d["speed_limit_kmh"]) for d in docs)
    flag = _run("--stdout", "--steps", "1", "--vehicles", "2", env=env)
    assert len(flag.stdout.splitlines()) == 2  # flags win over the environment


def test_bad_settings_name_the_variable() -> None:
    proc = _run("--stdout", "--rate-hz", "0")
    assert proc.returncode == 2 and b"SIM_RATE_HZ" in proc.stderr
    proc = _run("--stdout", "--start-time", "2026-01-01T08:00:00")
    assert proc.returncode == 2 and b"UTC offset" in proc.stderr
