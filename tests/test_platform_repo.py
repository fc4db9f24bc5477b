"""The repository keeps its promises: README commands, configuration table, compose file."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()



def _make_targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z0-9_-]+):", MAKEFILE, flags=re.M))


def test_readme_starts_with_the_two_commands() -> None:
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", README, flags=re.S)
    first = blocks[0].strip().splitlines()
    commands = [line.split("#")[0].strip() for line in first if line.split("#")[0].strip()]
    assert commands[:2] == ["make run", "make test"]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    lines = [x for x in ci.splitlines() if x.strip() and not x.startswith("#")]
    assert lines[-1] == "make test"


def test_every_make_command_in_the_readme_exists() -> None:
    mentioned = set(re.findall(r"\bmake ([a-z][a-z0-9-]*)", README))
    assert mentioned, "README names no make target"
    missing = mentioned - _make_targets()
    assert not missing, f"README mentions make targets that do not exist: {sorted(missing)}"


def test_make_help_lists_every_target() -> None:
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    listed = set(re.findall(r"^\s*(?:\x1b\[36m)?([a-z0-9-]+)", out, flags=re.M))
    phony = set(re.findall(r"^\.PHONY: (.+)$", MAKEFILE, flags=re.M))
    phony_targets = {t for line in phony for t in line.split()}
    assert phony_targets <= listed, f"targets without a ## help line: {phony_targets - listed}"


def test_readme_configuration_table_matches_the_settings_classes() -> None:
    """README's table is exactly what `make docs` generates from the settings classes."""
    from tools.config_table import readme_block, render, rows

    assert {"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPIC", "VEHICLE_ID", "SIM_SPORT_MODE",
            "SPEED_TOLERANCE_KMH", "REDLINE_RPM", "FLEET_SIZE", "SIM_RATE_HZ", "SIM_SEED",
            "SIM_AUTOSTART", "FLEETSTREAM_API_TOKEN", "FLEETSTREAM_API_URL"} <= set(rows())
    assert readme_block(README) == render(), "README's configuration table is stale: make docs"


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose is installed by `make test` (make test-deps)")
def test_compose_file_validates() -> None:
    proc = subprocess.run(["docker-compose", "-f", "compose.yml", "config", "-q"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_procfile_names_the_stack_s_processes() -> None:
    """DESIGN's four (kafka, producer, webapi, ui), then the events job that derives trips,
    geofence crossings and alerts for the web API's /trips and /events."""
    procs = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines()
                 if line.strip() and not line.lstrip().startswith("#"))
    assert list(procs) == ["kafka", "producer", "webapi", "ui", "events"]


def test_readme_example_event_is_what_the_producer_writes() -> None:
    """The JSON example in the README is real output of the --stdout command it shows."""
    import json
    import sys

    block = re.search(r"```json\n(.*?)```", README, flags=re.S)
    assert block, "README has no example event"
    example = json.loads(block.group(1))
    out = subprocess.run(
        [sys.executable, "-m", "producer", "--stdout", "--seed", "42", "--vehicles", "20",
         "--rate-hz", "1", "--steps", "2", "--start-time", "2026-01-01T08:00:00+00:00"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    assert json.loads(out[20]) == example


def _lock() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock: name -> (version, hashes)."""
    text = (ROOT / "requirements.lock").read_text()
    out = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", block)
        if m:
            out[m.group(1).lower().replace("_", "-")] = (
                m.group(2), re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return out


def test_every_dependency_is_locked_with_hashes() -> None:
    """`make lock` was run after the last change to pyproject's dependencies."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    locked = _lock()
    assert locked and all(hashes for _, hashes in locked.values())
    names = {re.match(r"[A-Za-z0-9_.-]+", w).group(0).lower().replace("_", "-")  # type: ignore[union-attr]
             for w in wanted}
    assert names <= set(locked), f"not in requirements.lock (make lock): {names - set(locked)}"
    assert "--find-links" not in (ROOT / "requirements.lock").read_text()


def test_the_venv_installs_from_the_lock_only() -> None:
    rule = re.search(r"^\$\(VENV\)/\.installed: (.*)\n((?:\t.*\n)+)", MAKEFILE, flags=re.M)
    assert rule and "$(LOCK)" in rule.group(1).split()
    assert "--require-hashes -r $(LOCK)" in rule.group(2)
    assert "--no-deps -e ." in rule.group(2)
    assert "lock" in _make_targets()
