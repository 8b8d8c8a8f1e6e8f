"""Background work with one shape: start, run until closed, never die silently.

:class:`Loop` calls a step every ``interval_s`` (the first call at once, or after one
interval); a step that raises is logged with the loop's name and tried again at the
next tick, so one bad database read does not end the refresh for good; ``wake`` runs
the next step early. ``close`` cancels
the task and waits for it; it is safe to call twice, or before ``start`` (``stop``
cancels without waiting, for code that cannot await).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[None]]


class Loop:
    def __init__(
        self,
        name: str,
        step: Step,
        interval_s: float,
        *,
        first_now: bool = False,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.name = name
        self.step = step
        self.interval_s = interval_s
        self.first_now = first_now
        """Run the first step at once rather than after one interval."""
        self.on_error = on_error
        """Called (after the log line) with each step's exception."""
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken: asyncio.Event | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def woken(self) -> bool:
        """Whether a ``wake`` is pending: the next step will not wait out the interval."""
        return self._woken is not None and self._woken.is_set()

    def start(self) -> None:
        if not self.running:
            self._loop = asyncio.get_running_loop()
            self._woken = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._woken), name=self.name)

    def wake(self) -> None:
        """Run the next step now rather than at the end of the interval. Callable from
        any thread; does nothing while the loop is not running."""
        loop, woken = self._loop, self._woken
        if loop is None or woken is None or not self.running:
            return
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if here:
            woken.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(woken.set)

    async def _run(self, woken: asyncio.Event) -> None:
        if not self.first_now:
            await self._pause(woken)
        while True:
            try:
                await self.step()
            except Exception as exc:
                log.exception("%s failed; trying again in %.1fs", self.name, self.interval_s)
                if self.on_error is not None:
                    self.on_error(exc)
            await self._pause(woken)

    async def _pause(self, woken: asyncio.Event) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow close()'s cancel.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.interval_s):
                await woken.wait()
        woken.clear()

    def stop(self) -> asyncio.Task[None] | None:
        """Cancel the task at once, without waiting for it to finish (for callers that
        cannot await); returns it, for whoever awaits its end later."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        return task

    async def close(self) -> None:
        await cancel(self.stop())


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has finished."""
    if task is not None and not task.done():
        task.cancel()
    if task is not None:
        with contextlib.suppress(asyncio.CancelledError):
            await task
