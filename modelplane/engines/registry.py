"""Engine kinds by name: each registers an ``EngineSpec`` (``engines/spec.py``).
Built-ins register through the same call third parties use (or the
``modelplane.engines`` entry point group), and a spec's module is imported only when
the engine kind is first used."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from modelplane.engines.base import Engine
from modelplane.engines.spec import EngineSpec
from modelplane.errors import first_invalid
from modelplane.plugins import Registry


def _spec(obj: object) -> EngineSpec:
    """An entry may name a spec instance or its class."""
    spec = obj() if isinstance(obj, type) else obj
    if not callable(getattr(spec, "command", None)) or not callable(getattr(spec, "create", None)):
        raise TypeError(f"{obj!r} is not an engine spec (it needs command() and create())")
    return spec  # type: ignore[return-value]


specs: Registry[EngineSpec] = Registry("engine", check=_spec)


def register(name: str, spec: str | EngineSpec) -> None:
    """Register an engine spec, or a ``"module:attr"`` path to one (or to its class)."""
    specs.register(name, spec)


def names() -> list[str]:
    return specs.names()


def get(name: str) -> EngineSpec:
    """The spec of engine kind ``name`` (``KeyError`` listing the known ones)."""
    return specs.get(name)


def create(name: str, model: str, options: Mapping[str, Any]) -> Engine:
    return get(name).create(model, options)


def check(name: str, model: str, options: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` if the engine can tell that ``model`` with ``options`` cannot
    be served, before any replica starts; imports none of the engine's libraries. An
    options model's own error (a plugin's ``check`` may let it through) is named as
    ``options.<field>: why`` like any other."""
    try:
        get(name).check(model, options)
    except ValidationError as exc:
        where, why = first_invalid(exc.errors())
        raise ValueError(f"options.{where}: {why}") from None


register("llamacpp", "modelplane.engines.llamacpp.spec:LlamaCppSpec")
