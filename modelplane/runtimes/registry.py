"""Runtimes by name (the ``runtime`` setting), imported lazily (the Kubernetes one pulls
in its client); plugins add more through the ``modelplane.runtimes`` entry point group.

A runtime factory is called with the server's ``settings`` (it reads the knobs it
needs) and ``on_restart`` (called with an endpoint's name whenever one of its replicas
restarts), and returns a :class:`~modelplane.runtimes.base.Runtime`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelplane.plugins import Registry
from modelplane.runtimes.base import Runtime

RuntimeFactory = Callable[..., Runtime]

runtimes: Registry[RuntimeFactory] = Registry("runtime")


def register(name: str, factory: str | RuntimeFactory) -> None:
    runtimes.register(name, factory)


def names() -> list[str]:
    return runtimes.names()


def create(name: str, **kwargs: Any) -> Runtime:
    return runtimes.get(name)(**kwargs)


register("local", "modelplane.runtimes.shared:local")
register("local-shared", "modelplane.runtimes.shared:local_shared")
