"""common.lifecycle: background tasks stopped on purpose, errors raised, the caller's
cancellation never swallowed."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from common.lifecycle import background, cancel_and_wait


async def test_background_cancels_and_awaits_a_running_task() -> None:
    cleaned: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append("done")

    async with background(forever(), "forever") as task:
        await asyncio.sleep(0)
        assert not task.done()
    assert task.cancelled() and cleaned == ["done"]


async def test_background_raises_what_the_task_ended_with() -> None:
    async def broken() -> None:
        raise KeyError("a bug in the loop")

    with pytest.raises(KeyError, match="a bug in the loop"):
        async with background(broken(), "broken") as task:
            await asyncio.wait([task])


async def test_resources_close_in_reverse_order_of_entering() -> None:
    order: list[str] = []

    async def stop(name: str) -> None:
        order.append(name)

    async with contextlib.AsyncExitStack() as stack:
        for name in ("publisher", "channel"):
            stack.push_async_callback(stop, name)
        await stack.enter_async_context(background(asyncio.sleep(60), "status"))
    assert order == ["channel", "publisher"]


async def test_the_callers_cancellation_propagates() -> None:
    entered = asyncio.Event()

    async def stubborn() -> None:  # takes a while to finish once cancelled
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            entered.set()
            await asyncio.sleep(60)
            raise

    async def caller() -> None:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        await cancel_and_wait(task)

    outer = asyncio.create_task(caller())
    await asyncio.wait_for(entered.wait(), 10)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(outer, 10)
