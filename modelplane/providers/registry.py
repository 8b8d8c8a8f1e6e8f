"""Providers by name. Built-ins register through the same call third parties use (or
the ``modelplane.providers`` entry point group), and their modules (and heavy
dependencies such as botocore) are imported only when used."""

from __future__ import annotations

from modelplane.plugins import Registry
from modelplane.providers.base import Closable, Provider

_NEEDS = ("name", "default_base_url", "kinds", "health_path")
_CALLS = ("send", "models", "health")


def _instance(obj: object) -> Provider:
    """An entry may name a provider class (made once, shared) or an instance."""
    provider = obj() if isinstance(obj, type) else obj
    missing = [a for a in _NEEDS if not hasattr(provider, a)]
    missing += [f"{a}()" for a in _CALLS if not callable(getattr(provider, a, None))]
    if missing:
        raise TypeError(f"{obj!r} is not a provider (it has no {', '.join(missing)})")
    return provider  # type: ignore[return-value]


providers: Registry[Provider] = Registry("provider", check=_instance)


def register(name: str, provider: str | Provider) -> None:
    """Register a provider instance, or a ``"module:Class"`` path to import lazily."""
    providers.register(name, provider)


def names() -> list[str]:
    return providers.names()


def get(name: str) -> Provider:
    return providers.get(name)


async def close_all() -> None:
    """Close what the providers created so far hold open (connection pools); a provider
    that is used again afterwards opens new ones."""
    for _, provider in providers.loaded():
        if isinstance(provider, Closable):
            await provider.close()


register("openai", "modelplane.providers.openai:OpenAIProvider")
register("ollama", "modelplane.providers.ollama:OllamaProvider")
register("anthropic", "modelplane.providers.anthropic:AnthropicProvider")
register("bedrock", "modelplane.providers.bedrock:BedrockProvider")
register("vertex", "modelplane.providers.vertex:VertexProvider")
