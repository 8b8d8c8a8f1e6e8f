"""What an OpenAI-shaped answer says, read once from its bytes: the tokens it used, how
it really ended, and its error. One :class:`Answer` per request, from
:func:`read_answer` (a whole body) or :class:`AnswerStream` (a stream passed through),
is what both the usage record (``governance/``) and the metrics and dashboard
statistics (``telemetry/requests.py``) are made from, so billing and metrics cannot
disagree.

Token counts come from the answer's ``usage`` (for streams, the final chunk's, which
OpenAI-compatible servers send when the client asked for
``stream_options.include_usage``). Without one they are estimated (prompt: request bytes
/ 4; completion: text-bearing stream frames, or answer text / 4) and the answer is marked
``estimated``. No JSON is parsed on the request path for answers in OpenAI's own shape;
only answers without ``usage`` and error bodies, which are rare, are.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

_USAGE = b'"usage"'
_ERROR_EVENT = re.compile(rb'data: ?\{\s*"error"\s*:\s*\{')
_DONE_AT_END = re.compile(rb"data: ?\[DONE\]\s*\Z")
_DONE = b"data: [DONE]\n\n"
# Inside a JSON string a quote is escaped, so generated text cannot look like these.
_ERROR = (b'"error":{', b'"error": {')
_decoder = json.JSONDecoder()
_COMMON = re.compile(
    rb'\s*:\s*\{\s*"prompt_tokens"\s*:\s*(\d{1,12})\s*,\s*"completion_tokens"\s*:\s*(\d{1,12})\s*[,}]'
)
"""``"usage"``'s value as OpenAI-compatible servers write it, prompt tokens first."""
_COMPLETION = b'"completion_tokens":'
_PROMPT = b'"prompt_tokens":'
_NUMBER = re.compile(rb"\s*(\d{1,12})")
COUNT_BYTES = 64 * 1024
"""A stream's chunks are kept (by reference) up to this much and their text frames
counted together: one pass in C instead of a few counts per chunk in Python."""


@dataclass(slots=True)
class Answer:
    """How one request was answered, as read from the answer's bytes."""

    status: int
    """As it really ended: a 200 stream that ended with an error event is 502 (504 for a
    timeout), one whose client left before its end 499."""
    prompt: int = 0
    completion: int = 0
    estimated: bool = False
    """The answer said nothing about its usage: the tokens are estimates."""
    target: str | None = None
    """The endpoint that answered (None: a cache hit, or nothing answered)."""
    cached: bool = False
    failed: bool = False
    """Nothing was answered (refused, or an error before an answer): no tokens."""
    first: float | None = None
    """A stream's timer reading at its first chunk."""
    error: bytes = b""
    """A stream's end when it is an error event (for the error's message)."""


def failed(status: int) -> Answer:
    """A request that got no answer (its error is rendered instead)."""
    return Answer(status, failed=True)


def read_answer(
    status: int,
    body: bytes,
    request_bytes: int,
    target: str | None = None,
    cached: bool = False,
) -> Answer:
    """A whole answer; an error answer (400 and above) used nothing."""
    if status >= 400:
        return Answer(status, target=target, cached=cached, failed=True)
    used = parse_usage(body)
    if used is None:
        estimate = max(1, request_bytes // 4)
        return Answer(status, estimate, answer_text_tokens(body), True, target, cached)
    return Answer(status, used[0], used[1], False, target, cached)


Done = Callable[[Answer], None]


class AnswerStream:
    """Passes a stream through untouched and calls ``done`` once with its
    :class:`Answer`, when the stream ends, fails, is closed, or is dropped unfinished
    (its client left). A chunk that ends with ``data: [DONE]`` ends it too, before that
    chunk is handed on: a client stops reading at ``[DONE]``, and what it asks next
    (``/api/stats``, ``/metrics``, its usage) must find this request counted.

    Per chunk it only keeps references: to the last three chunks (which hold the usage
    chunk and any error event a stream ends with), and to the chunks whose text frames
    are not counted yet (counted every ``COUNT_BYTES``, and at the end only when the
    stream has no usage chunk); the rest is read once, at the end.
    """

    __slots__ = (
        "_a",
        "_b",
        "_c",
        "_cached",
        "_done",
        "_ended",
        "_first",
        "_frames",
        "_kept",
        "_request_bytes",
        "_size",
        "_stream",
        "_target",
        "_timer",
    )

    def __init__(
        self,
        stream: AsyncIterator[bytes],
        request_bytes: int,
        timer: Callable[[], float],
        done: Done,
        target: str | None = None,
        cached: bool = False,
    ) -> None:
        self._stream: AsyncIterator[bytes] | None = stream
        self._request_bytes = request_bytes
        self._timer = timer
        self._done = done
        self._target = target
        self._cached = cached
        self._first: float | None = None
        self._frames = 0
        self._kept: list[bytes] = []
        self._size = 0
        self._a = self._b = self._c = b""
        self._ended = False

    def __aiter__(self) -> AnswerStream:
        return self

    async def __anext__(self) -> bytes:
        if self._stream is None:
            raise StopAsyncIteration
        try:
            chunk = await self._stream.__anext__()
        except StopAsyncIteration:
            self._end(left=False)
            raise
        except BaseException:
            self._end(left=True)
            raise
        if self._first is None:
            self._first = self._timer()
        self._kept.append(chunk)
        self._size += len(chunk)
        if self._size > COUNT_BYTES:
            self._count()
        self._a, self._b, self._c = self._b, self._c, chunk
        if chunk.endswith(_DONE):
            self._end(left=False)
        return chunk

    async def aclose(self) -> None:
        stream, self._stream = self._stream, None
        self._end(left=True)
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # a finalizer must not raise
            self._end(left=True)

    def _end(self, *, left: bool) -> None:
        if self._ended:
            return
        self._ended = True
        tail = self._a + self._b + self._c
        status = stream_status(tail, left=left)
        used = parse_usage(tail)
        if used is None:
            self._count()
            prompt, completion = max(1, self._request_bytes // 4), self._frames
        else:
            prompt, completion = used
        self._kept = []
        error = tail if _ERROR[0] in tail or _ERROR[1] in tail else b""
        self._done(
            Answer(
                status,
                prompt,
                completion,
                used is None,
                self._target,
                self._cached,
                first=self._first,
                error=error,
            )
        )

    def _count(self) -> None:
        self._frames += text_frames(b"".join(self._kept))
        self._kept.clear()
        self._size = 0


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
        if prompt is None and isinstance(completion, int):
            prompt = 0  # a usage that counts the answer only
        if isinstance(prompt, int) and isinstance(completion, int):
            return max(0, prompt), max(0, completion)
    return None


def text_frames(chunk: bytes) -> int:
    """Stream frames in ``chunk`` that carry generated text: about one token each.

    A stream is written in one style (chat ``content`` or completions ``text``, compact
    or spaced JSON), so the other styles are looked for only when the first finds none:
    two passes over the bytes for a chat stream, not eight."""
    count = chunk.count
    for key in (b'"content":"', b'"text":"', b'"content": "', b'"text": "'):
        n = count(key)
        if n:
            return n - count(key + b'"')
    return 0


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
    match = _ERROR_EVENT.search(tail) if b'"error"' in tail else None
    if match is not None:
        return 504 if b"upstream_timeout" in tail[match.start() :] else 502
    if left and _DONE_AT_END.search(tail) is None:
        return 499
    return 200


def completion_tokens(data: bytes) -> int:
    """The last ``"completion_tokens":N`` in ``data``; 0 when there is none."""
    return _last_number(data, _COMPLETION)


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
