"""README's first command, `make run`, brings up the whole stack and cars move.

Runs the real thing (honcho, the Procfile, a fresh local broker, the producer, the web API
and Streamlit) on free ports in a temporary folder, then stops it with Ctrl-C as a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tools.kafka import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.kafka


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 (loopback only)
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _wait_for(check, timeout: float, what: str, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"make run exited ({proc.returncode}) before {what}:\n"
                        f"{log.read_text()[-4000:]}")
        result = check()
        if result:
            return result
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


def test_make_run_starts_every_process_and_cars_move(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    api, ui = free_port(), free_port()
    env.update(
        KAFKA_PORT=str(free_port()), KAFKA_CONTROLLER_PORT=str(free_port()),
        KAFKA_DATA_DIR=str(tmp_path / "kafka"), WEBAPI_PORT=str(api), UI_PORT=str(ui),
        FLEET_SIZE="5", SIM_RATE_HZ="2", ANALYTICS_OUTPUT_DIR=str(tmp_path / "analytics"),
        KAFKA_HEAP="384m",
    )
    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{api}"
    try:
        _wait_for(lambda: _get(f"{base}/health")[0] == 200, 180, "the web API", proc, log)

        def five_cars() -> list | None:
            status, body = _get(f"{base}/telemetry/latest")
            items = json.loads(body)["items"] if status == 200 else []
            return items if len(items) == 5 else None

        items = _wait_for(five_cars, 120, "five vehicles reporting", proc, log)
        assert {e["vehicle_id"] for e in items} == {f"TESTCAR0{i}" for i in range(1, 6)}

        def running() -> dict | None:
            status, body = _get(f"{base}/status")
            return json.loads(body) if status == 200 and json.loads(body)["running"] else None

        assert _wait_for(running, 30, "the producer's status", proc, log)["vehicles"] == 5
        _wait_for(lambda: _get(f"http://127.0.0.1:{ui}/_stcore/health")[1] == b"ok", 60,
                  "the Streamlit app", proc, log)
        status, page = _get(f"{base}/dashboard")
        assert status == 200 and b"FleetStream" in page
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = log.read_text()
    assert "Traceback" not in text, text[-4000:]
    # The broker went down with the stack: nothing left holding the port.
    assert _get(f"{base}/health")[0] == 0
