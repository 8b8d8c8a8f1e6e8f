"""One thread owns the model; requests reach it through a bounded, first-come queue.

A llama.cpp context is not thread-safe, and calling it from changing OS threads halves
decode speed (each new thread gets a fresh OpenMP team), so every call into the model
happens on the scheduler's single thread. The asyncio side submits a ``Sequence`` and
reads its deltas from an ``asyncio.Queue`` filled with ``call_soon_threadsafe``.

The thread asks its ``Executor`` to ``step`` the active sequences and admits waiting
ones between steps, up to the executor's ``max_batch``. The llama.cpp executor either
runs one sequence to the end per step (``max_batch`` 1) or advances up to
``max_batch`` sequences by one token per step through one ``llama_decode``
(``llamacpp/batched.py``); this module is the same for both.

A consumer that goes away (client disconnect, the gateway closing the stream) cancels
its sequence at once, whether or not it has produced anything: a waiting one leaves
the queue, a running one is dropped by the executor at its next step or token. A
watchdog notes when the thread last advanced its work (a step ended, or a long step
reported a token through ``Sequence.beat``); work held longer than ``stall_after_s``
makes ``problem()`` name it, so ``/health`` fails and the runtime replaces the replica.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from modelplane.engines.base import Delta, GenerateRequest
from modelplane.errors import ModelplaneError, Overloaded

log = logging.getLogger(__name__)

_DONE = object()


def _nothing(*_: object) -> None:
    pass


class Sequence:
    """A request being generated, seen from both sides of the thread boundary."""

    def __init__(
        self,
        request: GenerateRequest,
        loop: asyncio.AbstractEventLoop,
        *,
        on_cancel: Callable[[Sequence], None] = _nothing,
        on_progress: Callable[[], None] = _nothing,
    ) -> None:
        self.request = request
        self.cancelled = False
        self._loop = loop
        self._out: asyncio.Queue[object] = asyncio.Queue()
        self._on_cancel = on_cancel
        self.beat = on_progress
        """Called on the engine thread by a step that runs long (a whole generation),
        once per token, so the watchdog knows it advances."""

    def emit(self, delta: Delta) -> None:
        """Called on the engine thread."""
        self._loop.call_soon_threadsafe(self._out.put_nowait, delta)

    def fail(self, error: BaseException) -> None:
        self._loop.call_soon_threadsafe(self._out.put_nowait, error)

    def finish(self) -> None:
        self._loop.call_soon_threadsafe(self._out.put_nowait, _DONE)

    def cancel(self) -> None:
        """Nobody wants the rest: stop generating it, first token or not."""
        if not self.cancelled:
            self.cancelled = True
            self._on_cancel(self)

    async def deltas(self) -> AsyncIterator[Delta]:
        try:
            while True:
                item = await self._out.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, Delta)
                yield item
        finally:
            # Reached on normal end, on error and when the consumer goes away (client
            # disconnect, also while waiting for the first delta): a waiting sequence
            # leaves the queue now, a running one ends at its next step or token.
            self.cancel()


class Executor(Protocol):
    max_batch: int

    def load(self) -> None: ...

    def step(self, active: list[Sequence]) -> list[Sequence]:
        """Advance every active sequence; return those that are finished. Cancelled
        ones are dropped (and returned) without more work; a step that runs for long
        calls ``seq.beat()`` as it goes."""
        ...

    def unload(self) -> None: ...


class Scheduler:
    def __init__(
        self,
        executor: Executor,
        *,
        max_queue: int = 64,
        name: str = "engine",
        stall_after_s: float = 120.0,
    ) -> None:
        self._executor = executor
        self._max_queue = max_queue
        self._stall_after_s = stall_after_s
        self._progress_at = time.monotonic()
        """When the thread last advanced its work (or work arrived while it was idle)."""
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._cv = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._loaded: asyncio.Future[None] | None = None
        self.active = 0
        self.served = 0
        self._active: list[Sequence] = []
        self._dead = False

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def alive(self) -> bool:
        """False once the model thread has ended: the replica must be replaced."""
        return self._thread.is_alive() and not self._dead

    def problem(self) -> str | None:
        """Why this replica must be replaced (its model thread ended, or has held work
        without advancing it for ``stall_after_s``), or None while it is healthy."""
        if not self.alive:
            return "the model thread has ended"
        held = len(self._active) + len(self._waiting)
        stalled = time.monotonic() - self._progress_at
        if held and stalled > self._stall_after_s:
            return (
                f"the model thread has made no progress for {stalled:.0f} s; requests in "
                f"flight: {held} (stall_timeout_s: {self._stall_after_s:g})"
            )
        return None

    def health(self) -> dict[str, Any]:
        """``status`` ("ok", "stalled" or "failed"), ``reason`` when not ok, and load."""
        problem = self.problem()
        state: dict[str, Any] = {
            "status": "ok" if problem is None else "failed" if not self.alive else "stalled"
        }
        if problem is not None:
            state["reason"] = problem
        state.update(active=self.active, queued=self.queued, served=self.served)
        return state

    def _progressed(self) -> None:
        self._progress_at = time.monotonic()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loaded = loop.create_future()
        self._thread.start()
        await self._loaded

    def submit(self, request: GenerateRequest) -> Sequence:
        seq = Sequence(
            request,
            asyncio.get_running_loop(),
            on_cancel=self._withdraw,
            on_progress=self._progressed,
        )
        with self._cv:
            if self._closing or not self.alive:
                raise Overloaded("the engine is not running; retry on another replica")
            if self.problem() is not None:
                # Queued behind a stuck thread it would never start; elsewhere it can.
                raise Overloaded("the engine has stalled; retry on another replica")
            if not self._waiting and not self._active:
                self._progressed()  # an idle thread's stale clock is no stall
            # Room for a full batch running plus ``max_queue`` waiting.
            if len(self._waiting) + len(self._active) >= self._max_queue + self._executor.max_batch:
                raise Overloaded(
                    f"the engine queue is full ({self._max_queue} requests waiting); retry shortly",
                    retry_after=1,
                )
            self._waiting.append(seq)
            self._cv.notify()
        return seq

    def _withdraw(self, seq: Sequence) -> None:
        """A cancelled sequence that has not started gives its place up at once."""
        # Not waiting: running (the executor drops it) or already finished.
        with self._cv, contextlib.suppress(ValueError):
            self._waiting.remove(seq)

    async def close(self) -> None:
        with self._cv:
            self._closing = True
            for seq in self._waiting:
                seq.fail(Overloaded("the engine shut down before this request started"))
            self._waiting.clear()
            # Running generations stop at their next token instead of holding shutdown.
            for seq in self._active:
                seq.cancelled = True
            self._cv.notify()
        if self._thread.is_alive():
            await asyncio.to_thread(self._thread.join)

    def _resolve_loaded(self, error: BaseException | None) -> None:
        fut = self._loaded
        assert fut is not None
        loop = fut.get_loop()

        def settle() -> None:
            if not fut.done():
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)

        loop.call_soon_threadsafe(settle)

    def _run(self) -> None:
        try:
            self._executor.load()
        except BaseException as exc:  # reported to start(), which re-raises
            self._resolve_loaded(exc)
            return
        self._resolve_loaded(None)
        active = self._active
        try:
            while True:
                with self._cv:
                    while not self._waiting and not active and not self._closing:
                        self._cv.wait()
                    if self._closing and not active:
                        return
                    while self._waiting and len(active) < self._executor.max_batch:
                        seq = self._waiting.popleft()
                        if not seq.cancelled:
                            active.append(seq)
                self.active = len(active)
                if not active:
                    continue
                try:
                    done = self._executor.step(active)
                except ModelplaneError as exc:
                    for seq in active:
                        seq.fail(exc)
                    done = list(active)
                except Exception as exc:  # a model failure ends its sequences, not the engine
                    for seq in active:
                        seq.fail(ModelplaneError(f"generation failed: {type(exc).__name__}"))
                    done = list(active)
                self._progressed()
                for seq in done:
                    seq.finish()
                    active.remove(seq)
                    self.served += 1
                self.active = len(active)
        except BaseException:
            # Nothing may hang on a dead thread: fail its requests, refuse new ones
            # (``alive`` turns false, health reports it, the supervisor replaces us).
            log.critical("the model thread died", exc_info=True)
            self._dead = True
            with self._cv:
                doomed = [*active, *self._waiting]
                self._waiting.clear()
            for seq in doomed:
                seq.fail(ModelplaneError("the model engine failed; retry the request"))
        finally:
            self._executor.unload()
