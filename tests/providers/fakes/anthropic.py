"""A fake Anthropic Messages API (``POST /v1/messages``, ``GET /v1/models``) answering
with shapes recorded from api.anthropic.com, including its named SSE events."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.providers.fakes.base import Fake


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class FakeAnthropic(Fake):
    """``POST /v1/messages`` and ``GET /v1/models`` of api.anthropic.com."""

    API_KEY = "sk-ant-test-0123456789"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("x-api-key") != self.API_KEY:
            return _anthropic_error(401, "authentication_error", "invalid x-api-key")
        if request.path == "/v1/models":
            return web.json_response(_anthropic_models(request.query.get("after_id")))
        body = json.loads(await request.read())
        s = self.scenario
        if s == "rate_limited":
            resp = _anthropic_error(
                429,
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            )
            resp.headers["retry-after"] = "17"
            return resp
        if s == "overloaded":
            return _anthropic_error(529, "overloaded_error", "Overloaded")
        if s == "too_long":
            return _anthropic_error(
                400, "invalid_request_error", "prompt is too long: 208310 tokens > 200000 maximum"
            )
        if not body.get("stream"):
            return web.json_response(ANTHROPIC_TOOL if s == "tool" else ANTHROPIC_TEXT)
        events = ANTHROPIC_TOOL_STREAM if s == "tool" else ANTHROPIC_TEXT_STREAM
        overloaded = {
            "type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"},
        }
        if s == "stream_error":  # after some text
            events = [*ANTHROPIC_TEXT_STREAM[:4], ("error", overloaded)]
        if s == "error_first":  # before any text: Anthropic's usual way to say "overloaded"
            events = [*ANTHROPIC_TEXT_STREAM[:3], ("error", overloaded)]
        if s == "stream_ends_early":
            events = ANTHROPIC_TEXT_STREAM[:4]
        return await self.stream(
            request, "text/event-stream; charset=utf-8", [_sse(e, d) for e, d in events]
        )


def _anthropic_error(status: int, kind: str, message: str) -> web.Response:
    body = {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }
    return web.json_response(body, status=status)


def _anthropic_models(after: str | None) -> dict[str, Any]:
    first = {
        "type": "model",
        "id": "claude-sonnet-4-20250514",
        "display_name": "Claude Sonnet 4",
        "created_at": "2025-05-22T00:00:00Z",
    }
    second = {
        "type": "model",
        "id": "claude-3-5-haiku-20241022",
        "display_name": "Claude Haiku 3.5",
        "created_at": "2024-10-22T00:00:00Z",
    }
    if after is None:
        return {"data": [first], "has_more": True, "first_id": first["id"], "last_id": first["id"]}
    return {"data": [second], "has_more": False, "first_id": second["id"], "last_id": second["id"]}


ANTHROPIC_TEXT = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-20250514",
    "content": [{"type": "text", "text": "Paris is the capital of France."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 21,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 4,
        "output_tokens": 9,
        "service_tier": "standard",
    },
}
ANTHROPIC_TOOL = {
    **ANTHROPIC_TEXT,
    "content": [
        {"type": "text", "text": "I'll look that up."},
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "input": {"city": "Paris", "unit": "celsius"},
        },
    ],
    "stop_reason": "tool_use",
    "usage": {"input_tokens": 380, "output_tokens": 57},
}
ANTHROPIC_TEXT_STREAM: list[tuple[str, dict[str, Any]]] = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                **ANTHROPIC_TEXT,
                "content": [],
                "stop_reason": None,
                "usage": {
                    "input_tokens": 21,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 4,
                    "output_tokens": 1,
                },
            },
        },
    ),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Paris is the"},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": " capital of France."},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 9},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]
ANTHROPIC_TOOL_STREAM: list[tuple[str, dict[str, Any]]] = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                **ANTHROPIC_TOOL,
                "content": [],
                "stop_reason": None,
                "usage": {"input_tokens": 380, "output_tokens": 1},
            },
        },
    ),
    (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "I'll look that up."},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_01A09q90qw90lq917835lq9",
                "name": "get_weather",
                "input": {},
            },
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": ""},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"city": "Pa'},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": 'ris", "unit": "celsius"}'},
        },
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 57},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]
