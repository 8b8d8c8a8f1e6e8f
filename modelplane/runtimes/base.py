"""The runtime contract: make the running replicas of an endpoint match its spec.

A runtime converges on an endpoint (``apply``), removes one (``delete``), lists the
replicas it holds (``replicas``) and tells what changes (``watch``): every replica it
adds, every status change, every replica it removes, in order, to any number of
followers. The contract suite in ``tests/runtimes`` holds every runtime to it.

A replica is known by an ``id`` that says nothing of how it runs
(``{endpoint}-{generation}-{index}``: the same slot keeps its id across restarts) and by
its address; what only one runtime knows (a local process's pid, a pod's name) goes in
``details``.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field, replace
from typing import Protocol
from urllib.parse import urlsplit

from modelplane.store.records import Endpoint


class ReplicaStatus(enum.StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STOPPING = "stopping"


@dataclass(slots=True)
class Replica:
    endpoint: str
    index: int
    generation: int
    status: ReplicaStatus = ReplicaStatus.PENDING
    url: str = ""
    """Where it answers (``http://host:port``); empty until it has an address."""
    restarts: int = 0
    last_error: str | None = None
    details: dict[str, object] = field(default_factory=dict)
    """What only its runtime knows (the local runtime's ``pid``), shown in its view."""

    @property
    def id(self) -> str:
        return f"{self.endpoint}-{self.generation}-{self.index}"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int | None:
        return urlsplit(self.url).port if self.url else None

    def snapshot(self) -> Replica:
        """A copy that later changes to this replica leave alone (events carry these)."""
        return replace(self, details=dict(self.details))

    def view(self) -> dict[str, object]:
        return {
            "id": self.id,
            "index": self.index,
            "status": self.status.value,
            "url": self.url or None,
            "generation": self.generation,
            "restarts": self.restarts,
            "last_error": self.last_error,
            **self.details,
        }


class EventKind(enum.StrEnum):
    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class ReplicaEvent:
    kind: EventKind
    replica: Replica
    """The replica as it was when the event happened (a snapshot)."""


class Watch:
    """One follower's events, in order; iterate it, and close it (or use ``with``)
    when done, so the runtime stops queueing for it."""

    def __init__(self, hub: Events) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[ReplicaEvent] = asyncio.Queue()

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> ReplicaEvent:
        return await self._queue.get()

    def put(self, event: ReplicaEvent) -> None:
        self._queue.put_nowait(event)

    def close(self) -> None:
        self._hub.unwatch(self)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Events:
    """Fan-out of replica events to every open :class:`Watch`."""

    def __init__(self) -> None:
        self._watches: list[Watch] = []

    def watch(self) -> Watch:
        """Follow from now on (registered at once, so nothing after this call is missed)."""
        w = Watch(self)
        self._watches.append(w)
        return w

    def unwatch(self, w: Watch) -> None:
        if w in self._watches:
            self._watches.remove(w)

    def publish(self, kind: EventKind, replica: Replica) -> None:
        event = ReplicaEvent(kind, replica.snapshot())
        for w in self._watches:
            w.put(event)


@dataclass(frozen=True, slots=True)
class Rollout:
    """The latest change of generation of an endpoint: ``rolling`` while the new
    replicas start (the old ones serve), ``failed`` when they did not become ready in
    time (the old ones still serve; the new ones keep trying), ``complete`` once the new
    ones took over."""

    status: str
    generation: int
    reason: str | None = None

    def view(self) -> dict[str, object]:
        return {"status": self.status, "generation": self.generation, "reason": self.reason}


class Runtime(Protocol):
    async def apply(self, endpoint: Endpoint) -> None:
        """Converge on the endpoint's spec; idempotent and quick (work happens behind).
        A new generation starts a full new set of replicas; the old ones serve until
        every new one is ready."""
        ...

    async def delete(self, name: str) -> None:
        """Stop every replica of the endpoint and wait until they are gone."""
        ...

    def replicas(self, name: str) -> list[Replica]: ...

    def watch(self) -> Watch:
        """Follow every replica's events (added, changed, removed) from now on."""
        ...

    async def wait_ready(self, name: str, count: int = 1) -> None:
        """Return once the endpoint has ``count`` ready replicas (bound it with a timeout)."""
        ...

    def rollout(self, name: str) -> Rollout | None:
        """The endpoint's latest rollout, if its generation changed while it ran here."""
        ...

    def endpoints(self) -> set[str]:
        """The endpoints whose replicas this instance runs."""
        ...

    @property
    def supervising(self) -> bool:
        """Whether this instance runs replicas itself (rather than following another
        process that does); only a supervising instance publishes them to other nodes."""
        ...

    async def close(self) -> None: ...


def ready_count(runtime: Runtime, name: str) -> int:
    return sum(r.status == ReplicaStatus.READY for r in runtime.replicas(name))


async def wait_ready(runtime: Runtime, name: str, count: int = 1) -> None:
    """``Runtime.wait_ready`` for any runtime, on its events."""
    with runtime.watch() as events:
        while ready_count(runtime, name) < count:
            await anext(events)
