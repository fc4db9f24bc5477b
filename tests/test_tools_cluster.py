"""tools.cluster without a cluster: is one already running from this folder, and does
`run` (make run-cluster) use such a cluster as it is and leave it running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.cluster import Cluster, KafkaCluster, SparkStandalone, _run_foreground


def _cluster(base: Path) -> Cluster:
    return Cluster(KafkaCluster(base, [1, 2, 3], [4, 5, 6]), SparkStandalone(base, workers=2))


@pytest.fixture
def fakes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes whose command lines carry the markers of a broker or a Spark daemon."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def _fake(procs: list[subprocess.Popen[bytes]], marker: str) -> int:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    procs.append(p)
    # until the child has exec'd, /proc shows the parent's command line
    deadline = time.monotonic() + 30
    while marker.encode() not in Path(f"/proc/{p.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline, "the fake process did not start"
        time.sleep(0.01)
    return p.pid


def _write_pids(cluster: Cluster, kafka: list[int], spark: dict[str, int]) -> None:
    for node, pid in zip(cluster.kafka.nodes, kafka, strict=True):
        node.pid_file.parent.mkdir(parents=True, exist_ok=True)
        node.pid_file.write_text(str(pid))
    assert cluster.spark is not None
    cluster.spark.pid_file.parent.mkdir(parents=True, exist_ok=True)
    cluster.spark.pid_file.write_text("".join(f"{k} {v}\n" for k, v in spark.items()))


def test_running_needs_every_process_alive_and_of_its_kind(tmp_path: Path, fakes) -> None:
    cluster = _cluster(tmp_path)
    assert not cluster.running()  # nothing started here
    kafka = [_fake(fakes, "kafka.Kafka") for _ in range(3)]
    spark = {name: _fake(fakes, "org.apache.spark.deploy.x")
             for name in ("spark-master", "spark-worker-1", "spark-worker-2")}
    _write_pids(cluster, kafka, spark)
    assert cluster.running()
    # a recycled pid (a process of another kind) is not a broker
    _write_pids(cluster, [kafka[0], kafka[1], os.getpid()], spark)
    assert not cluster.running()
    # a worker short
    _write_pids(cluster, kafka, {k: v for k, v in spark.items() if k != "spark-worker-2"})
    assert not cluster.running()
    # damaged pid files name no process
    _write_pids(cluster, kafka, spark)
    assert cluster.spark is not None
    cluster.spark.pid_file.write_text("garbage\nspark-master x\n")
    cluster.kafka.nodes[0].pid_file.write_text("not a pid")
    assert not cluster.running() and "kafka-1" not in cluster.pids()
    # a broker that died
    _write_pids(cluster, kafka, spark)
    fakes[0].kill()
    fakes[0].wait()
    assert not cluster.running()


class _Running:
    """A cluster that is up already: `run` must neither start nor stop it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def running(self) -> bool:
        return True

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def describe(self) -> str:
        return "described"

    def footprint(self) -> dict[str, int]:
        return {}


class _Stopped(_Running):
    def running(self) -> bool:
        return False


@pytest.mark.parametrize(("cluster", "calls"), [(_Running, []), (_Stopped, ["start", "stop"])])
def test_run_uses_a_running_cluster_and_leaves_it_running(cluster: type[_Running],
                                                          calls: list[str], capsys) -> None:
    fake = cluster()
    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert _run_foreground(fake, stop_delay=0.0, report_s=0.1) == 0  # type: ignore[arg-type]
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])
    assert fake.calls == calls
    assert "described" in capsys.readouterr().out
