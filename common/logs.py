"""Logging shared by the services: entry points' filters, and logging that cannot flood."""

from __future__ import annotations

import logging
import time


class _KafkaConnectRetries(logging.Filter):
    """aiokafka logs an ERROR for every failed connection attempt; while a broker starts (as
    under `make run`) that is a screenful per second. The services log their own retry
    warning ("Kafka not reachable yet ... retrying"), so these lines add nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith('Unable connect to "')  # bootstrap attempts


def quiet_kafka_connect_retries() -> None:
    logging.getLogger("aiokafka").addFilter(_KafkaConnectRetries())


class RateLimitedLog:
    """At most one line per key per interval, with the count of lines suppressed since."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        if len(self._last) > 1000:  # keys are a small fixed set; never let them grow unbounded
            self._last.clear()
            self._suppressed.clear()
        self._last[key] = now
        skipped = self._suppressed.pop(key, 0)
        suffix = ""
        if skipped:
            suffix = f" ({skipped} similar suppressed in the last {self.interval_s:.0f} s)"
        self.logger.warning(msg + suffix, *args)
