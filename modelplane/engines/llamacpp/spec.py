"""The llama.cpp engine's spec: its options are checked and its replicas launched
without importing llama.cpp (only ``create`` does, in the replica)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from modelplane.engines.base import Capabilities, Engine
from modelplane.engines.llamacpp.options import LlamaCppOptions
from modelplane.engines.llamacpp.weights import resolve_source
from modelplane.engines.spec import Container, Launch, LaunchContext
from modelplane.errors import first_invalid

IMAGE = "ghcr.io/modelplane/modelplane:latest"
"""The image a pod replica runs (modelplane itself, which holds the engine)."""


class LlamaCppSpec:
    name = "llamacpp"
    capabilities = Capabilities(chat=True, completions=True, logprobs=True, response_format=True)
    health_path = "/health"
    metrics_path: str | None = "/metrics"

    def parse_options(self, model: str, options: Mapping[str, Any]) -> LlamaCppOptions:
        return LlamaCppOptions.for_model(model, dict(options))

    def check(self, model: str, options: Mapping[str, Any]) -> None:
        try:
            resolve_source(model)
        except FileNotFoundError as exc:
            raise ValueError(str(exc)) from None
        try:
            self.parse_options(model, options)
        except ValidationError as exc:
            where, why = first_invalid(exc.errors())
            raise ValueError(f"options.{where}: {why}") from None

    def _args(self, model: str, options: Mapping[str, Any], host: str, port: int) -> list[str]:
        return [
            "engine",
            "serve",
            "--engine",
            self.name,
            "--model",
            model,
            "--host",
            host,
            "--port",
            str(port),
            "--options",
            json.dumps(dict(options)),
        ]

    def command(self, model: str, options: Mapping[str, Any], ctx: LaunchContext) -> Launch:
        opts = dict(options)
        if ctx.threads:
            opts.setdefault("n_threads", ctx.threads)
        opts.setdefault("cache_dir", f"{ctx.home}/weights")
        argv = [ctx.python, "-m", "modelplane", *self._args(model, opts, ctx.host, ctx.port)]
        if ctx.parent_pid is not None:
            argv += ["--parent-pid", str(ctx.parent_pid)]
        return Launch(tuple(argv))

    def container(self, model: str, options: Mapping[str, Any], port: int) -> Container:
        args = self._args(model, options, "0.0.0.0", port)
        return Container(IMAGE, ("modelplane", *args), port)

    def create(self, model: str, options: Mapping[str, Any]) -> Engine:
        from modelplane.engines.llamacpp.engine import LlamaCppEngine

        return LlamaCppEngine(model=model, **options)
