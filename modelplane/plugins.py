"""One registry for every kind of adapter (engines, providers, runtimes, balancers, …).

Each kind keeps one :class:`Registry`: a name maps to an object, or to a
``"module:attr"`` path imported the first time the name is used, so an adapter's heavy
dependencies (llama.cpp, botocore, a Kubernetes client) load only when it is used.
Built-ins register through the same :meth:`Registry.register` call as anyone else.

Packages outside modelplane add adapters with Python entry points, one group per kind
(``modelplane.engines``, ``modelplane.providers``, ``modelplane.runtimes``,
``modelplane.balancers``), e.g. in their ``pyproject.toml``::

    [project.entry-points."modelplane.engines"]
    echo = "my_package.engine:EchoEngineSpec"

Entry points are read once, the first time a registry is asked for a name it does not
hold or for its list of names; a built-in keeps its name when a plugin claims it too.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar, cast

log = logging.getLogger(__name__)

T = TypeVar("T")

GROUP_PREFIX = "modelplane."
_UNLOADED = (str, EntryPoint)
"""What an entry is until first used (a tuple: ``get`` runs on the request path)."""


def load_path(path: str) -> object:
    """The object a ``"module:attr"`` path names (``attr`` may be dotted)."""
    module, _, attr = path.partition(":")
    obj: object = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Names → adapters of one kind. ``check`` (optional) validates an object when it
    is first loaded, so a plugin of the wrong type fails with its name in the message."""

    def __init__(
        self, kind: str, *, group: str | None = None, check: Callable[[object], T] | None = None
    ) -> None:
        self.kind = kind
        """Singular, for messages: ``engine``, ``provider``, …"""
        self.group = group if group is not None else f"{GROUP_PREFIX}{kind}s"
        self._check = check
        self._entries: dict[str, str | EntryPoint | T] = {}
        self._plugins_read = False

    def register(self, name: str, target: str | T) -> None:
        """Register ``target``, or a ``"module:attr"`` path to it, under ``name``
        (replacing what had that name)."""
        self._entries[name] = target

    def _read_plugins(self) -> None:
        if self._plugins_read:
            return
        self._plugins_read = True
        for ep in entry_points(group=self.group):
            if ep.name in self._entries:
                log.warning(
                    "ignoring the %s '%s' of entry point %s: that name is taken",
                    self.kind,
                    ep.name,
                    ep.value,
                )
                continue
            self._entries[ep.name] = ep

    def names(self) -> list[str]:
        self._read_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        if name in self._entries:
            return True
        self._read_plugins()
        return name in self._entries

    def unknown(self, name: str) -> KeyError:
        """The error for a name nobody registered, listing the known ones."""
        plural = f"{self.kind}s"
        return KeyError(f"unknown {self.kind} '{name}'; known {plural}: {', '.join(self.names())}")

    def get(self, name: str) -> T:
        """The adapter called ``name``, imported now if it was registered by path."""
        entry = self._entries.get(name)
        if entry is None:
            self._read_plugins()
            entry = self._entries.get(name)
            if entry is None:
                raise self.unknown(name)
        if isinstance(entry, _UNLOADED):
            where = entry if isinstance(entry, str) else f"entry point {entry.value}"
            try:
                obj = load_path(entry) if isinstance(entry, str) else entry.load()
            except (ImportError, AttributeError) as exc:
                raise LookupError(f"the {self.kind} '{name}' ({where}) cannot load: {exc}") from exc
            try:
                loaded = self._check(obj) if self._check is not None else cast(T, obj)
            except TypeError as exc:
                raise TypeError(f"the {self.kind} '{name}' ({where}) is unusable: {exc}") from exc
            self._entries[name] = loaded
            return loaded
        return entry

    def loaded(self) -> Iterator[tuple[str, T]]:
        """The adapters imported so far (a path nobody used is not imported for this)."""
        for name, entry in list(self._entries.items()):
            if not isinstance(entry, _UNLOADED):
                yield name, entry
