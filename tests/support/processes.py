"""Subprocesses the tests and benchmarks start: stopped on purpose, killed only if stuck."""

from __future__ import annotations

import signal
import subprocess


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0,
                 sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` (SIGTERM) if ``proc`` still runs, wait ``timeout`` s, then kill it.

    Returns the exit code (negative for a signal, as Popen reports it)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()
