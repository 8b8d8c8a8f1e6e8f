"""A fake Ollama server (``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/tags``,
``/api/pull``, ``/api/version``) answering with recorded shapes, NDJSON when streaming."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.providers.fakes.base import Fake


class FakeOllama(Fake):
    """Ollama's ``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/tags`` and
    ``/api/pull`` (NDJSON when streaming, which is Ollama's default)."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/api/tags":
            return web.json_response(OLLAMA_TAGS)
        if request.path == "/api/version":
            if self.scenario == "down":
                return web.Response(status=503, text="Service Unavailable")
            return web.json_response({"version": "0.12.3"})
        body = json.loads(await request.read())
        if self.scenario == "missing":
            return web.json_response(
                {"error": f"model '{body.get('model')}' not found"}, status=404
            )
        if request.path == "/api/pull":
            lines = OLLAMA_PULL_FAILED if self.scenario == "pull_fails" else OLLAMA_PULL
            return await self.stream(request, "application/x-ndjson", [_nd(o) for o in lines])
        if request.path == "/api/embed":
            return web.json_response(
                {
                    "model": body["model"],
                    "embeddings": [[0.5, -0.25], [1.0, 2.0]][: len(body["input"])],
                    "total_duration": 14143917,
                    "load_duration": 1019500,
                    "prompt_eval_count": 8,
                }
            )
        generate = request.path == "/api/generate"
        if not body.get("stream", True):
            if generate:
                return web.json_response(OLLAMA_GENERATE)
            return web.json_response(OLLAMA_TOOL if self.scenario == "tool" else OLLAMA_TEXT)
        lines = (
            OLLAMA_GENERATE_STREAM
            if generate
            else OLLAMA_TOOL_STREAM
            if self.scenario == "tool"
            else OLLAMA_TEXT_STREAM
        )
        failure = {"error": "an error was encountered while running the model: unexpected EOF"}
        if self.scenario == "stream_error":  # after some text
            lines = [*lines[:1], failure]
        if self.scenario == "error_first":
            lines = [failure]
        cut = self.scenario == "cut"
        if cut:
            lines = lines[:1]
        return await self.stream(request, "application/x-ndjson", [_nd(o) for o in lines], cut=cut)


def _nd(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


_DONE = {
    "total_duration": 4883583458,
    "load_duration": 1334875,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 342546000,
    "eval_count": 7,
    "eval_duration": 4535599000,
}
OLLAMA_TEXT = {
    "model": "llama3.2",
    "created_at": "2025-06-01T10:00:00.52Z",
    "message": {"role": "assistant", "content": "Paris is the capital of France."},
    "done_reason": "stop",
    "done": True,
    **_DONE,
}
OLLAMA_TOOL = {
    **OLLAMA_TEXT,
    "message": {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    },
}
OLLAMA_TEXT_STREAM = [
    {
        "model": "llama3.2",
        "created_at": "2025-06-01T10:00:00.1Z",
        "message": {"role": "assistant", "content": "Paris is"},
        "done": False,
    },
    {
        "model": "llama3.2",
        "created_at": "2025-06-01T10:00:00.2Z",
        "message": {"role": "assistant", "content": " the capital of France."},
        "done": False,
    },
    {
        "model": "llama3.2",
        "created_at": "2025-06-01T10:00:00.3Z",
        "message": {"role": "assistant", "content": ""},
        "done_reason": "length",
        "done": True,
        **_DONE,
    },
]
OLLAMA_TOOL_STREAM = [
    {
        "model": "llama3.2",
        "created_at": "2025-06-01T10:00:00.1Z",
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        "done": False,
    },
    {
        "model": "llama3.2",
        "created_at": "2025-06-01T10:00:00.3Z",
        "message": {"role": "assistant", "content": ""},
        "done_reason": "stop",
        "done": True,
        **_DONE,
    },
]
OLLAMA_GENERATE = {
    "model": "llama3.2",
    "created_at": "2025-06-01T10:00:00.52Z",
    "response": " 4, 5, 6",
    "done": True,
    "done_reason": "length",
    "context": [1, 2, 3],
    **_DONE,
}
OLLAMA_GENERATE_STREAM = [
    {"model": "llama3.2", "created_at": "2025-06-01T10:00:00.1Z", "response": " 4,", "done": False},
    {"model": "llama3.2", "created_at": "2025-06-01T10:00:00.2Z", "response": " 5", "done": False},
    {
        "model": "llama3.2",
        "created_at": "2025-06-01T10:00:00.3Z",
        "response": "",
        "done": True,
        "done_reason": "stop",
        "context": [1, 2],
        **_DONE,
    },
]
OLLAMA_TAGS = {
    "models": [
        {
            "name": "llama3.2:latest",
            "model": "llama3.2:latest",
            "modified_at": "2025-05-04T17:37:44.706015396-07:00",
            "size": 2019393189,
            "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
            "details": {
                "format": "gguf",
                "family": "llama",
                "parameter_size": "3.2B",
                "quantization_level": "Q4_K_M",
            },
        },
        {
            "name": "nomic-embed-text:latest",
            "model": "nomic-embed-text:latest",
            "modified_at": "2025-05-01T10:00:00Z",
            "size": 274302450,
            "digest": "0a109f422b47e3a30ba2b10eca18548e944e8a23073ee3f3e947efcf3c45e59f",
            "details": {"format": "gguf", "family": "nomic-bert"},
        },
    ]
}
OLLAMA_PULL = [
    {"status": "pulling manifest"},
    {
        "status": "pulling dde5aa3fc5ff",
        "digest": "sha256:dde5aa3fc5ff",
        "total": 2019377376,
        "completed": 1048576,
    },
    {
        "status": "pulling dde5aa3fc5ff",
        "digest": "sha256:dde5aa3fc5ff",
        "total": 2019377376,
        "completed": 2019377376,
    },
    {"status": "verifying sha256 digest"},
    {"status": "writing manifest"},
    {"status": "success"},
]
OLLAMA_PULL_FAILED = [
    {"status": "pulling manifest"},
    {"error": "pull model manifest: file does not exist"},
]
