"""``python -m tools.supervise [-f Procfile] [name ...]``: run a Procfile's processes and keep
them running (what ``make run`` uses instead of ``honcho start``).

Like honcho: one line per output line, prefixed with the time and the process name; Ctrl-C
(SIGINT) or SIGTERM stops everything. Unlike honcho, one process ending does not take the
others down with it: the supervisor says which one ended and how (exit code or signal), and
starts it again after a back-off (1 s, doubling up to 30 s; reset once it has run for a
minute). A process that exits with 2 (a configuration error: restarting cannot help) or that
fails ``--max-restarts`` times in a row without running a minute stops the whole stack, and
the supervisor exits non-zero naming it. On shutdown the services get SIGTERM first and the
local broker (``kafka``) last, so the producer's final flush still reaches it; each group has
``--stop-timeout`` seconds (20) to exit before SIGKILL.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_ERROR = 2
STABLE_S = 60.0
BACKOFF_MAX_S = 30.0
STOP_TIMEOUT_S = 20.0
LAST = ("kafka",)  # stopped after the others


@dataclass
class Service:
    name: str
    command: str
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0  # in a row, each within STABLE_S of its start
    restart_at: float | None = None
    pump: threading.Thread | None = field(default=None, repr=False)


def parse_procfile(text: str) -> list[Service]:
    out = []
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line)
        if m and not line.lstrip().startswith("#"):
            out.append(Service(m.group(1), m.group(2).strip()))
    return out


class Supervisor:
    def __init__(self, services: list[Service], *, max_restarts: int = 5,
                 stop_timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.services = services
        self.max_restarts = max_restarts
        self.stop_timeout_s = stop_timeout_s
        self.width = max(len("supervise"), *(len(s.name) for s in services))
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def say(self, name: str, text: str) -> None:
        with self.lock:
            sys.stdout.write(f"{time.strftime('%H:%M:%S')} {name:<{self.width}} | {text}\n")
            sys.stdout.flush()

    def start(self, svc: Service) -> None:
        svc.proc = subprocess.Popen(  # noqa: S602 (the Procfile's own shell commands)
            svc.command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, executable="/bin/bash")
        svc.started = time.monotonic()
        svc.restart_at = None
        self.say("supervise", f"{svc.name} started (pid {svc.proc.pid})")
        svc.pump = threading.Thread(target=self._pump, args=(svc, svc.proc), daemon=True)
        svc.pump.start()

    def _pump(self, svc: Service, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.say(svc.name, raw.decode(errors="replace").rstrip("\n"))

    @staticmethod
    def how(code: int) -> str:
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with code {code}"

    def run(self) -> int:
        for svc in self.services:
            self.start(svc)
        while not self.stopping.is_set():
            now = time.monotonic()
            for svc in self.services:
                if svc.proc is not None and (code := svc.proc.poll()) is not None:
                    if svc.pump is not None:
                        svc.pump.join(2)
                    svc.proc = None
                    ran = now - svc.started
                    svc.failures = 1 if ran >= STABLE_S else svc.failures + 1
                    self.say("supervise", f"{svc.name} {self.how(code)} after {ran:.1f} s")
                    if code == CONFIG_ERROR:
                        return self.shutdown(f"{svc.name} has a configuration error "
                                             f"(exit {CONFIG_ERROR}); see its lines above", 1)
                    if svc.failures > self.max_restarts:
                        return self.shutdown(f"{svc.name} failed {svc.failures} times in a row",
                                             1)
                    delay = min(BACKOFF_MAX_S, 2.0 ** (svc.failures - 1))
                    svc.restart_at = now + delay
                    self.say("supervise", f"restarting {svc.name} in {delay:.0f} s "
                                          f"(failure {svc.failures} of {self.max_restarts})")
                if svc.proc is None and svc.restart_at is not None and now >= svc.restart_at:
                    self.start(svc)
            self.stopping.wait(0.2)
        return self.shutdown("stopping on request", 0)

    def shutdown(self, why: str, code: int) -> int:
        self.say("supervise", f"{why}; stopping the stack")
        first = [s for s in self.services if s.name not in LAST]
        last = [s for s in self.services if s.name in LAST]
        for group in (first, last):
            for svc in group:
                if svc.proc is not None and svc.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(svc.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout_s
            for svc in group:
                if svc.proc is None:
                    continue
                try:
                    svc.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.say("supervise", f"{svc.name} ignored SIGTERM; killing it")
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(svc.proc.pid, signal.SIGKILL)
                    svc.proc.wait()
                if svc.pump is not None:
                    svc.pump.join(2)
                self.say("supervise", f"{svc.name} {self.how(svc.proc.returncode)}")
        if code:
            self.say("supervise", f"exit {code}: {why}")
        return code


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.supervise", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-f", "--procfile", type=Path, default=Path("Procfile"))
    p.add_argument("--max-restarts", type=int, default=5,
                   help="failures in a row (each within a minute of starting) before giving up")
    p.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT_S,
                   help="seconds a process has to exit after SIGTERM before SIGKILL (a Spark "
                        "job finishes its micro-batch first); default %(default)s")
    p.add_argument("names", nargs="*", help="processes to run (default: all)")
    args = p.parse_args(argv)
    services = parse_procfile(args.procfile.read_text())
    if args.names:
        unknown = set(args.names) - {s.name for s in services}
        if unknown:
            p.error(f"not in {args.procfile}: {', '.join(sorted(unknown))}")
        services = [s for s in services if s.name in args.names]
    if not 0 < args.stop_timeout <= 3600:
        p.error(f"--stop-timeout must be in (0, 3600] seconds, got {args.stop_timeout}")
    sup = Supervisor(services, max_restarts=args.max_restarts, stop_timeout_s=args.stop_timeout)

    def on_signal(signum: int, _frame: object) -> None:
        sup.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return sup.run()


if __name__ == "__main__":
    sys.exit(main())
