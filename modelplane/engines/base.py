"""What an engine is: something that turns one request into a stream of deltas.

Engines run a model inside the current process. One generic OpenAI-compatible HTTP
server (``engines/server.py``) wraps any engine, so every engine speaks the same API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float | None = None
    """None: the engine's default."""
    logprobs: bool = False
    top_logprobs: int = 0
    response_format: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """One generation. ``messages`` for chat, ``prompt`` for plain completions."""

    kind: Literal["chat", "completion"]
    params: SamplingParams
    messages: tuple[dict[str, Any], ...] = ()
    prompt: str = ""
    request_id: str = ""
    tools: tuple[dict[str, Any], ...] = ()
    """OpenAI tool definitions; only reach engines whose capabilities include tools."""
    tool_choice: str | dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[tuple[str, float, tuple[int, ...]], ...] = ()


@dataclass(slots=True)
class Delta:
    """A piece of generated text; the last one carries ``finish_reason`` and usage."""

    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: Literal["stop", "length"] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Capabilities:
    chat: bool = True
    completions: bool = True
    logprobs: bool = False
    response_format: bool = False
    tools: bool = False
    """Honours ``tools`` and ``tool_choice``; without it the server refuses requests
    that need a tool call rather than answer them with prose."""
    max_context: int = 0
    embeddings: bool = False
    """Answers ``/v1/embeddings``."""
    lora: bool = False
    """Serves LoRA adapters (an endpoint's ``adapters``) beside its base model."""


class Engine(Protocol):
    """A model running in this process."""

    model_id: str
    capabilities: Capabilities

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def generate(self, request: GenerateRequest) -> AsyncIterator[Delta]:
        """Yield deltas; closing the iterator early cancels the generation."""
        ...

    def health(self) -> dict[str, Any]: ...
