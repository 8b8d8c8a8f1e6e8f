"""A test engine kind that says it serves LoRA adapters, registered through the
``modelplane.engines`` entry point group like any plugin. It is never launched (its
endpoints have 0 replicas): only its spec is asked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from modelplane.engines.base import Capabilities, Engine
from modelplane.engines.spec import Container, Launch, LaunchContext


class LoraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = 8


class LoraSpec:
    name = "lora-test"
    capabilities = Capabilities(lora=True)
    health_path = "/health"
    metrics_path: str | None = None

    def parse_options(self, model: str, options: Mapping[str, Any]) -> LoraOptions:
        return LoraOptions.model_validate(dict(options))

    def check(self, model: str, options: Mapping[str, Any]) -> None:
        self.parse_options(model, options)

    def command(self, model: str, options: Mapping[str, Any], ctx: LaunchContext) -> Launch:
        raise NotImplementedError("the lora-test engine is never launched")

    def container(self, model: str, options: Mapping[str, Any], port: int) -> Container:
        raise NotImplementedError("the lora-test engine is never launched")

    def create(self, model: str, options: Mapping[str, Any]) -> Engine:
        raise NotImplementedError("the lora-test engine is never launched")
