"""``gateway/deadline.py``: one timer that interrupts only the awaits it guards."""

from __future__ import annotations

import asyncio

import pytest

from modelplane.gateway.deadline import Deadline


def _in(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_a_guarded_await_past_the_deadline_raises_timeout_error() -> None:
    limit = Deadline(_in(0.05))
    with pytest.raises(TimeoutError), limit:
        await asyncio.sleep(5)
    limit.close()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # nothing left pending


async def test_an_unguarded_await_is_never_interrupted() -> None:
    limit = Deadline(_in(0.01))
    expired = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_at(_in(0.05), expired.set_result, None)
    await expired  # outside any block: the deadline passes without cancelling it
    assert limit.expired
    with pytest.raises(TimeoutError), limit:  # the next guarded step sees it at once
        await asyncio.sleep(5)
    limit.close()


async def test_guarded_work_that_finishes_in_time_is_untouched() -> None:
    limit = Deadline(_in(5))
    for _ in range(3):
        with limit:
            await asyncio.sleep(0)
    limit.close()
    await asyncio.sleep(0.01)
    assert not limit.expired


async def _guarded(when: float, started: asyncio.Event) -> None:
    limit = Deadline(when)
    try:
        with limit:
            started.set()
            await asyncio.sleep(5)
    finally:
        limit.close()


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    started = asyncio.Event()
    task = asyncio.ensure_future(_guarded(_in(5), started))
    await started.wait()
    task.cancel()  # e.g. the client left
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancellation_racing_the_deadline_is_not_swallowed() -> None:
    started = asyncio.Event()
    when = _in(0.05)
    task = asyncio.ensure_future(_guarded(when, started))
    await started.wait()
    asyncio.get_running_loop().call_at(when, task.cancel)  # due in the same loop pass
    with pytest.raises(asyncio.CancelledError):
        await task
