"""Runtimes by name, imported lazily (the Kubernetes one will pull in its client)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from modelplane.runtimes.base import Runtime

_factories: dict[str, str | Callable[..., Runtime]] = {}


def register(name: str, factory: str | Callable[..., Runtime]) -> None:
    _factories[name] = factory


def create(name: str, **kwargs: Any) -> Runtime:
    try:
        factory = _factories[name]
    except KeyError:
        raise KeyError(
            f"unknown runtime '{name}'; known: {', '.join(sorted(_factories))}"
        ) from None
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
        _factories[name] = factory
    return factory(**kwargs)


register("local", "modelplane.runtimes.local:LocalRuntime")
register("local-shared", "modelplane.runtimes.shared:SharedLocalRuntime")
