"""What the platform knows of an engine kind without importing it: an ``EngineSpec``.

A spec is light: checking an endpoint's options, building the command a local runtime
runs for a replica (or the container a Kubernetes runtime runs), and saying where the
replica answers health and metrics never import the engine's heavy libraries
(llama.cpp, torch, vLLM). Only ``create`` does, inside the replica's own process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel

from modelplane.engines.base import Capabilities, Engine


@dataclass(frozen=True, slots=True)
class LaunchContext:
    """What a runtime tells a spec about where a replica will run."""

    host: str
    port: int
    home: str
    """The server's ``MODELPLANE_HOME`` (weights caches live under it)."""
    threads: int
    """CPU threads the replica may use (0: the engine decides)."""
    python: str
    """The interpreter of the server, for engines that run inside modelplane."""
    parent_pid: int | None = None
    """End the replica when this process is gone (local runtimes)."""


@dataclass(frozen=True, slots=True)
class Launch:
    """A process to run: ``argv`` and the environment it adds to the runtime's own."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Container:
    """A container to run for a pod replica: its image, arguments and port."""

    image: str
    args: tuple[str, ...]
    port: int
    env: Mapping[str, str] = field(default_factory=dict)


class EngineSpec(Protocol):
    """One engine kind, registered by name in ``engines.registry``."""

    name: str
    capabilities: Capabilities
    """What its replicas can serve (chat, completions, embeddings, tools, LoRA, …)."""
    health_path: str
    """Answers 200 while the replica can take requests."""
    metrics_path: str | None
    """Prometheus metrics of the replica, if it has any."""

    def parse_options(self, model: str, options: Mapping[str, Any]) -> BaseModel:
        """The engine's options, typed (its light options model, defaults applied):
        pydantic's ``ValidationError`` for a bad one; imports nothing heavy."""
        ...

    def check(self, model: str, options: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` (``"options.<field>: why"`` for an option) if ``model``
        with ``options`` cannot be served (``parse_options``, and whatever else the
        engine can tell without loading the model); imports nothing heavy."""
        ...

    def command(self, model: str, options: Mapping[str, Any], ctx: LaunchContext) -> Launch:
        """The process that serves one replica on ``ctx.host:ctx.port``."""
        ...

    def container(self, model: str, options: Mapping[str, Any], port: int) -> Container:
        """The container that serves one replica on ``port`` inside a pod."""
        ...

    def create(self, model: str, options: Mapping[str, Any]) -> Engine:
        """The engine itself, in the replica's process (this may import anything)."""
        ...
