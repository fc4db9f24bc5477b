"""aiohttp's own log of malformed requests, made unable to flood (the rate-limited logger
for the rest of the web API is common.logs.RateLimitedLog)."""

from __future__ import annotations

import logging
import time

from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["MalformedRequestFilter", "install_malformed_request_filter"]


class MalformedRequestFilter(logging.Filter):
    """On aiohttp's ``aiohttp.server`` logger: a malformed HTTP request (a parse error, which
    aiohttp answers 400 itself) logs one WARNING line without a traceback, at most one per
    interval with a count of the suppressed ones; other records pass untouched."""

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__("aiohttp.server")
        self.interval_s = interval_s
        self._last = -float("inf")
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self._suppressed += 1
            return False
        self._last = now
        suffix = ""
        if self._suppressed:
            suffix = f" ({self._suppressed} similar suppressed in the last {self.interval_s:.0f} s)"
            self._suppressed = 0
        record.msg = f"malformed HTTP request: {type(exc).__name__}: {str(exc)[:200]}{suffix}"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install_malformed_request_filter() -> None:
    """Attach one :class:`MalformedRequestFilter` to ``aiohttp.server`` (idempotent)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in logger.filters):
        logger.addFilter(MalformedRequestFilter())
