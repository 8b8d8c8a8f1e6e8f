"""``tasks.Loop``: steps run, a failing step is logged and tried again, close stops it."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from modelplane.tasks import Loop, cancel


async def test_a_failing_step_is_logged_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0
    recovered = asyncio.Event()
    errors: list[BaseException] = []

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the database is away")
        recovered.set()

    loop = Loop("refreshing the cache", step, 0.001, first_now=True, on_error=errors.append)
    loop.start()
    try:
        async with asyncio.timeout(10):
            await recovered.wait()
    finally:
        await loop.close()
    assert calls >= 2
    assert [str(e) for e in errors] == ["the database is away"]
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage().startswith("refreshing the cache failed; trying again in")


async def test_close_stops_it_and_may_come_twice() -> None:
    ran = asyncio.Event()
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        ran.set()

    loop = Loop("steps", step, 0.001, first_now=True)
    loop.start()
    async with asyncio.timeout(10):
        await ran.wait()
    await loop.close()
    assert not loop.running
    after = calls
    await asyncio.sleep(0)  # give a stray step its chance: there is none
    assert calls == after
    await loop.close()


async def test_close_before_start_and_wake_while_stopped_do_nothing() -> None:
    async def step() -> None:
        raise AssertionError("never started")

    loop = Loop("idle", step, 60)
    loop.wake()
    await loop.close()
    assert not loop.running and not loop.woken


async def test_wake_runs_the_next_step_early_from_any_thread() -> None:
    steps: asyncio.Queue[None] = asyncio.Queue()

    async def step() -> None:
        steps.put_nowait(None)

    loop = Loop("wakeable", step, 3600, first_now=True)  # the interval would never pass
    loop.start()
    try:
        async with asyncio.timeout(10):
            await steps.get()  # the first, at once
            loop.wake()
            await steps.get()
            thread = threading.Thread(target=loop.wake)
            thread.start()
            thread.join()
            await steps.get()
    finally:
        await loop.close()


async def test_cancel_waits_for_the_task() -> None:
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(forever())
    await started.wait()
    await cancel(task)
    assert task.cancelled()
    await cancel(task)
    await cancel(None)
