"""`make bench-analytics` on a small backlog: it runs end to end and its rows agree.

The bench compiles its Java sources (``bench/jvm``) with javac, and checks as it goes that
every stage counted every record, that the byte parser's per-field counts equal from_json's,
and that the one-pass rows counted the job's records, malformed records and windows; any
disagreement is exit code 1. A small backlog, so no figure here means anything.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.webapi import ROOT

pytestmark = [pytest.mark.spark, pytest.mark.kafka]


def test_the_analytics_bench_runs_and_its_rows_agree(kafka_bootstrap: str) -> None:
    # 10 cars x 300 steps: long enough that windows close, so the job's windows are compared
    proc = subprocess.run(
        [sys.executable, "-m", "bench.analytics", "--events", "3000", "--vehicles", "10",
         "--reps", "1", "--warmup", "0", "--driver-memory", "768m",
         "--bootstrap", kafka_bootstrap],
        capture_output=True, text=True, cwd=ROOT, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert "3,000 events from python -m producer --stdout" in out, out
    rep = next(line for line in out.splitlines() if line.startswith("rep 1:"))
    windows = int(rep.split("; ")[1].split(" vehicle windows")[0].replace(",", ""))
    assert windows > 0 and " 1 malformed" in rep, rep
    for row in ("baseline (same connector", "Jackson's byte parser", "analytics job, once mode",
                "JVM one pass, exact merge", "JVM one pass, fuel summed per partition"):
        assert row in out, out
