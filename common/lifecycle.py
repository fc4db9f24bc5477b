"""Background tasks started and stopped on purpose, for every service.

    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(background(status_loop(), "status"))
        ...                                  # at the end: cancelled, awaited, its error raised

A cancellation of the *caller* always propagates; the cancellation of the task being stopped
does not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
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


@contextlib.asynccontextmanager
async def background(coro: Coroutine[Any, Any, T], name: str) -> AsyncIterator[asyncio.Task[T]]:
    """``coro`` as a task for the body of the ``async with``; at its end the task is cancelled
    (if still running) and awaited, and an error the task itself ended with is raised."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        failed = task.done() and not task.cancelled() and task.exception() is not None
        await cancel_and_wait(task)
        if failed:
            raise task.exception()  # type: ignore[misc]
