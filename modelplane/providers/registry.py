"""Providers by name. Built-ins register through the same call third parties use, and
their modules (and heavy dependencies such as botocore) are imported only when used."""

from __future__ import annotations

import importlib

from modelplane.providers.base import Provider

_providers: dict[str, str | Provider] = {}


def register(name: str, provider: str | Provider) -> None:
    """Register a provider instance, or a ``"module:Class"`` path to import lazily."""
    _providers[name] = provider


def names() -> list[str]:
    return sorted(_providers)


def get(name: str) -> Provider:
    try:
        provider = _providers[name]
    except KeyError:
        raise KeyError(
            f"unknown provider '{name}'; known providers: {', '.join(names())}"
        ) from None
    if isinstance(provider, str):
        module, _, attr = provider.partition(":")
        provider = getattr(importlib.import_module(module), attr)()
        _providers[name] = provider
    return provider


async def close_all() -> None:
    """Close what the providers created so far hold open (connection pools); a provider
    that is used again afterwards opens new ones."""
    for provider in list(_providers.values()):
        close = getattr(provider, "close", None)
        if close is not None:  # a str (not imported yet) has none
            await close()


register("openai", "modelplane.providers.openai:OpenAIProvider")
register("ollama", "modelplane.providers.ollama:OllamaProvider")
register("anthropic", "modelplane.providers.anthropic:AnthropicProvider")
register("bedrock", "modelplane.providers.bedrock:BedrockProvider")
register("vertex", "modelplane.providers.vertex:VertexProvider")
