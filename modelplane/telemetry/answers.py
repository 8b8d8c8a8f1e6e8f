"""What an OpenAI-shaped answer says, read from its bytes on the request path without
parsing JSON: completion tokens and error events. Only error bodies, which are rare,
are parsed."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable

_USAGE = b'"completion_tokens":'
_PROMPT = b'"prompt_tokens":'
_NUMBER = re.compile(rb"\s*(\d{1,12})")
_DONE = b"data: [DONE]\n\n"
# Inside a JSON string a quote is escaped, so generated text cannot look like these.
_ERROR = (b'"error":{', b'"error": {')


def completion_tokens(data: bytes) -> int:
    """The last ``"completion_tokens":N`` in ``data``; 0 when there is none."""
    return _last_number(data, _USAGE)


def prompt_tokens(data: bytes) -> int:
    """The last ``"prompt_tokens":N`` in ``data``; 0 when there is none."""
    return _last_number(data, _PROMPT)


def _last_number(data: bytes, key: bytes) -> int:
    at = data.rfind(key)
    if at < 0:
        return 0
    found = _NUMBER.match(data, at + len(key))
    return int(found.group(1)) if found else 0


def error_message(body: bytes) -> str:
    """The message of an OpenAI error envelope (or the start of whatever ``body`` is)."""
    try:
        obj = json.loads(body or b"{}")
        message = obj["error"]["message"] if isinstance(obj.get("error"), dict) else obj["error"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return body[:200].decode("utf-8", "replace")
    return str(message)


def answer_text(body: bytes) -> str | None:
    """The text of a whole chat or completion answer (for prompt logging only)."""
    try:
        choice = json.loads(body)["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    text = (choice.get("message") or {}).get("content", choice.get("text"))
    return text if isinstance(text, str) else None


def stream_text(data: bytes) -> str:
    """The text of the SSE frames in ``data`` joined (for prompt logging only)."""
    parts = []
    for line in data.split(b"\n"):
        if not line.startswith(b"data: {"):
            continue
        try:
            choices = json.loads(line[6:]).get("choices") or [{}]
        except ValueError:
            continue
        choice = choices[0]
        text = (choice.get("delta") or {}).get("content", choice.get("text"))
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts)


def stream_error(chunk: bytes) -> tuple[int, str]:
    """The status a stream that ended with the error event in ``chunk`` stands for
    (504 for a timeout, else 502), and the event's message."""
    at = chunk.find(_ERROR[0])
    event = chunk[chunk.rfind(b"{", 0, at if at >= 0 else chunk.find(_ERROR[1])) :]
    status = 504 if b"upstream_timeout" in event else 502
    return status, error_message(event.split(b"\n", 1)[0])


Done = Callable[[float | None, int, bytes, int], None]
"""Called once when a watched stream ends: the timer's reading at the first chunk (None
without one), the completion tokens, the end of the stream if it is an error event
(else b""), and the prompt tokens of its usage chunk (0 without one)."""


class Watched:
    """Passes a stream through untouched and calls ``done`` once, when the stream ends,
    fails, is closed, or is dropped unfinished (its client left). A chunk that ends with
    ``data: [DONE]`` ends it too, before that chunk is handed on: a client stops reading
    at ``[DONE]``, and what it asks next (``/api/stats``, ``/metrics``) must find this
    request counted.

    Per chunk it only counts and keeps a reference (the work is microseconds per token
    otherwise): tokens come from the usage chunk at the end when the client asked for
    one, else one per chunk (what OpenAI-compatible servers send); an error event is
    looked for in the last two chunks only, which is where a stream ends with one.
    """

    __slots__ = ("_chunks", "_done", "_ended", "_first", "_last", "_prev", "_stream", "_timer")

    def __init__(
        self, stream: AsyncIterator[bytes], timer: Callable[[], float], done: Done
    ) -> None:
        self._stream: AsyncIterator[bytes] | None = stream
        self._timer = timer
        self._done = done
        self._first: float | None = None
        self._chunks = 0
        self._prev = self._last = b""
        self._ended = False

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
        if chunk.endswith(_DONE):
            self._end()
        return chunk

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        self._end()
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # a finalizer must not raise
            self._end()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        tail = self._prev + self._last
        usage = completion_tokens(tail)
        tokens = usage or self._chunks - (self._last == _DONE)
        error = tail if _ERROR[0] in tail or _ERROR[1] in tail else b""
        self._done(self._first, tokens, error, prompt_tokens(tail) if usage else 0)
