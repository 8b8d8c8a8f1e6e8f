"""The ``echo`` provider: a real modelplane provider whose "upstream" is this process.

It speaks no network protocol: ``send`` answers at once with an OpenAI-shaped reply,
whole or streamed, so a test can see a plugin provider serve through the gateway.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from modelplane.providers.base import Call, Kind, Reply, Target, Timeouts
from modelplane_echo import count_words, last_user_text, pieces


class EchoProvider:
    name: ClassVar[str] = "echo"
    default_base_url: ClassVar[str] = "http://echo.invalid"
    kinds: ClassVar[frozenset[Kind]] = frozenset({"chat"})
    health_path: ClassVar[str | None] = None

    async def send(self, target: Target, call: Call, *, timeouts: Timeouts) -> Reply:
        messages = call.obj.get("messages") or []
        out = pieces(last_user_text(messages))
        usage = {
            "prompt_tokens": count_words(messages),
            "completion_tokens": len(out),
            "total_tokens": count_words(messages) + len(out),
        }
        base = {
            "id": f"chatcmpl-{call.request_id}",
            "created": int(time.time()),
            "model": call.model,
        }
        if not call.stream:
            body = {
                **base,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(out)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
            return Reply(200, "application/json", json.dumps(body).encode())
        options = call.obj.get("stream_options") or {}
        return Reply(200, "text/event-stream", None, _stream(base, out, usage, options))

    async def models(self, target: Target, *, timeouts: Timeouts) -> list[str]:
        return []

    async def health(self, target: Target, *, timeouts: Timeouts) -> None:
        return None


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


async def _stream(
    base: dict[str, Any], out: list[str], usage: dict[str, int], options: dict[str, Any]
) -> AsyncIterator[bytes]:
    chunk = {**base, "object": "chat.completion.chunk"}
    first = {"role": "assistant", "content": ""}
    yield _event({**chunk, "choices": [{"index": 0, "delta": first, "finish_reason": None}]})
    for piece in out:
        delta = {"content": piece}
        yield _event({**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    yield _event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if options.get("include_usage"):
        yield _event({**chunk, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"
