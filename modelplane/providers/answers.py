"""OpenAI answers written from a translated upstream's answer, once for every provider.

A non-streamed answer becomes one ``chat.completion`` (``chat_completion``). A streamed
one is read by a provider-specific parser into neutral events (``TextDelta``,
``ToolStart``/``ToolArgs``, ``Finish``, ``Tokens``, ``Failed``), which ``ChunkWriter``
turns into ``chat.completion.chunk`` SSE frames exactly as OpenAI sends them: a role
chunk first, content and tool-call deltas, a finish chunk, a usage chunk when the client
asked for ``stream_options.include_usage``, then ``[DONE]``.

``exchange`` does the HTTP part every translating provider shares. For a stream it
returns once the first text or tool call has arrived, so the gateway's time-to-first-
byte timeout measures the model, and an error the upstream reports in the stream before
any output (Anthropic's "overloaded" after a 200, a Bedrock throttling exception) comes
back as an error ``Reply`` with its status, which the gateway can retry or fall back on.
"""

from __future__ import annotations

import base64
import json
import logging
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Hashable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import yarl

from modelplane.providers.base import Call, Reply, Timeouts
from modelplane.providers.client import client_timeout
from modelplane.providers.translate import ToolCall
from modelplane.providers.wire import DONE, SSE, error_event, error_reply, sse

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Usage:
    prompt: int = 0
    completion: int = 0

    def openai(self) -> dict[str, int]:
        total = self.prompt + self.completion
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": total,
        }


@dataclass(slots=True)
class Message:
    """A whole assistant answer, in neutral form."""

    text: str
    tool_calls: list[ToolCall]
    finish: str
    """An OpenAI finish reason: stop, length, tool_calls or content_filter."""
    usage: Usage


def completion_id(call: Call) -> str:
    return f"{'chatcmpl' if call.kind == 'chat' else 'cmpl'}-{call.request_id}"


def chat_completion(call: Call, msg: Message) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": msg.text or None, "refusal": None}
    finish = msg.finish
    if msg.tool_calls:
        message["tool_calls"] = [
            {
                "id": tc.id,
                "type": "function",
                "function": {"name": tc.name, "arguments": tc.arguments},
            }
            for tc in msg.tool_calls
        ]
        finish = "tool_calls" if finish == "stop" else finish
    elif not msg.text:
        message["content"] = ""
    return {
        "id": completion_id(call),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": call.obj.get("model", call.model),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": msg.usage.openai(),
    }


def text_completion(call: Call, text: str, finish: str, usage: Usage) -> dict[str, Any]:
    return {
        "id": completion_id(call),
        "object": "text_completion",
        "created": int(time.time()),
        "model": call.obj.get("model", call.model),
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        "usage": usage.openai(),
    }


def embedding_list(
    call: Call, vectors: Sequence[Sequence[float]], prompt_tokens: int
) -> dict[str, Any]:
    """An OpenAI embeddings answer; ``encoding_format: base64`` (the openai SDK's default)
    packs each vector as little-endian float32, as OpenAI does."""
    b64 = call.obj.get("encoding_format") == "base64"
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
            if b64
            else list(v),
        }
        for i, v in enumerate(vectors)
    ]
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {
        "object": "list",
        "data": data,
        "model": call.obj.get("model", call.model),
        "usage": usage,
    }


def embedding_inputs(obj: Mapping[str, Any]) -> list[str] | None:
    """The ``input`` of an embeddings request as strings; ``None`` for token arrays."""
    value = obj.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolStart:
    key: Hashable
    """The upstream's handle for this call (a block index, or any unique value)."""
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolArgs:
    key: Hashable
    fragment: str


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token counts as they become known; either may come alone."""

    prompt: int | None = None
    completion: int | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The upstream reported an error inside the stream."""

    status: int
    message: str
    code: str | None = None


Event = TextDelta | ToolStart | ToolArgs | Finish | Tokens | Failed


@dataclass(slots=True)
class ChunkWriter:
    """One stream's OpenAI chunks; keeps what arrives before it is written (the finish
    reason, token counts) and each tool call's index."""

    call: Call
    include_usage: bool
    created: int = field(default_factory=lambda: int(time.time()))
    usage: Usage = field(default_factory=Usage)
    finish: str | None = None
    tools: dict[Hashable, int] = field(default_factory=dict)

    def _head(self) -> dict[str, Any]:
        chat = self.call.kind == "chat"
        return {
            "id": completion_id(self.call),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": self.created,
            "model": self.call.obj.get("model", self.call.model),
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        obj = self._head()
        if self.call.kind == "chat":
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            text = delta.get("content", "")
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        obj["choices"] = [choice]
        if self.include_usage:
            obj["usage"] = None
        return sse(obj)

    def start(self) -> bytes:
        if self.call.kind != "chat":
            return b""
        return self.chunk({"role": "assistant", "content": ""})

    def feed(self, ev: Event) -> bytes:
        """SSE bytes for one event (possibly none)."""
        if isinstance(ev, TextDelta):
            return self.chunk({"content": ev.text}) if ev.text else b""
        if isinstance(ev, ToolStart):
            index = self.tools[ev.key] = len(self.tools)
            fn = {"name": ev.name, "arguments": ""}
            call = {"index": index, "id": ev.id, "type": "function", "function": fn}
            return self.chunk({"tool_calls": [call]})
        if isinstance(ev, ToolArgs):
            known = self.tools.get(ev.key)
            if known is None or not ev.fragment:
                return b""
            return self.chunk(
                {"tool_calls": [{"index": known, "function": {"arguments": ev.fragment}}]}
            )
        if isinstance(ev, Finish):
            self.finish = ev.reason
        elif isinstance(ev, Tokens):
            self.usage.prompt = self.usage.prompt if ev.prompt is None else ev.prompt
            self.usage.completion = (
                self.usage.completion if ev.completion is None else ev.completion
            )
        return b""

    def end(self) -> bytes:
        finish = self.finish or "stop"
        if finish == "stop" and self.tools:
            finish = "tool_calls"
        out = self.chunk({}, finish)
        if self.include_usage:
            out += sse({**self._head(), "choices": [], "usage": self.usage.openai()})
        return out + DONE


# An upstream body that is not what its protocol promises (bad JSON, missing fields).
_MALFORMED = (ValueError, LookupError, TypeError, AttributeError)
_BROKEN = (TimeoutError, aiohttp.ClientError, *_MALFORMED)


async def relay(
    resp: aiohttp.ClientResponse,
    head: list[Event],
    events: AsyncGenerator[Event, None],
    writer: ChunkWriter,
) -> AsyncIterator[bytes]:
    """The client's stream: the events already read (``head``), then the rest. Owns
    ``resp``, and ends with an error event, never an exception, when the upstream fails
    or stops before its answer was complete."""
    rid = writer.call.request_id
    pending = writer.start()  # the role chunk goes out with the first real output
    try:
        async with aclosing(events) as rest, aclosing(_joined(head, rest)) as evs:
            async for ev in evs:
                if isinstance(ev, Failed):
                    log.warning("request %s: upstream error in stream (%s)", rid, ev.status)
                    yield error_event(ev.status, ev.message, ev.code)
                    return
                if out := writer.feed(ev):
                    yield pending + out
                    pending = b""
        if writer.finish is None:
            log.warning("request %s: upstream stream ended before its answer did", rid)
            yield error_event(502, "the upstream ended the answer early; retry the request")
            return
        yield pending + writer.end()
    except _BROKEN as exc:
        log.warning("request %s: upstream stream broke (%s)", rid, type(exc).__name__)
        yield error_event(502, "the upstream failed in the middle of the answer; retry the request")
    finally:
        resp.release()


async def _joined(head: list[Event], rest: AsyncIterator[Event]) -> AsyncGenerator[Event, None]:
    for ev in head:
        yield ev
    async for ev in rest:
        yield ev


async def _first_output(events: AsyncGenerator[Event, None]) -> list[Event] | Failed:
    """Read events up to the first that the client will see (text or a tool call), so
    that ``send`` returns when the answer has begun; an upstream error before that is
    returned instead, for the gateway to retry or fall back as on an error status."""
    head: list[Event] = []
    async for ev in events:
        if isinstance(ev, Failed):
            return ev
        head.append(ev)
        if isinstance(ev, ToolStart) or (isinstance(ev, TextDelta) and ev.text):
            break
    return head


async def exchange(
    session: aiohttp.ClientSession,
    url: str | yarl.URL,
    call: Call,
    *,
    timeouts: Timeouts,
    body: bytes,
    headers: Mapping[str, str],
    error: Callable[[int, bytes, Mapping[str, str]], Reply],
    answer: Callable[[Any], dict[str, Any]],
    events: Callable[[aiohttp.ClientResponse], AsyncGenerator[Event, None]] | None = None,
    include_usage: bool = False,
    params: Mapping[str, str] | None = None,
) -> Reply:
    """POST a translated request; answer with the upstream's error as an envelope, a
    translated JSON body, or (when ``events`` is given) a translated SSE stream, returned
    once its first text or tool call has arrived."""
    resp: aiohttp.ClientResponse | None
    resp = await session.post(
        url, data=body, headers=headers, params=params, timeout=client_timeout(timeouts)
    )
    try:
        if resp.status >= 400:
            return error(resp.status, await resp.read(), resp.headers)
        if events is not None:
            stream = events(resp)
            try:
                head = await _first_output(stream)
            except _MALFORMED:
                await stream.aclose()
                return error_reply(502, "the upstream's stream is not what its API documents")
            if isinstance(head, Failed):
                await stream.aclose()
                return error_reply(head.status, head.message, head.code)
            reply = Reply(
                200, SSE, None, relay(resp, head, stream, ChunkWriter(call, include_usage))
            )
            resp = None  # the stream owns it now
            return reply
        data = await resp.read()
        try:
            obj = answer(json.loads(data))
        except _MALFORMED:
            return error_reply(502, "the upstream's answer is not the JSON its API documents")
        return Reply(200, "application/json", json.dumps(obj).encode())
    finally:
        if resp is not None:
            resp.release()


async def lines(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The response body split into lines (without ``\\r\\n``), however long they are."""
    pending: list[bytes] = []
    async for chunk in resp.content.iter_any():
        start = 0
        while (cut := chunk.find(b"\n", start)) >= 0:
            pending.append(chunk[start:cut])
            yield b"".join(pending).removesuffix(b"\r")
            pending.clear()
            start = cut + 1
        if start < len(chunk):
            pending.append(chunk[start:])
    if pending:
        yield b"".join(pending).removesuffix(b"\r")


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    """Server-sent events as ``(event, data)``; ``event`` is ``message`` when unnamed."""
    event, data = "", list[str]()
    async for raw in lines(resp):
        if not raw:
            if data:
                yield event or "message", "\n".join(data)
            event, data = "", list[str]()
            continue
        if raw.startswith(b":"):
            continue
        name, _, value = raw.decode().partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
    if data:
        yield event or "message", "\n".join(data)


async def json_lines(resp: aiohttp.ClientResponse) -> AsyncIterator[Any]:
    """Newline-delimited JSON objects."""
    async for raw in lines(resp):
        if raw.strip():
            yield json.loads(raw)
