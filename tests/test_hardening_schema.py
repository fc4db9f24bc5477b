"""Issue 9, item 10: schemathesis fuzzes the web API through the OpenAPI document it serves.

The real service (``python -m webapi``) runs in a subprocess on a free port against the
session's real broker, with a topic holding a few events, so the telemetry answers are not
empty. Every schemathesis check runs (``--checks all``: no 5xx, status codes, content types
and bodies as documented, invalid input refused, ...) with a bounded example count and a
fixed seed, so the run is reproducible and takes well under a minute.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import stop_process
from tests.support.webapi import ROOT, fleet_events, publish
from tools.kafka import create_topic, free_port

pytestmark = pytest.mark.kafka

MAX_EXAMPLES = 60


@pytest.fixture(scope="module")
def api_url(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    topic = f"schema-{uuid.uuid4().hex[:12]}"
    create_topic(kafka_bootstrap, topic, 3)
    asyncio.run(publish(kafka_bootstrap, topic, fleet_events(3, 5)))
    port = free_port()
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "KAFKA_TOPIC": topic,
           "KAFKA_CONTROL_TOPIC": f"{topic}-control", "KAFKA_STATUS_TOPIC": f"{topic}-status",
           "WEBAPI_PORT": str(port), "WEBAPI_CONTROL_TIMEOUT_S": "0.05",
           "ANALYTICS_OUTPUT_DIR": str(tmp_path_factory.mktemp("analytics")),
           "WEBAPI_MAP_TILE_URL": "", "FLEETSTREAM_API_TOKEN": ""}
    log = tmp_path_factory.mktemp("webapi") / "webapi.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "webapi"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/stats", timeout=2) as resp:
                    if b'"consumed_total":15' in resp.read():
                        break
            except OSError:
                pass
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield url
    finally:
        stop_process(proc)
    text = log.read_text()
    assert "Traceback" not in text, text[-5000:]


CONTROL = ("--include-path", "/start-sim", "--include-path", "/stop-sim",
           "--include-path", "/status")
DEFINITIONS = ("--include-path", "/geofences", "--include-path", "/alert-rules",
               "--include-path", "/webhooks")
DEFINITIONS_EXCLUDED = ("--exclude-path", "/geofences", "--exclude-path", "/alert-rules",
                        "--exclude-path", "/webhooks")


@pytest.mark.parametrize("selection", [
    # every operation but the producer's and the WebSockets (their 101 handshakes are tested
    # in test_hardening_http.py, test_webapi_ws.py and test_webapi_replay.py), every check
    ("--exclude-path", "/start-sim", "--exclude-path", "/stop-sim", "--exclude-path", "/status",
     "--exclude-path", "/ws", "--exclude-path", "/replay", "--exclude-path", "/ws/events",
     *DEFINITIONS_EXCLUDED),
    # geofence, rule and webhook bodies: JSON Schema cannot say "a closed ring", "printable"
    # or "resolves to a public address", so a schema-valid body may still get its
    # documented 422; every other check runs
    (*DEFINITIONS, "--exclude-checks", "positive_data_acceptance"),
    # the producer's: none runs here, so their documented answer is 503 ("no producer
    # answered", "no producer status"); every other check still runs on them
    (*CONTROL, "--exclude-checks", "not_a_server_error"),
], ids=["reads", "controls", "definitions"])
def test_schemathesis_all_checks_pass(api_url: str, tmp_path: Path, selection) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", f"{api_url}/openapi.json",
         "--checks", "all", "--max-examples", str(MAX_EXAMPLES),
         "--seed", "20261129", "--workers", "1", "--request-timeout", "10",
         "--max-failures", "20", "--generation-database", "none",
         "--warnings", "off", "--output-truncate", "true", *selection],
        cwd=tmp_path, capture_output=True, timeout=240, check=False,
        env={**os.environ, "NO_COLOR": "1"})
    out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    (tmp_path / "schemathesis.log").write_text(out)
    assert proc.returncode == 0, out[out.find("FAILURES"):][:20000] or out[-12000:]
    assert "No issues found" in out, out[-3000:]
