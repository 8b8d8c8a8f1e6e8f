"""A scriptable OpenAI-compatible upstream for gateway tests (a fake, on loopback).

Each ``FakeUpstream`` is one aiohttp server in its own thread. Tests set ``mode`` (what
every request gets) or push one-off behaviours onto ``script``; ``calls`` records the
bodies received, in order. ``GET /v1/models`` (what the gateway's health checks of an
``openai`` endpoint ask) answers as ``models`` says: ``ok``, or ``500`` with a body that
echoes the request's ``authorization`` header (as some upstreams echo part of a wrong
key); ``model_checks`` records the headers of each.

A chat request can also steer its own answer, whatever the order requests arrive in:
words ``mode=<mode>``, ``prompt=<n>`` and ``tokens=<n>`` in its last message set its
behaviour, its ``usage.prompt_tokens`` and its completion tokens (a stream then sends
that many text chunks); ``usage=none`` leaves ``usage`` out of a whole answer. Streams
end with a usage chunk when the request asks for ``stream_options.include_usage``, as
OpenAI's do.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from aiohttp import web

MODES = (
    "ok",
    "500",
    "503",
    "429",
    "context",
    "bad_request",
    "hang",
    "break_stream",
    "gate",
    "gate_stream",
)


def completion(name: str, model: str, prompt: int = 3, tokens: int = 3) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"hello from {name}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": tokens,
            "total_tokens": prompt + tokens,
        },
    }


def usage_chunk(model: str, prompt: int, tokens: int) -> bytes:
    obj = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": tokens,
            "total_tokens": prompt + tokens,
        },
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def directives(body: dict[str, Any]) -> dict[str, str]:
    """``key=value`` words of the last message (see the module docstring)."""
    messages = body.get("messages") or [{}]
    content = messages[-1].get("content")
    if not isinstance(content, str):
        return {}
    return dict(w.split("=", 1) for w in content.split() if "=" in w)


def chunk(model: str, content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    obj = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _error(status: int, message: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": "x", "param": None, "code": code}}
    return web.json_response(body, status=status)


class FakeUpstream:
    def __init__(self, name: str) -> None:
        self.name = name
        self.mode = "ok"
        self.script: deque[str] = deque()
        self.calls: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.models = "ok"
        self.model_checks: list[dict[str, str]] = []
        self.gate = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def close(self) -> None:
        self.gate.set()
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def reset(self, mode: str = "ok") -> None:
        self.mode = mode
        self.script.clear()
        self.calls.clear()
        self.headers.clear()
        self.models = "ok"
        self.model_checks.clear()
        self.gate.clear()

    def each_test(self) -> Iterator[None]:
        """For an autouse fixture: a clean slate before each test, and no request left
        waiting on the gate after it (``yield from fake.each_test()``)."""
        self.reset()
        yield
        self.gate.set()

    async def _models(self, request: web.Request) -> web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.model_checks.append(headers)
        if self.models == "500":
            auth = headers.get("authorization", "")
            return _error(500, f"models are down (you sent {auth})", "internal_error")
        return web.json_response({"object": "list", "data": [{"id": f"upstream-{self.name}"}]})

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(body)
        return web.json_response(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                "model": body["model"],
                "usage": {"prompt_tokens": 2, "total_tokens": 2},
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.calls.append(body)
        self.headers.append({k.lower(): v for k, v in request.headers.items()})
        steer = directives(body)
        if "mode" in steer:
            mode = steer["mode"]
        else:
            mode = self.script.popleft() if self.script else self.mode
        prompt, tokens = int(steer.get("prompt", 3)), int(steer.get("tokens", 3))
        if mode == "500":
            return _error(500, "internal failure", "internal_error")
        if mode == "503":
            return _error(503, "busy", "overloaded")
        if mode == "429":
            return _error(429, "slow down", "rate_limit_exceeded")
        if mode == "context":
            return _error(400, "This model's maximum context length is 8 tokens", "x")
        if mode == "bad_request":
            return _error(400, "temperature must be at most 2", "invalid_parameter")
        if mode in ("hang", "gate"):  # held until the test (or close) opens the gate
            await asyncio.get_running_loop().run_in_executor(None, self.gate.wait, 30)
        model = body["model"]
        if not body.get("stream"):
            answer = completion(self.name, model, prompt, tokens)
            if steer.get("usage") == "none":  # as some upstreams answer
                del answer["usage"]
            return web.json_response(answer)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        if "tokens" in steer:
            for i in range(tokens):
                await resp.write(chunk(model, f"t{i} "))
        else:
            await resp.write(chunk(model, f"hello from {self.name}"))
        if mode == "break_stream":
            request.transport.close()  # type: ignore[union-attr]
            return resp
        if mode == "gate_stream":  # started, then held until the gate opens
            await asyncio.get_running_loop().run_in_executor(None, self.gate.wait, 30)
        await resp.write(chunk(model, None, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(usage_chunk(model, prompt, tokens))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
