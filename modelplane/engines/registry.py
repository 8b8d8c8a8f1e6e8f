"""Engines by name. Built-ins register through the same call third parties use, and
their modules are imported only when the engine is created."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from modelplane.engines.base import Engine

EngineFactory = Callable[..., Engine]

_factories: dict[str, str | EngineFactory] = {}


def register(name: str, factory: str | EngineFactory) -> None:
    """Register an engine factory, or a ``"module:attr"`` path to import lazily."""
    _factories[name] = factory


def names() -> list[str]:
    return sorted(_factories)


def _factory(name: str) -> EngineFactory:
    try:
        factory = _factories[name]
    except KeyError:
        raise KeyError(f"unknown engine '{name}'; known engines: {', '.join(names())}") from None
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
        _factories[name] = factory
    return factory


def create(name: str, model: str, options: dict[str, Any]) -> Engine:
    return _factory(name)(model=model, **options)


def check(name: str, model: str, options: dict[str, Any]) -> None:
    """Raise ``ValueError`` if the engine can tell that ``model`` with ``options`` cannot
    be served (an engine's optional static ``check``), before any replica starts."""
    checker = getattr(_factory(name), "check", None)
    if checker is not None:
        checker(model, options)


register("llamacpp", "modelplane.engines.llamacpp.engine:LlamaCppEngine")
