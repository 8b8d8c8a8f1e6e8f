"""What each request used, recorded off the request path.

The request path only hands over what it already holds (:class:`Outcome`: the status,
the answer's body or, for a stream, its last few kilobytes and a count of the frames
that carried text); a single background task turns each outcome into a usage record
(parsing ``usage`` out of the bytes there, not on the request path) and writes the
records in batches.

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
- Token counts come from the answer's ``usage`` (for streams, the final chunk's, which
  OpenAI-compatible servers send when the client asked for
  ``stream_options.include_usage``). Without one they are estimated (prompt: request
  bytes / 4; completion: text-bearing stream frames, or answer text / 4) and the record
  is marked ``estimated``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from modelplane.store.governance import UsageRepo
from modelplane.store.records import Usage

log = logging.getLogger(__name__)

TAIL_BYTES = 8192
"""How much of a stream's end is kept to find its usage chunk."""

_USAGE = b'"usage"'
_ERROR_EVENT = re.compile(rb'data: ?\{\s*"error"\s*:\s*\{')
_DONE = re.compile(rb"data: ?\[DONE\]\s*\Z")
_TEXT = (b'"content":"', b'"content": "', b'"text":"', b'"text": "')
_EMPTY = (b'"content":""', b'"content": ""', b'"text":""', b'"text": ""')
_decoder = json.JSONDecoder()
_COMMON = re.compile(
    rb'\s*:\s*\{\s*"prompt_tokens"\s*:\s*(\d{1,12})\s*,\s*"completion_tokens"\s*:\s*(\d{1,12})\s*[,}]'
)
"""``"usage"``'s value as OpenAI-compatible servers write it, prompt tokens first."""


def parse_usage(data: bytes) -> tuple[int, int] | None:
    """``(prompt_tokens, completion_tokens)`` of the last ``usage`` object in a body
    or a stream's tail; None when there is none (or it is ``null``)."""
    end = len(data)
    for _ in range(8):
        at = data.rfind(_USAGE, 0, end)
        if at < 0:
            return None
        end = at
        if at and data[at - 1] == 0x5C:  # \"usage\": inside a JSON string
            continue
        common = _COMMON.match(data, at + len(_USAGE))
        if common is not None:  # OpenAI's own shape: no JSON decoding needed
            return int(common[1]), int(common[2])
        colon = data.find(b":", at + len(_USAGE))
        if colon < 0:
            continue
        try:
            value, _ = _decoder.raw_decode(data[colon + 1 :].decode("utf-8", "replace").lstrip())
        except ValueError:
            continue
        if not isinstance(value, dict):
            continue
        prompt = value.get("prompt_tokens", value.get("input_tokens"))
        completion = value.get("completion_tokens", value.get("output_tokens"))
        if completion is None and isinstance(value.get("total_tokens"), int):
            completion = value["total_tokens"] - (prompt or 0)  # embeddings
        if isinstance(prompt, int) and isinstance(completion, int):
            return max(0, prompt), max(0, completion)
    return None


def text_frames(chunk: bytes) -> int:
    """Stream frames in ``chunk`` that carry generated text: about one token each."""
    n = sum(chunk.count(p) for p in _TEXT)
    return n - sum(chunk.count(p) for p in _EMPTY) if n else 0


def answer_text_tokens(body: bytes) -> int:
    """Completion tokens of a JSON answer without ``usage``: its text / 4."""
    try:
        obj: Any = json.loads(body)
    except ValueError:
        return 0
    chars = 0
    for choice in obj.get("choices") or () if isinstance(obj, dict) else ():
        if isinstance(choice, dict):
            message = choice.get("message") or {}
            text = message.get("content") if isinstance(message, dict) else None
            text = text if isinstance(text, str) else choice.get("text")
            chars += len(text) if isinstance(text, str) else 0
    return chars // 4


def stream_status(tail: bytes, *, left: bool = False) -> int:
    """The status a 200 stream really ended with: 504 or 502 when it ended with an error
    event (a timeout, another failure); 499 when its client left before the end (a
    client that read ``data: [DONE]`` and hung up before the upstream closed did not)."""
    match = _ERROR_EVENT.search(tail)
    if match is not None:
        return 504 if b"upstream_timeout" in tail[match.start() :] else 502
    if left and _DONE.search(tail) is None:
        return 499
    return 200


@dataclass(slots=True)
class Outcome:
    """How one request ended, as the request path saw it (raw; parsed later)."""

    ticket: Any
    """The request's own state (the permit), opaque here."""
    status: int
    ended: float
    """``loop.time()`` at the end (the last byte of a stream)."""
    endpoint: str | None = None
    cached: bool = False
    body: bytes | None = None
    """A JSON answer's body."""
    tail: bytes | None = None
    """A stream's last bytes (None: not a stream)."""
    frames: int = 0
    """A stream's text-bearing frames."""
    failed: bool = False
    """Nothing was answered (refused, or an error before an answer)."""
    left: bool = False
    """The client went away before the stream ended."""
    _used: tuple[int, int] | None = field(default=None, init=False, repr=False)
    _parsed: bool = field(default=False, init=False, repr=False)

    def used(self) -> tuple[int, int] | None:
        """``(prompt_tokens, completion_tokens)`` from the answer's ``usage`` (None: it
        has none), parsed once."""
        if not self._parsed:
            data = self.body if self.tail is None else self.tail
            self._used = parse_usage(data) if data is not None and not self.failed else None
            self._parsed = True
        return self._used


class _Finisher(Protocol):
    def finish(self, outcome: Outcome) -> None: ...


class Tap:
    """Passes a stream through untouched, keeping its tail and counting its text
    frames, and hands the outcome over once, when the stream ends, fails, is closed, or
    is dropped unfinished (its client left)."""

    __slots__ = ("_cached", "_done", "_endpoint", "_frames", "_owner", "_stream", "_tail")

    def __init__(
        self, stream: AsyncIterator[bytes], owner: _Finisher, endpoint: str | None, cached: bool
    ) -> None:
        self._stream = stream
        self._owner = owner
        self._endpoint = endpoint
        self._cached = cached
        self._tail = b""
        self._frames = 0
        self._done = False

    def __aiter__(self) -> Tap:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._stream.__anext__()
        except StopAsyncIteration:
            self._end(left=False)
            raise
        except BaseException:
            self._end(left=True)
            raise
        if chunk:
            self._frames += text_frames(chunk)
            tail = self._tail + chunk
            self._tail = tail[-TAIL_BYTES:] if len(tail) > TAIL_BYTES else tail
        return chunk

    async def aclose(self) -> None:
        self._end(left=True)
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()

    def __del__(self) -> None:
        if not self._done:
            with contextlib.suppress(Exception):
                self._end(left=True)

    def _end(self, *, left: bool) -> None:
        if self._done:
            return
        self._done = True
        try:
            ended = asyncio.get_running_loop().time()
        except RuntimeError:
            ended = 0.0
        self._owner.finish(
            Outcome(
                None,
                200,
                ended,
                self._endpoint,
                self._cached,
                tail=self._tail,
                frames=self._frames,
                left=left,
            )
        )


Settle = Callable[[list[Outcome]], Awaitable[list[Usage]]]
"""Turns a batch of outcomes into their records (and gives back what they held)."""


class UsageRecorder:
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
        settle: Settle,
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
        self._queue: deque[Outcome] = deque()
        self._records: list[Usage] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._due = 0.0
        self._backoff = flush_interval_s
        self._timer: asyncio.TimerHandle | None = None

    def submit(self, outcome: Outcome, *, urgent: bool = False) -> bool:
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
