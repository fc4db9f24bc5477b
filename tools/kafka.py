"""A real, single-node Apache Kafka broker (KRaft) managed by the project.

The broker's jars come from Maven Central (``tools/maven/kafka/pom.xml``) into
``.cache/kafka/libs``; it runs on the machine's Java 17, listens on 127.0.0.1 only and keeps
its data in a project-local folder. Used by ``make run`` (through the Procfile), by the test
suite's session fixture and by the benchmarks.

    python -m tools.kafka fetch                 # jars from Maven Central (idempotent)
    python -m tools.kafka start                 # foreground, until SIGTERM/SIGINT
    python -m tools.kafka wait                  # until the broker accepts clients
    python -m tools.kafka create-topic NAME --partitions 6
    python -m tools.kafka stop                  # stop the broker started from this folder
    python -m tools.kafka tool topics --list    # Kafka's own CLI tools, from the same jars
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.paths import CACHE, ROOT, SPARK_JARS

KAFKA_POM = ROOT / "tools" / "maven" / "kafka" / "pom.xml"
SPARK_POM = ROOT / "tools" / "maven" / "spark" / "pom.xml"
KAFKA_LIBS = CACHE / "kafka" / "libs"
LOG4J_CONFIG = ROOT / "tools" / "kafka-log4j2.properties"
DEFAULT_DATA_DIR = CACHE / "kafka" / "data"

# Kafka's own command-line tools, by the name of their shell script in the distribution.
TOOLS = {
    "topics": "org.apache.kafka.tools.TopicCommand",
    "console-consumer": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "console-producer": "org.apache.kafka.tools.ConsoleProducer",
    "producer-perf-test": "org.apache.kafka.tools.ProducerPerformance",
    "consumer-perf-test": "org.apache.kafka.tools.ConsumerPerformance",
    "consumer-groups": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
    "get-offsets": "org.apache.kafka.tools.GetOffsetShell",
    "storage": "kafka.tools.StorageTool",
}


class KafkaError(RuntimeError):
    """The local broker could not be fetched, started or reached."""


def _pom_stamp(pom: Path, out: Path) -> Path:
    return out / f".fetched-{int(pom.stat().st_mtime)}-{pom.stat().st_size}"


def fetch(pom: Path = KAFKA_POM, out: Path = KAFKA_LIBS, *, transitive: bool = True) -> Path:
    """Copy the jars a pom names (and their runtime dependencies) into ``out``, once."""
    stamp = _pom_stamp(pom, out)
    if stamp.exists():
        return out
    if shutil.which("mvn") is None:
        raise KafkaError("Maven (mvn) is required to fetch the Kafka jars from Maven Central")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cmd = [
        "mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={out}",
    ]
    if not transitive:
        cmd.append("-DexcludeTransitive=true")
    print(f"fetching jars for {pom.relative_to(ROOT)} from Maven Central ...", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KafkaError(f"mvn failed ({proc.returncode}):\n"
                         f"{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
    stamp.touch()
    return out


def java_bin() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise KafkaError("java not found: install a Java 17 runtime or set JAVA_HOME")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def run_class(main_class: str, args: Sequence[str], *, heap: str = "256m",
              **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run one of Kafka's Java entry points from the fetched jars and wait for it."""
    fetch()
    cmd = [java_bin(), f"-Xmx{heap}", f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
           "-cp", f"{KAFKA_LIBS}/*", main_class, *args]
    return subprocess.run(cmd, text=True, check=False, **kwargs)  # type: ignore[call-overload]


@dataclass
class LocalKafka:
    """One broker+controller in combined KRaft mode, on 127.0.0.1."""

    data_dir: Path = DEFAULT_DATA_DIR
    port: int = 9092
    controller_port: int = 9093
    host: str = "127.0.0.1"
    heap: str = "512m"
    default_partitions: int = 3
    # One node of a cluster (tools.cluster): its id, every controller as "id@host:port,...",
    # the shared cluster id, and the replication every topic gets (min.insync.replicas is
    # one less, so one node may be down and acks=all writes still succeed).
    node_id: int = 1
    voters: str | None = None
    cluster_id: str | None = None
    replication: int = 1
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    def write_config(self) -> None:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        rf, min_isr = str(self.replication), str(max(1, self.replication - 1))
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": (self.voters or
                                         f"{self.node_id}@{self.host}:{self.controller_port}"),
            "listeners": (f"PLAINTEXT://{self.host}:{self.port},"
                          f"CONTROLLER://{self.host}:{self.controller_port}"),
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(logs),
            "num.partitions": str(self.default_partitions),
            "auto.create.topics.enable": "true",
            "default.replication.factor": rf,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            # A laptop broker: keep a day or 1 GiB per partition, whichever comes first.
            "log.retention.hours": "24",
            "log.retention.bytes": str(1 << 30),
            "log.segment.bytes": str(128 << 20),
            "message.max.bytes": str(2 << 20),
        }
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _formatted(self) -> bool:
        return (self.data_dir / "logs" / "meta.properties").exists()

    def format(self) -> None:
        """Format KRaft storage on first start; a second start reuses it."""
        self.write_config()
        if self._formatted():
            return
        proc = run_class("kafka.tools.StorageTool",
                         ["format", f"--cluster-id={self.cluster_id or _cluster_id()}",
                          "-c", str(self.config_file)],
                         capture_output=True)
        if proc.returncode != 0:
            raise KafkaError(f"formatting {self.data_dir} failed:\n{proc.stdout}{proc.stderr}")

    def command(self) -> list[str]:
        return [
            java_bin(), f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp", f"{KAFKA_LIBS}/*", "kafka.Kafka", str(self.config_file),
        ]

    def _stop_leftover(self) -> None:
        """A broker left running from this folder (e.g. an interrupted run) is stopped first."""
        if not self.pid_file.exists():
            return
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            pid = int(self.pid_file.read_text().strip())
            proc_dir = Path(f"/proc/{pid}")
            cmdline = (proc_dir / "cmdline").read_bytes() if proc_dir.exists() else b""
            if b"kafka.Kafka" in cmdline and str(self.config_file).encode() in cmdline:
                os.kill(pid, signal.SIGTERM)
                for _ in range(300):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)

    def start(self, *, stdout: int | None = None) -> subprocess.Popen[bytes]:
        """Start in the background; use :meth:`wait_ready` before connecting."""
        fetch()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        self.format()
        with contextlib.ExitStack() as stack:
            log = stdout if stdout is not None else stack.enter_context(
                (self.data_dir / "broker.log").open("ab")).fileno()
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.pid_file.write_text(str(self.proc.pid))
        return self.proc

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Block until the broker answers a metadata request (not just a TCP connect)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise KafkaError(f"broker exited with {self.proc.returncode}; "
                                 f"see {self.data_dir}/broker.log")
            try:
                if broker_ready(self.bootstrap):
                    return
            except OSError as exc:
                last = exc
            time.sleep(0.2)
        raise KafkaError(f"broker at {self.bootstrap} not ready after {timeout:.0f}s ({last})")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a clean, controlled shutdown), then SIGKILL if it hangs."""
        if self.proc is None:
            self._stop_leftover()
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, as a crash would: for fault-injection tests."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.pid_file.unlink(missing_ok=True)

    def run_foreground(self, stop_delay: float = 1.5) -> int:
        """For honcho: start, forward SIGTERM/SIGINT, exit with the broker.

        honcho signals every process at once on Ctrl-C; the broker waits ``stop_delay``
        seconds before its own controlled shutdown, so the producer's final flush still
        reaches it (honcho allows 5 s before SIGKILL).
        """
        proc = self.start(stdout=sys.stdout.fileno())

        def stop() -> None:
            if proc.poll() is None:
                proc.terminate()

        def forward(signum: int, _frame: object) -> None:
            threading.Timer(stop_delay, stop).start()

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        rc = proc.wait()
        self.pid_file.unlink(missing_ok=True)
        return 0 if rc in (0, 143, -15) else rc


def broker_ready(bootstrap: str, timeout: float = 5.0) -> bool:
    """True when the broker at ``bootstrap`` answers an ApiVersions and Metadata request."""
    import asyncio

    from common.kafka import KafkaEdgeError, check_reachable, make_admin

    try:
        check_reachable(bootstrap, timeout_s=1.0)
    except KafkaEdgeError as exc:
        raise OSError(str(exc)) from exc

    async def probe() -> bool:
        admin = make_admin(bootstrap, request_timeout_ms=int(timeout * 1000))
        try:
            await asyncio.wait_for(admin.start(), timeout)
            await asyncio.wait_for(admin.describe_cluster(), timeout)
            return True
        except Exception:
            return False
        finally:
            await admin.close()

    return asyncio.run(probe())


def create_topic(bootstrap: str, name: str, partitions: int = 3, *,
                 config: dict[str, str] | None = None, timeout: float = 30.0) -> None:
    """Create ``name`` if it does not exist yet (idempotent), through common.kafka."""
    import asyncio

    from common.kafka import KafkaEdgeError, TopicSpec, ensure_topics

    try:
        asyncio.run(ensure_topics(bootstrap, [TopicSpec(name, partitions, config=config or {})],
                                  timeout_s=timeout))
    except KafkaEdgeError as exc:
        raise KafkaError(str(exc)) from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.kafka", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    env = os.environ
    parser.add_argument("--data-dir", type=Path,
                        default=Path(env.get("KAFKA_DATA_DIR", DEFAULT_DATA_DIR)),
                        help="broker storage (env KAFKA_DATA_DIR; default .cache/kafka/data)")
    parser.add_argument("--port", type=int, default=int(env.get("KAFKA_PORT", "9092")),
                        help="client port on 127.0.0.1 (env KAFKA_PORT)")
    parser.add_argument("--controller-port", type=int,
                        default=int(env.get("KAFKA_CONTROLLER_PORT", "9093")),
                        help="KRaft controller port (env KAFKA_CONTROLLER_PORT)")
    parser.add_argument("--heap", default=os.environ.get("KAFKA_HEAP", "512m"))
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="fetch the broker jars from Maven Central")
    sub.add_parser("fetch-spark", help="fetch the Spark Kafka connector jars")
    sub.add_parser("start", help="run the broker in the foreground")
    w = sub.add_parser("wait", help="wait until the broker accepts clients")
    w.add_argument("--timeout", type=float, default=90)
    w.add_argument("--bootstrap", default=None)
    t = sub.add_parser("create-topic", help="create a topic if missing")
    t.add_argument("name")
    t.add_argument("--partitions", type=int, default=int(os.environ.get("KAFKA_PARTITIONS", "6")))
    t.add_argument("--bootstrap", default=None)
    sub.add_parser("stop", help="stop a broker started from --data-dir")
    tool = sub.add_parser("tool", help=f"run a Kafka CLI tool: {', '.join(TOOLS)}")
    tool.add_argument("name", choices=sorted(TOOLS))
    tool.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    broker = LocalKafka(data_dir=args.data_dir, port=args.port,
                        controller_port=args.controller_port, heap=args.heap)
    default_bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)
    try:
        if args.cmd == "fetch":
            print(fetch())
        elif args.cmd == "fetch-spark":
            print(fetch(SPARK_POM, SPARK_JARS, transitive=False))
        elif args.cmd == "start":
            return broker.run_foreground()
        elif args.cmd == "wait":
            bootstrap = args.bootstrap or default_bootstrap
            deadline = time.monotonic() + args.timeout
            while True:
                try:
                    if broker_ready(bootstrap.split(",")[0]):
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise KafkaError(f"no broker at {bootstrap} after {args.timeout:.0f}s")
                time.sleep(0.3)
            print(f"kafka ready at {bootstrap}")
        elif args.cmd == "create-topic":
            bootstrap = args.bootstrap or default_bootstrap
            create_topic(bootstrap, args.name, args.partitions)
            print(f"topic {args.name} ready ({args.partitions} partitions) at {bootstrap}")
        elif args.cmd == "stop":
            broker.stop()
        elif args.cmd == "tool":
            extra = [a for a in args.args if a != "--"]
            return run_class(TOOLS[args.name], extra).returncode
    except KafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
