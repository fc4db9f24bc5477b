"""A cluster on one machine: 3 Kafka brokers and a Spark standalone master with 2 workers.

Kafka: three KRaft nodes, each broker and controller at once (``tools.kafka.LocalKafka``
with a node id and the shared voter list), on 127.0.0.1, from the same Maven jars. Every
topic gets replication factor 3 and ``min.insync.replicas=2``, the internal topics
(consumer offsets, transactions) too: one node may be down and ``acks=all`` writes go on.
Spark: the master and workers of pyspark's own distribution (``bin/spark-class``), bound to
127.0.0.1. Data and logs under ``.cache/cluster``. Memory, per process (about 2.5 GiB in
all when idle): each broker ``-Xmx384m``, the Spark master and worker daemons ``-Xmx256m``,
each worker offers 1 core and 1 GiB to executors.

    python -m tools.cluster start     # in the background; waits, prints addresses and RSS
    python -m tools.cluster status    # each process, its RSS (with children), the total
    python -m tools.cluster stop
    python -m tools.cluster run       # foreground (Procfile.cluster): stops on SIGTERM/SIGINT
    python -m tools.cluster wait      # until the brokers and the Spark master answer
    python -m tools.cluster leaders TOPIC   # partitions led by each broker
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.paths import CACHE
from tools.kafka import KafkaError, LocalKafka, _cluster_id, fetch, free_port

DEFAULT_DIR = CACHE / "cluster"
HOST = "127.0.0.1"


def _ports(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p.strip()]


def env_ports(name: str, default: Sequence[int]) -> list[int]:
    return _ports(os.environ.get(name, ",".join(map(str, default))))


# ---- memory -----------------------------------------------------------------------------

def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return kids


def rss_bytes(pid: int, kids: dict[int, list[int]] | None = None) -> int:
    """Resident memory of ``pid`` and all its descendants (a worker's executors count)."""
    kids = _children() if kids is None else kids
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        todo.extend(kids.get(p, []))
    return total


def mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


# ---- Kafka --------------------------------------------------------------------------------

@dataclass
class KafkaCluster:
    """Three (or ``len(ports)``) combined KRaft nodes sharing one cluster id."""

    base: Path = DEFAULT_DIR
    ports: Sequence[int] = (29092, 29093, 29094)
    controller_ports: Sequence[int] = (29192, 29193, 29194)
    heap: str = "384m"
    nodes: list[LocalKafka] = field(default_factory=list)

    @classmethod
    def on_free_ports(cls, base: Path, size: int = 3, heap: str = "384m") -> KafkaCluster:
        return cls(base, [free_port() for _ in range(size)],
                   [free_port() for _ in range(size)], heap)

    def __post_init__(self) -> None:
        if len(self.ports) != len(self.controller_ports):
            raise KafkaError("as many controller ports as broker ports, please")
        self.base.mkdir(parents=True, exist_ok=True)
        id_file = self.base / "kafka-cluster.id"
        if not id_file.exists():
            id_file.write_text(_cluster_id())
        cluster_id = id_file.read_text().strip()
        voters = ",".join(f"{i}@{HOST}:{cp}"
                          for i, cp in enumerate(self.controller_ports, start=1))
        self.nodes = [
            LocalKafka(data_dir=self.base / f"kafka-{i}", port=p, controller_port=cp,
                       heap=self.heap, node_id=i, voters=voters, cluster_id=cluster_id,
                       replication=min(3, len(self.ports)))
            for i, (p, cp) in enumerate(zip(self.ports, self.controller_ports, strict=True),
                                        start=1)]

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    def node(self, node_id: int) -> LocalKafka:
        return self.nodes[node_id - 1]

    def start(self, timeout: float = 120.0) -> None:
        """Start every node (they need each other for a quorum), then wait for all of them."""
        fetch()
        for n in self.nodes:
            n.start()
        for n in self.nodes:
            n.wait_ready(timeout)
        asyncio.run(self.wait_brokers(len(self.nodes), timeout))

    def stop(self) -> None:
        """All nodes at once (a controlled shutdown each), so the quorum goes down together."""
        threads = [threading.Thread(target=n.stop) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def restart(self, node_id: int, timeout: float = 120.0) -> None:
        node = self.node(node_id)
        node.start()
        node.wait_ready(timeout)

    async def wait_brokers(self, count: int, timeout: float = 120.0) -> None:
        """Until ``count`` brokers are registered with the quorum."""
        from common.kafka import make_admin

        deadline = time.monotonic() + timeout
        while True:
            admin = make_admin(self.bootstrap, request_timeout_ms=5000)
            try:
                await admin.start()
                brokers = (await admin.describe_cluster())["brokers"]
                if len(brokers) >= count:
                    return
            except Exception:  # noqa: S110 (a node still starting; polled until the deadline)
                pass
            finally:
                await admin.close()
            if time.monotonic() > deadline:
                raise KafkaError(f"fewer than {count} brokers at {self.bootstrap} "
                                 f"after {timeout:.0f}s")
            await asyncio.sleep(0.5)

    async def leaders(self, topic: str) -> dict[int, list[int]]:
        """Broker id -> the partitions of ``topic`` it leads (-1: partitions without one)."""
        return await partition_leaders(self.bootstrap, topic)

    def pids(self) -> dict[str, int]:
        out = {}
        for n in self.nodes:
            with contextlib.suppress(OSError, ValueError):
                out[f"kafka-{n.node_id}"] = int(n.pid_file.read_text().strip())
        return out


async def partition_leaders(bootstrap: str, topic: str) -> dict[int, list[int]]:
    from common.kafka import make_admin

    admin = make_admin(bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:  # listed first: describing a missing topic would let the broker auto-create it
        described = (await admin.describe_topics([topic])
                     if topic in await admin.list_topics() else [])
    finally:
        await admin.close()
    out: dict[int, list[int]] = {}
    for t in described:
        for p in t["partitions"]:
            out.setdefault(p["leader"], []).append(p["partition"])
    return out


# ---- Spark standalone ---------------------------------------------------------------------

def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


@dataclass
class SparkStandalone:
    """A master and ``workers`` workers from pyspark's distribution, on 127.0.0.1."""

    base: Path = DEFAULT_DIR
    port: int = 7077
    ui_port: int = 8080
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "1g"
    daemon_heap: str = "256m"
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    @property
    def master_url(self) -> str:
        return f"spark://{HOST}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.base / "spark" / "pids"

    def env(self) -> dict[str, str]:
        tmp = self.base / "spark" / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": HOST,
                "SPARK_DAEMON_MEMORY": self.daemon_heap, "SPARK_LOCAL_DIRS": str(tmp),
                "SPARK_DAEMON_JAVA_OPTS": f"-Djava.io.tmpdir={tmp}",
                "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)}

    def commands(self) -> dict[str, list[str]]:
        spark_class = str(spark_home() / "bin" / "spark-class")
        cmds = {"spark-master": [spark_class, "org.apache.spark.deploy.master.Master",
                                 "--host", HOST, "--port", str(self.port),
                                 "--webui-port", str(self.ui_port)]}
        for i in range(1, self.workers + 1):
            work = self.base / "spark" / f"worker-{i}"
            work.mkdir(parents=True, exist_ok=True)
            cmds[f"spark-worker-{i}"] = [
                spark_class, "org.apache.spark.deploy.worker.Worker", "--host", HOST,
                "--cores", str(self.worker_cores), "--memory", self.worker_memory,
                "--work-dir", str(work), "--webui-port", str(free_port()), self.master_url]
        return cmds

    def start(self, timeout: float = 120.0) -> None:
        self.stop()
        env = self.env()
        logs = self.base / "spark" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for name, cmd in self.commands().items():
            with (logs / f"{name}.log").open("ab") as log:
                self.procs[name] = subprocess.Popen(  # noqa: S603 (pyspark's own launcher)
                    cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True)
            if name == "spark-master":
                _wait_port(self.port, timeout, self.procs[name], logs / f"{name}.log")
        self.pid_file.write_text("".join(f"{n} {p.pid}\n" for n, p in self.procs.items()))
        self.wait_workers(timeout)

    def alive_workers(self) -> int:
        import json
        import urllib.request

        url = f"http://{HOST}:{self.ui_port}/json/"
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 (loopback)
            doc = json.load(resp)
        return sum(1 for w in doc.get("workers", []) if w.get("state") == "ALIVE")

    def wait_workers(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError):
                if self.alive_workers() >= self.workers:
                    return
            if time.monotonic() > deadline:
                raise KafkaError(f"Spark master {self.master_url}: fewer than {self.workers} "
                                 f"workers after {timeout:.0f}s; see {self.base}/spark/logs")
            time.sleep(0.5)

    def pids(self) -> dict[str, int]:
        out = {}
        with contextlib.suppress(OSError):
            for line in self.pid_file.read_text().splitlines():
                with contextlib.suppress(ValueError):  # a damaged line names no process
                    name, pid = line.split()
                    out[name] = int(pid)
        return out

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM each process started from this folder (workers first), then SIGKILL."""
        threads = [threading.Thread(target=_terminate, args=(pid, b"org.apache.spark.deploy",
                                                             timeout))
                   for pid in self.pids().values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1)
        self.procs.clear()
        self.pid_file.unlink(missing_ok=True)


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise KafkaError(f"exited with {proc.returncode}; see {log}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.3)
    raise KafkaError(f"nothing listens on {HOST}:{port} after {timeout:.0f}s; see {log}")


def _alive(pid: int, marker: bytes) -> bool:
    """``pid`` runs and its command line holds ``marker`` (not a recycled pid)."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _terminate(pid: int, marker: bytes, timeout: float) -> None:
    """SIGTERM ``pid`` if its command line holds ``marker`` (not a recycled pid), wait, kill."""
    try:
        if marker not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return
        os.kill(pid, signal.SIGTERM)
    except (OSError, ProcessLookupError):
        return
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# ---- both ---------------------------------------------------------------------------------

@dataclass
class Cluster:
    kafka: KafkaCluster
    spark: SparkStandalone | None

    def start(self) -> None:
        self.kafka.start()
        if self.spark is not None:
            self.spark.start()

    def stop(self) -> None:
        spark = threading.Thread(target=self.spark.stop) if self.spark is not None else None
        if spark is not None:
            spark.start()
        self.kafka.stop()
        if spark is not None:
            spark.join()

    def pids(self) -> dict[str, int]:
        return {**self.kafka.pids(), **(self.spark.pids() if self.spark else {})}

    def running(self) -> bool:
        """Every process of this cluster is up (started earlier from the same folder, e.g. by
        `make cluster`): each pid file names a live process of the right kind."""
        want = [(f"kafka-{n.node_id}", b"kafka.Kafka") for n in self.kafka.nodes]
        if self.spark is not None:
            spark = self.spark.pids()
            if len(spark) != 1 + self.spark.workers:
                return False
            want += [(name, b"org.apache.spark.deploy") for name in spark]
        pids = self.pids()
        return all(name in pids and _alive(pids[name], marker) for name, marker in want)

    def footprint(self) -> dict[str, int]:
        """RSS per process (with its children: a worker's executors), alive ones only."""
        kids = _children()
        return {name: rss_bytes(pid, kids) for name, pid in self.pids().items()
                if Path(f"/proc/{pid}").exists()}

    def describe(self) -> str:
        rss = self.footprint()
        lines = [f"kafka   {self.kafka.bootstrap}  (replication 3, min.insync.replicas 2)"]
        if self.spark is not None:
            lines.append(f"spark   {self.spark.master_url}  (UI http://{HOST}:{self.spark.ui_port})")
        for name, pid in self.pids().items():
            state = mib(rss[name]) if name in rss else "not running"
            lines.append(f"  {name:<15} pid {pid:<8} {state}")
        if not rss:
            lines.append("  (not running: make cluster starts it)")
        lines.append(f"  total RSS       {mib(sum(rss.values()))}")
        return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m tools.cluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(env.get("CLUSTER_DIR", DEFAULT_DIR)),
                        help="data and logs (env CLUSTER_DIR; default .cache/cluster)")
    parser.add_argument("--kafka-ports", type=_ports,
                        default=env_ports("CLUSTER_KAFKA_PORTS", KafkaCluster.ports),
                        help="client ports (env CLUSTER_KAFKA_PORTS)")
    parser.add_argument("--controller-ports", type=_ports,
                        default=env_ports("CLUSTER_CONTROLLER_PORTS",
                                          KafkaCluster.controller_ports),
                        help="KRaft controller ports (env CLUSTER_CONTROLLER_PORTS)")
    parser.add_argument("--heap", default=env.get("CLUSTER_KAFKA_HEAP", "384m"),
                        help="each broker's -Xmx (env CLUSTER_KAFKA_HEAP)")
    parser.add_argument("--spark-port", type=int,
                        default=int(env.get("CLUSTER_SPARK_PORT", "7077")),
                        help="Spark master port (env CLUSTER_SPARK_PORT)")
    parser.add_argument("--spark-ui-port", type=int,
                        default=int(env.get("CLUSTER_SPARK_UI_PORT", "8080")),
                        help="Spark master web UI (env CLUSTER_SPARK_UI_PORT)")
    parser.add_argument("--workers", type=int, default=int(env.get("CLUSTER_SPARK_WORKERS", "2")),
                        help="Spark workers (env CLUSTER_SPARK_WORKERS; 0: no Spark)")
    parser.add_argument("--worker-memory", default=env.get("CLUSTER_SPARK_WORKER_MEMORY", "1g"),
                        help="memory each worker offers executors "
                             "(env CLUSTER_SPARK_WORKER_MEMORY)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for verb, text in (("start", "start in the background, wait, print status"),
                       ("stop", "stop what was started from --dir"),
                       ("status", "each process and its RSS"),
                       ("run", "start, then stay in the foreground until SIGTERM/SIGINT"),
                       ("wait", "until the brokers and the Spark master answer")):
        sub.add_parser(verb, help=text)
    lead = sub.add_parser("leaders", help="partitions of a topic led by each broker")
    lead.add_argument("topic")
    args = parser.parse_args(argv)

    kafka = KafkaCluster(args.dir, args.kafka_ports, args.controller_ports, args.heap)
    spark = (SparkStandalone(args.dir, args.spark_port, args.spark_ui_port, args.workers,
                             worker_memory=args.worker_memory) if args.workers > 0 else None)
    cluster = Cluster(kafka, spark)
    try:
        if args.cmd == "start":
            if cluster.running():
                print("already running")
            else:
                cluster.start()
            print(cluster.describe())
        elif args.cmd == "stop":
            cluster.stop()
            print("cluster stopped")
        elif args.cmd == "status":
            print(cluster.describe())
        elif args.cmd == "wait":
            asyncio.run(kafka.wait_brokers(len(kafka.nodes)))
            if spark is not None:
                spark.wait_workers()
            print(f"cluster ready: {kafka.bootstrap}"
                  + (f", {spark.master_url}" if spark else ""))
        elif args.cmd == "leaders":
            for broker, parts in sorted(asyncio.run(kafka.leaders(args.topic)).items()):
                print(f"broker {broker}: {len(parts)} partitions {sorted(parts)}")
        elif args.cmd == "run":
            return _run_foreground(cluster)
    except KafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _run_foreground(cluster: Cluster, stop_delay: float = 1.5, report_s: float = 60.0) -> int:
    """For the supervisor: start, print the footprint, stop everything on SIGTERM/SIGINT
    after ``stop_delay`` s (so the producers' final flush still reaches the brokers). A
    cluster already running from the same folder (`make cluster`) is used as it is and left
    running: whoever started it stops it (`make cluster-stop`)."""
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        threading.Timer(stop_delay, stopping.set).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    owned = not cluster.running()
    try:
        if owned:
            cluster.start()
        else:
            print("the cluster is already running (make cluster): using it, and leaving it "
                  "running at the end (make cluster-stop stops it)", flush=True)
        print(cluster.describe(), flush=True)
        while not stopping.wait(report_s):
            print(f"total RSS {mib(sum(cluster.footprint().values()))}", flush=True)
    finally:
        if owned:
            cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
