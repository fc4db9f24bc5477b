"""The broker a benchmark measures against: the one given, or a local one for the run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tools.kafka import LocalKafka, free_port


@contextmanager
def bench_broker(bootstrap: str | None, work: Path, heap: str = "768m") -> Iterator[str]:
    """``bootstrap`` as is when set; else a local broker under ``work``, stopped on exit."""
    if bootstrap:
        yield bootstrap
        return
    broker = LocalKafka(data_dir=work / "kafka", port=free_port(),
                        controller_port=free_port(), heap=heap)
    broker.start()
    try:
        broker.wait_ready()
        yield broker.bootstrap
    finally:
        broker.stop()
