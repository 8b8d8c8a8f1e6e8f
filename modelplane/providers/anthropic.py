"""Anthropic's Messages API (``POST /v1/messages``), translated both ways.

System messages become the top-level ``system``; tool definitions, ``tool_choice``,
assistant tool calls (``tool_use`` blocks) and tool results (``tool_result`` blocks)
map one to one; images go as base64 or URL sources. ``max_tokens`` is required by
Anthropic: a request without one gets the ``max_tokens`` option, else 4096.
``response_format`` has no Anthropic equivalent and is not sent.

Options: ``anthropic_version`` (default ``2023-06-01``), ``max_tokens``,
``anthropic_beta`` (sent as the ``anthropic-beta`` header), ``headers``.
Credentials: ``api_key`` (sent as ``x-api-key``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any, ClassVar

import aiohttp

from modelplane.providers.answers import (
    Event,
    Failed,
    Finish,
    Message,
    TextDelta,
    Tokens,
    ToolArgs,
    ToolStart,
    Usage,
    chat_completion,
    exchange,
    sse_events,
)
from modelplane.providers.base import Call, Kind, Reply, Target, Timeouts
from modelplane.providers.client import Client, client_timeout
from modelplane.providers.translate import (
    Chat,
    Image,
    Part,
    Text,
    ToolCall,
    ToolResult,
    Untranslatable,
    parse_chat,
)
from modelplane.providers.wire import (
    error_message,
    error_reply,
    passed_headers,
    probe,
    probe_path,
)

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Anthropic's error types, as statuses (529 "overloaded" is a 503 to everyone else) and
# as the OpenAI-style codes clients know.
_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 503,
}
_CODES = {
    "authentication_error": "invalid_api_key",
    "permission_error": "permission_denied",
    "not_found_error": "not_found",
    "overloaded_error": "overloaded",
    "api_error": "upstream_error",
}


class AnthropicProvider:
    name: ClassVar[str] = "anthropic"
    default_base_url: ClassVar[str] = "https://api.anthropic.com"
    kinds: ClassVar[frozenset[Kind]] = frozenset({"chat"})
    health_path: ClassVar[str | None] = "/v1/models"

    def __init__(self) -> None:
        self._client = Client()

    async def close(self) -> None:
        await self._client.close()

    def _headers(self, target: Target, extra: Mapping[str, str]) -> dict[str, str]:
        opts = target.options
        headers = {
            "content-type": "application/json",
            "anthropic-version": str(opts.get("anthropic_version") or "2023-06-01"),
        }
        if opts.get("anthropic_beta"):
            headers["anthropic-beta"] = str(opts["anthropic_beta"])
        headers.update(extra)
        headers.update(opts.get("headers") or {})
        if key := target.credentials.get("api_key"):
            headers["x-api-key"] = key
        return headers

    async def send(self, target: Target, call: Call, *, timeouts: Timeouts) -> Reply:
        try:
            chat = parse_chat(call.obj)
            body = request_body(chat, call.model, call.stream, target.options.get("max_tokens"))
        except Untranslatable as exc:
            return error_reply(400, exc.message, "invalid_parameter")
        return await exchange(
            self._client.session(),
            _base(target) + "/v1/messages",
            call,
            timeouts=timeouts,
            body=json.dumps(body).encode(),
            headers=self._headers(target, call.headers),
            error=_error,
            answer=lambda data: chat_completion(call, _message(data)),
            events=_events if call.stream else None,
            include_usage=chat.include_usage,
        )

    async def models(self, target: Target, *, timeouts: Timeouts) -> list[str]:
        names: list[str] = []
        params = {"limit": "1000"}
        while True:
            async with self._client.session().get(
                _base(target) + "/v1/models",
                headers=self._headers(target, {}),
                params=params,
                timeout=client_timeout(timeouts),
            ) as resp:
                if resp.status != 200:
                    return names
                data: Any = await resp.json(content_type=None)
            names += [m["id"] for m in data.get("data", []) if isinstance(m, dict) and "id" in m]
            if not data.get("has_more") or not data.get("last_id"):
                return names
            params = {"limit": "1000", "after_id": str(data["last_id"])}

    async def health(self, target: Target, *, timeouts: Timeouts) -> None:
        path = probe_path(target, self.health_path)
        # One model is enough to know the API and the key work.
        params = {"limit": "1"} if path == self.health_path else None
        url, headers = _base(target) + path, self._headers(target, {})
        await probe(self._client.session(), url, path, headers, params, timeouts=timeouts)


def _base(target: Target) -> str:
    return (target.base_url or AnthropicProvider.default_base_url).rstrip("/")


def request_body(chat: Chat, model: str, stream: bool, default_max: Any) -> dict[str, Any]:
    """The Messages API body for a chat request."""
    messages = [
        {"role": turn.role, "content": [_block(p) for p in turn.parts]}
        for turn in chat.turns
        if turn.parts
    ]
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": chat.max_tokens or int(default_max or 4096),
        "messages": messages,
    }
    if chat.system:
        body["system"] = "\n\n".join(chat.system)
    if stream:
        body["stream"] = True
    if chat.temperature is not None:
        body["temperature"] = chat.temperature
    if chat.top_p is not None:
        body["top_p"] = chat.top_p
    if chat.stop:
        body["stop_sequences"] = chat.stop
    if chat.user:
        body["metadata"] = {"user_id": chat.user}
    if chat.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in chat.tools
        ]
        choice: dict[str, Any] = {"type": "auto"}
        if chat.tool_choice == "required":
            choice = {"type": "any"}
        elif chat.tool_choice == "none":
            choice = {"type": "none"}
        elif chat.tool_choice not in (None, "auto"):
            choice = {"type": "tool", "name": chat.tool_choice}
        if chat.parallel_tool_calls is False and choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
        body["tool_choice"] = choice
    return body


def _block(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, Image):
        if part.url:
            return {"type": "image", "source": {"type": "url", "url": part.url}}
        source = {"type": "base64", "media_type": part.media_type, "data": part.data}
        return {"type": "image", "source": source}
    if isinstance(part, ToolCall):
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": part.args()}
    assert isinstance(part, ToolResult)
    return {"type": "tool_result", "tool_use_id": part.id, "content": part.content}


def _usage(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    return Usage(_prompt_tokens(usage), int(usage.get("output_tokens") or 0))


def _prompt_tokens(usage: Mapping[str, Any]) -> int:
    # OpenAI counts cached prompt tokens in prompt_tokens; Anthropic reports them apart.
    keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return sum(int(usage.get(k) or 0) for k in keys)


def _message(data: Any) -> Message:
    text: list[str] = []
    calls: list[ToolCall] = []
    for block in data["content"]:
        if block.get("type") == "text":
            text.append(block["text"])
        elif block.get("type") == "tool_use":
            calls.append(ToolCall(block["id"], block["name"], json.dumps(block.get("input") or {})))
    finish = _FINISH.get(data.get("stop_reason") or "", "stop")
    return Message("".join(text), calls, finish, _usage(data.get("usage")))


def _error(status: int, body: bytes, headers: Mapping[str, str]) -> Reply:
    message = error_message(body, f"Anthropic answered HTTP {status}")
    kind = _error_type(body)
    status = 503 if status == 529 else status
    return error_reply(status, message, _CODES.get(kind), passed_headers(headers))


def _error_type(body: bytes) -> str:
    try:
        kind = json.loads(body)["error"]["type"]
    except (ValueError, KeyError, TypeError):
        return ""
    return kind if isinstance(kind, str) else ""


async def _events(resp: aiohttp.ClientResponse) -> AsyncGenerator[Event, None]:
    async for event, data in sse_events(resp):
        obj = json.loads(data)
        kind = obj.get("type", event)
        if kind == "message_start":
            usage = obj["message"].get("usage") or {}
            yield Tokens(_prompt_tokens(usage), usage.get("output_tokens"))
        elif kind == "content_block_start":
            block = obj["content_block"]
            if block.get("type") == "tool_use":
                yield ToolStart(obj["index"], block["id"], block["name"])
            elif block.get("type") == "text":
                yield TextDelta(block.get("text") or "")
        elif kind == "content_block_delta":
            delta = obj["delta"]
            if delta.get("type") == "text_delta":
                yield TextDelta(delta["text"])
            elif delta.get("type") == "input_json_delta":
                yield ToolArgs(obj["index"], delta.get("partial_json") or "")
        elif kind == "message_delta":
            usage = obj.get("usage") or {}
            if "input_tokens" in usage:
                yield Tokens(_prompt_tokens(usage))
            yield Tokens(completion=usage.get("output_tokens"))
            reason = (obj.get("delta") or {}).get("stop_reason")
            if reason:
                yield Finish(_FINISH.get(reason, "stop"))
        elif kind == "message_stop":
            return
        elif kind == "error":
            err = obj.get("error") or {}
            etype = str(err.get("type") or "")
            message = str(err.get("message") or "Anthropic reported an error")
            yield Failed(_STATUS.get(etype, 502), message, _CODES.get(etype))
            return
