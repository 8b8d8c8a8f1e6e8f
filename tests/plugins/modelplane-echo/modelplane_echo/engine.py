"""The ``echo`` engine: a real modelplane engine that repeats the last user message."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from modelplane.engines.base import Capabilities, Delta, Engine, GenerateRequest
from modelplane.engines.spec import Container, Launch, LaunchContext
from modelplane_echo import count_words, last_user_text, pieces


class EchoEngine:
    capabilities = Capabilities(chat=True, completions=True)

    def __init__(self, model: str) -> None:
        self.model_id = model
        self.served = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        if request.kind == "chat":
            text, prompt_tokens = last_user_text(request.messages), count_words(request.messages)
        else:
            text, prompt_tokens = request.prompt, len(request.prompt.split())
        out = pieces(text)
        limit = request.params.max_tokens
        finish: Any = "stop"
        if limit is not None and len(out) > limit:
            out, finish = out[:limit], "length"
        for piece in out[:-1]:
            yield Delta(text=piece)
        self.served += 1
        yield Delta(
            text=out[-1] if out else "",
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(out),
        )

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "model": self.model_id, "served": self.served}


class EchoSpec:
    name = "echo"
    capabilities = EchoEngine.capabilities
    health_path = "/health"
    metrics_path: str | None = "/metrics"

    def check(self, model: str, options: Mapping[str, Any]) -> None:
        if options:
            raise ValueError(f"options.{next(iter(options))}: the echo engine takes no options")

    def _args(self, model: str, host: str, port: int) -> list[str]:
        return [
            *("engine", "serve", "--engine", self.name, "--model", model),
            *("--host", host, "--port", str(port), "--options", json.dumps({})),
        ]

    def command(self, model: str, options: Mapping[str, Any], ctx: LaunchContext) -> Launch:
        argv = [ctx.python, "-m", "modelplane", *self._args(model, ctx.host, ctx.port)]
        if ctx.parent_pid is not None:
            argv += ["--parent-pid", str(ctx.parent_pid)]
        return Launch(tuple(argv))

    def container(self, model: str, options: Mapping[str, Any], port: int) -> Container:
        args = self._args(model, "0.0.0.0", port)
        return Container("ghcr.io/modelplane/modelplane:latest", ("modelplane", *args), port)

    def create(self, model: str, options: Mapping[str, Any]) -> Engine:
        return EchoEngine(model)
