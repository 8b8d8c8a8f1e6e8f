"""What each request used, recorded off the request path.

The request path only hands over what it already holds (an outcome: the permit's data
and the :class:`~modelplane.telemetry.answers.Answer` its answer reader read); a single
background task turns batches of outcomes into usage records with ``settle`` (the cost,
the token estimate corrected, the slots given back: ``Gatekeeper._settle``) and writes
the records in batches.

Semantics, spelled out:

- One record per request: an outcome is handed over exactly once per request, and
  records are inserted under ids chosen here, so a batch retried after an unclear
  database failure is not counted twice.
- Never blocking: outcomes go to a bounded in-memory queue; when it is full (the
  database has been unreachable for a long while) new outcomes are dropped and counted
  (``dropped``), with a warning, rather than slowing requests down.
- A failed batch is kept and retried, with backoff, while it fits in the queue's bound.
- Graceful: ``close()`` records everything still queued and writes the last batch,
  within a deadline.
- Token counts are the answer reader's (from the answer's ``usage``, else estimated and
  marked ``estimated``): the same numbers the metrics count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from modelplane.store.governance import UsageRepo
from modelplane.store.records import Usage

log = logging.getLogger(__name__)

T = TypeVar("T")


Settle = Callable[[list[T]], Awaitable[list[Usage]]]
"""Turns a batch of outcomes into their records (and gives back what they held)."""


class UsageRecorder(Generic[T]):
    """A bounded queue of outcomes, settled in batches by ``settle`` into records,
    which are written in batches by one background task.

    The task is not woken for every outcome: the first one queued arms a timer of
    ``settle_delay_s`` and the outcomes that arrive meanwhile are settled together. An
    outcome submitted ``urgent`` (it holds a concurrency slot, its cost counts against a
    budget, or correcting its token estimate can change whether the next request fits:
    what limits the next requests) wakes it at once;
    under load, outcomes that arrive while it settles one batch still form the next
    one, so token corrections of many requests take one Redis round trip."""

    def __init__(
        self,
        repo: UsageRepo,
        settle: Settle[T],
        *,
        flush_interval_s: float = 0.5,
        batch_max: int = 500,
        queue_max: int = 10_000,
        close_timeout_s: float = 10.0,
        settle_delay_s: float = 0.02,
    ) -> None:
        self.repo = repo
        self.settle = settle
        self.settle_delay_s = settle_delay_s
        self.flush_interval_s = flush_interval_s
        self.batch_max = batch_max
        self.queue_max = queue_max
        self.close_timeout_s = close_timeout_s
        self.dropped = 0
        self.written = 0
        self._queue: deque[T] = deque()
        self._records: list[Usage] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._due = 0.0
        self._backoff = flush_interval_s
        self._timer: asyncio.TimerHandle | None = None

    def submit(self, outcome: T, *, urgent: bool = False) -> bool:
        """Queue an outcome; False (and it is dropped) when the queue is full."""
        if len(self._queue) + len(self._records) >= self.queue_max or self._closing:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "usage queue full (%d): %d usage records dropped so far; is the "
                    "database reachable?",
                    self.queue_max,
                    self.dropped,
                )
            return False
        self._queue.append(outcome)
        if urgent or len(self._queue) >= self.batch_max:
            self._wake.set()
        elif self._timer is None and not self._wake.is_set():
            self._timer = asyncio.get_running_loop().call_later(self.settle_delay_s, self._due_now)
        return True

    def _due_now(self) -> None:
        self._timer = None
        self._wake.set()

    def unwritten(self) -> list[Usage]:
        """Records settled but not written yet."""
        return list(self._records)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage recorder")

    async def close(self) -> None:
        """Record what is queued and write it, within ``close_timeout_s``."""
        if self._task is None:
            return
        self._closing = True
        self._due = 0.0  # write what is left now
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.close_timeout_s)
        except TimeoutError:
            for task in (self._task, self._flushing):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            log.warning(
                "usage recorder stopped with %d outcomes and %d records unwritten",
                len(self._queue),
                len(self._records),
            )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._due = loop.time() + self.flush_interval_s
        while True:
            # Settle in bounded rounds, so a steady stream of outcomes cannot starve
            # the writes; writes run beside the settling (slots are given back there).
            if self._queue:
                n = min(len(self._queue), self.batch_max)
                batch = [self._queue.popleft() for _ in range(n)]
                try:
                    self._records.extend(await self.settle(batch))
                except Exception:
                    log.exception("settling %d usage records failed; they are lost", n)
            if self._records and self._flushing is None:
                # A full batch goes at once, unless writes are failing (then: backoff).
                early = (
                    len(self._records) >= self.batch_max and self._backoff == self.flush_interval_s
                )
                if early or loop.time() >= self._due:
                    self._flushing = asyncio.create_task(self._flush(), name="usage write")
            if self._closing and not self._queue and not self._records and not self._flushing:
                return
            if not self._queue:
                self._wake.clear()
                timeout = None
                if self._records and self._flushing is None:
                    timeout = max(0.0, self._due - loop.time())
                if timeout is None:
                    await self._wake.wait()
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        batch = self._records[: self.batch_max]
        try:
            await self.repo.add_many(batch)
        except Exception as exc:
            self._backoff = min(self._backoff * 2, 1.0 if self._closing else 30.0)
            log.warning(
                "writing %d usage records failed (%s); retrying in %.1f s",
                len(batch),
                type(exc).__name__,
                self._backoff,
            )
        else:
            del self._records[: len(batch)]
            self.written += len(batch)
            self._backoff = self.flush_interval_s
        finally:
            self._due = loop.time() + self._backoff
            self._flushing = None
            self._wake.set()
