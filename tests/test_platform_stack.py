"""README's first command, `make run`, brings up the whole stack and cars move.

Runs the real thing (tools.supervise, the Procfile, a fresh local broker, the producer, the
web API and Streamlit) on free ports in a temporary folder, kills the web API to see it come
back, then stops it with Ctrl-C as a user would. The supervisor's rules on small Procfiles of
shell one-liners: the tests at the end.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tools.kafka import free_port

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.mark.kafka
def test_make_run_starts_every_process_and_cars_move(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    api, ui = free_port(), free_port()
    env.update(
        KAFKA_PORT=str(free_port()), KAFKA_CONTROLLER_PORT=str(free_port()),
        KAFKA_DATA_DIR=str(tmp_path / "kafka"), WEBAPI_PORT=str(api), UI_PORT=str(ui),
        FLEET_SIZE="5", SIM_RATE_HZ="2", ANALYTICS_OUTPUT_DIR=str(tmp_path / "analytics"),
        ANALYTICS_EVENTS_CHECKPOINT_DIR=str(tmp_path / "events-checkpoint"),
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
        # this stack's Streamlit app reads this stack's API (issue 9: the second-stack recipe)
        assert f"(reads http://127.0.0.1:{api})" in log.read_text()

        # one process dying takes nothing else down: the web API is killed and comes back
        (pid,) = re.findall(r"webapi started \(pid (\d+)\)", log.read_text())
        os.killpg(int(pid), signal.SIGKILL)
        _wait_for(lambda: "webapi killed by SIGKILL" in log.read_text(), 30,
                  "the supervisor to report the web API's death", proc, log)
        _wait_for(lambda: _get(f"{base}/health")[0] == 200, 60, "the web API to come back",
                  proc, log)
        assert _wait_for(running, 30, "the producer's status via the new web API", proc, log)
        assert _get(f"http://127.0.0.1:{ui}/_stcore/health")[1] == b"ok"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(150)  # the supervisor's --stop-timeout is 120 s
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = log.read_text()
    # every process stopped on request, the broker last (make itself dies of the SIGINT)
    for name in ("producer", "webapi", "ui", "events", "kafka"):
        assert f"supervise | {name} exited with code 0" in text, text[-4000:]
    assert text.rindex("kafka exited with code 0") > text.rindex("producer exited with code 0")
    assert "Traceback" not in text, text[-4000:]
    # The broker went down with the stack: nothing left holding the port.
    assert _get(f"{base}/health")[0] == 0


def _supervise(tmp_path: Path, procfile: str, *args: str) -> subprocess.Popen[bytes]:
    (tmp_path / "Procfile").write_text(procfile)
    return subprocess.Popen([sys.executable, "-m", "tools.supervise", "-f",
                             str(tmp_path / "Procfile"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_a_crashing_process_is_restarted_and_named_then_given_up_on(tmp_path: Path) -> None:
    proc = _supervise(tmp_path, "steady: exec sleep 600\nflaky: echo 'flaky ran'; exit 3\n",
                      "--max-restarts", "2")
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 1, out
    assert len(re.findall(r"flaky +\| flaky ran", out)) == 3  # the first run, two restarts
    assert "flaky exited with code 3" in out and "restarting flaky in 1 s" in out
    assert "restarting flaky in 2 s" in out  # back-off doubles
    assert "exit 1: flaky failed 3 times in a row" in out
    assert "steady killed by SIGTERM" in out  # the others were stopped, not left running


def test_a_configuration_error_stops_the_stack_at_once(tmp_path: Path) -> None:
    proc = _supervise(tmp_path, "steady: exec sleep 600\nbad: echo 'invalid setting'; exit 2\n")
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 1, out
    assert "bad has a configuration error" in out and "restarting" not in out


def test_sigterm_stops_every_process_and_exits_0(tmp_path: Path) -> None:
    proc = _supervise(tmp_path, "a: exec sleep 600\nkafka: exec sleep 600\n")
    assert proc.stdout is not None
    seen = b""
    while seen.count(b"started (pid") < 2:
        seen += proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    out = seen.decode() + proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, out
    lines = out.splitlines()
    stopped = [i for i, line in enumerate(lines) if "killed by SIGTERM" in line]
    assert len(stopped) == 2 and "kafka" in lines[stopped[1]]  # the broker last


def test_stop_timeout_gives_a_slow_stopper_its_time_then_kills(tmp_path: Path) -> None:
    # "slow" needs 2 s after SIGTERM (a Spark job finishing its micro-batch); "stuck" never ends
    slow = ("slow: exec python3 -c \"import signal, sys, time; signal.signal(signal.SIGTERM, "
            "lambda *a: (time.sleep(2), sys.exit(0))); print('ready', flush=True); "
            "time.sleep(600)\"\n")
    for timeout, ended in (("5", "slow exited with code 0"), ("0.5", "slow ignored SIGTERM")):
        proc = _supervise(tmp_path, slow, "--stop-timeout", timeout)
        assert proc.stdout is not None
        seen = b""
        while b"| ready" not in seen:
            seen += proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        out = seen.decode() + proc.communicate(timeout=60)[0].decode()
        assert proc.returncode == 0, out
        assert ended in out, out
    bad = _supervise(tmp_path, slow, "--stop-timeout", "nan")
    out = bad.communicate(timeout=30)[0].decode()
    assert bad.returncode == 2 and "--stop-timeout must be in" in out, out
