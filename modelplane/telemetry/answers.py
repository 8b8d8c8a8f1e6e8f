"""What an OpenAI-shaped answer says, read from its bytes on the request path without
parsing JSON: completion tokens and error events. Only error bodies, which are rare,
are parsed."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable

_USAGE = b'"completion_tokens":'
_DONE = b"data: [DONE]\n\n"
# Inside a JSON string a quote is escaped, so generated text cannot look like these.
_ERROR = (b'"error":{', b'"error": {')


def completion_tokens(data: bytes) -> int:
    """The last ``"completion_tokens":N`` in ``data``; 0 when there is none."""
    at = data.rfind(_USAGE)
    if at < 0:
        return 0
    digits = data[at + len(_USAGE) : at + len(_USAGE) + 12].lstrip()
    end = 0
    while end < len(digits) and 48 <= digits[end] <= 57:
        end += 1
    return int(digits[:end]) if end else 0


def error_message(body: bytes) -> str:
    """The message of an OpenAI error envelope (or the start of whatever ``body`` is)."""
    try:
        obj = json.loads(body or b"{}")
        message = obj["error"]["message"] if isinstance(obj.get("error"), dict) else obj["error"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return body[:200].decode("utf-8", "replace")
    return str(message)


def stream_error(chunk: bytes) -> tuple[int, str]:
    """The status a stream that ended with the error event in ``chunk`` stands for
    (504 for a timeout, else 502), and the event's message."""
    at = chunk.find(_ERROR[0])
    event = chunk[chunk.rfind(b"{", 0, at if at >= 0 else chunk.find(_ERROR[1])) :]
    status = 504 if b"upstream_timeout" in event else 502
    return status, error_message(event.split(b"\n", 1)[0])


Done = Callable[[float | None, int, bytes], None]
"""Called once when a watched stream ends: the timer's reading at the first chunk (None
without one), the completion tokens, and the end of the stream if it is an error event
(else b"")."""


class Watched:
    """Passes a stream through untouched and calls ``done`` once, when the stream ends,
    fails, is closed, or is dropped unfinished (its client left).

    Per chunk it only counts and keeps a reference (the work is microseconds per token
    otherwise): tokens come from the usage chunk at the end when the client asked for
    one, else one per chunk (what OpenAI-compatible servers send); an error event is
    looked for in the last two chunks only, which is where a stream ends with one.
    """

    __slots__ = ("_chunks", "_done", "_first", "_last", "_prev", "_stream", "_timer")

    def __init__(
        self, stream: AsyncIterator[bytes], timer: Callable[[], float], done: Done
    ) -> None:
        self._stream: AsyncIterator[bytes] | None = stream
        self._timer = timer
        self._done = done
        self._first: float | None = None
        self._chunks = 0
        self._prev = self._last = b""

    def __aiter__(self) -> Watched:
        return self

    async def __anext__(self) -> bytes:
        if self._stream is None:
            raise StopAsyncIteration
        try:
            chunk = await self._stream.__anext__()
        except BaseException:
            self._end()
            raise
        if self._first is None:
            self._first = self._timer()
        self._chunks += 1
        self._prev, self._last = self._last, chunk
        return chunk

    async def aclose(self) -> None:
        stream = self._stream
        self._end()
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # a finalizer must not raise
            self._end()

    def _end(self) -> None:
        if self._stream is None:
            return
        self._stream = None
        tail = self._prev + self._last
        usage = completion_tokens(tail)
        tokens = usage or self._chunks - (self._last == _DONE)
        error = tail if _ERROR[0] in tail or _ERROR[1] in tail else b""
        self._done(self._first, tokens, error)
