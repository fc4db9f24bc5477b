"""Stopping background tasks on purpose: the web API's name for :mod:`common.lifecycle`."""

from __future__ import annotations

from common.lifecycle import cancel_and_wait, finish_first

__all__ = ["cancel_and_wait", "finish_first"]
