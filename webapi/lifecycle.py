"""Stopping background tasks on purpose."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait until it is done; a cancellation of *our* caller propagates."""
    if task is None or task.done():
        if task is not None and not task.cancelled():
            task.exception()  # retrieve it, so asyncio does not log "never retrieved"
        return
    current = asyncio.current_task()
    already = current.cancelling() if current is not None else 0
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        # Re-raise only if *we* were cancelled while waiting (not the task we cancelled).
        if current is not None and current.cancelling() > already:
            raise


async def finish_first(aw: Awaitable[T], grace: float = 10.0) -> T:
    """Await ``aw`` shielded from cancellation: on cancel, let it finish (up to ``grace`` s),
    then re-raise. aiokafka leaks a half-open connection when cancelled while connecting, so
    client start-up and metadata calls run through here; steady-state fetching does not."""
    task = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            task.cancel()
        elif not task.cancelled():
            task.exception()  # retrieved: the caller is leaving anyway
        raise
