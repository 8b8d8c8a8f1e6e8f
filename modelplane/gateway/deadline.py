"""A deadline for the awaits it guards: ``asyncio.timeout_at`` for the hot path.

``asyncio.timeout_at`` costs several µs per use in pure-Python bookkeeping, and a
stream relay would need one per chunk. A :class:`Deadline` is one timer for as long as
it lives; it interrupts only the awaits inside ``with deadline:`` blocks (an upstream
read, never a write to the client) and turns its own cancellation into
``TimeoutError``. A block entered after it expired raises ``TimeoutError`` at once.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    __slots__ = ("expired", "guarding", "handle", "task")

    def __init__(self, when: float) -> None:
        task = asyncio.current_task()
        assert task is not None, "a Deadline guards the awaits of a task"
        self.task = task
        self.expired = self.guarding = False
        self.handle = asyncio.get_running_loop().call_at(when, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self.guarding:
            self.task.cancel()

    def __enter__(self) -> Deadline:
        if self.expired:
            raise TimeoutError
        self.guarding = True
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.guarding = False
        if kind is asyncio.CancelledError and self.expired and self.task.uncancel() == 0:
            # Cancelled by this deadline alone (not by a client leaving or a shutdown).
            raise TimeoutError from exc

    def close(self) -> None:
        """Stop the timer (once nothing is guarded any more)."""
        self.handle.cancel()
