"""Helpers for provider tests: building a ``Call``, and reading a ``Reply`` as a client
would, each object checked against the openai SDK's own response types."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionChunk

from modelplane.providers.base import Call, Kind, Reply, Timeouts

TIMEOUTS = Timeouts(connect_s=10.0, read_s=10.0)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def make_call(
    body: dict[str, Any],
    model: str = "upstream-model",
    kind: Kind = "chat",
    request_id: str = "req-42",
) -> Call:
    headers = {"traceparent": TRACEPARENT}
    raw = json.dumps(body).encode()
    return Call(kind, raw, body, model, bool(body.get("stream")), request_id, headers)


def body_of(reply: Reply) -> dict[str, Any]:
    assert reply.body is not None and reply.stream is None
    obj: dict[str, Any] = json.loads(reply.body)
    return obj


def completion(reply: Reply) -> ChatCompletion:
    assert reply.status == 200, reply.body
    assert reply.content_type == "application/json"
    return ChatCompletion.model_validate(body_of(reply))


def error(reply: Reply) -> dict[str, Any]:
    obj = body_of(reply)
    assert set(obj) == {"error"}
    assert set(obj["error"]) == {"message", "type", "param", "code"}
    err: dict[str, Any] = obj["error"]
    return err


@dataclass
class Streamed:
    """A streamed answer as a client sees it."""

    chunks: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    done: bool = False

    @property
    def text(self) -> str:
        return "".join(
            c["choices"][0]["delta"].get("content") or "" for c in self.chunks if c["choices"]
        )

    @property
    def finish(self) -> str | None:
        reasons = [c["choices"][0]["finish_reason"] for c in self.chunks if c["choices"]]
        return next((r for r in reasons if r), None)

    @property
    def usage(self) -> dict[str, Any] | None:
        last = self.chunks[-1] if self.chunks else {}
        return last.get("usage") if not last.get("choices") else None

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """Tool calls assembled from their deltas, as the openai SDK does."""
        calls: dict[int, dict[str, Any]] = {}
        for c in self.chunks:
            for tc in (c["choices"][0]["delta"].get("tool_calls") or []) if c["choices"] else []:
                call = calls.setdefault(tc["index"], {"id": None, "name": None, "arguments": ""})
                call["id"] = tc.get("id") or call["id"]
                fn = tc.get("function") or {}
                call["name"] = fn.get("name") or call["name"]
                call["arguments"] += fn.get("arguments") or ""
        return [calls[i] for i in sorted(calls)]


async def read_stream(reply: Reply, kind: Kind = "chat") -> Streamed:
    assert reply.status == 200, reply.body
    assert reply.content_type.startswith("text/event-stream") and reply.stream is not None
    raw = b"".join([piece async for piece in reply.stream]).replace(b"\r\n", b"\n")
    out = Streamed()
    for event in raw.split(b"\n\n"):
        if not event:
            continue
        assert not out.done and not out.error, "nothing may follow [DONE] or an error"
        assert event.startswith(b"data: ")
        data = event.removeprefix(b"data: ")
        if data == b"[DONE]":
            out.done = True
            continue
        obj = json.loads(data)
        if "error" in obj:
            out.error = obj["error"]
            continue
        if kind == "chat":
            ChatCompletionChunk.model_validate(obj)
        else:  # the SDK reuses Completion for chunks, whose finish_reason is null midway
            assert obj["object"] == "text_completion"
            assert set(obj["choices"][0]) == {"text", "index", "logprobs", "finish_reason"}
        out.chunks.append(obj)
    return out
