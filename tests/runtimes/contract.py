"""What every runtime's contract tests need: a :class:`Harness` (made by a fixture in
``conftest.py``, one parametrization per runtime) and helpers that wait on ``watch()``
events, never on sleeps. A new runtime (Kubernetes) only adds a harness."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from modelplane.runtimes.base import ReplicaEvent, ReplicaStatus, Runtime, Watch, ready_count
from modelplane.store.db import utc_now
from modelplane.store.records import Endpoint

LIMIT_S = 20.0


@dataclass
class Harness:
    name: str
    make: Callable[[], Runtime]
    """A new runtime instance on the same machine or cluster as the ones before."""
    processes: Callable[[], int]
    """Replica processes (or pods) alive now, of every instance made."""
    made: list[Runtime] = field(default_factory=list)

    def runtime(self) -> Runtime:
        rt = self.make()
        self.made.append(rt)
        return rt


def endpoint(name: str = "", replicas: int = 1, generation: int = 1, **options: Any) -> Endpoint:
    now = utc_now()
    return Endpoint(
        uuid.uuid4().hex,
        name or f"ep-{uuid.uuid4().hex[:6]}",
        "echo",
        None,
        "echo-model",
        replicas,
        dict(options),
        generation,
        now,
        now,
    )


async def until(events: Watch, check: Callable[[], object], what: str) -> list[ReplicaEvent]:
    """Wait for ``check`` on the runtime's events; the events seen meanwhile."""
    seen: list[ReplicaEvent] = []
    try:
        async with asyncio.timeout(LIMIT_S):
            while not check():
                seen.append(await anext(events))
    except TimeoutError:
        raise AssertionError(f"timed out after {LIMIT_S}s waiting for {what}") from None
    return seen


async def told(
    events: Watch, done: Callable[[list[ReplicaEvent]], bool], what: str
) -> list[ReplicaEvent]:
    """Wait until the events seen so far satisfy ``done`` (the state a runtime reports
    can run ahead of the events still queued for a follower)."""
    seen: list[ReplicaEvent] = []
    try:
        async with asyncio.timeout(LIMIT_S):
            while not done(seen):
                seen.append(await anext(events))
    except TimeoutError:
        raise AssertionError(f"timed out after {LIMIT_S}s waiting to be told {what}") from None
    return seen


def removed(seen: list[ReplicaEvent]) -> set[str]:
    return {e.replica.id for e in seen if e.kind.value == "removed"}


async def ready(rt: Runtime, events: Watch, name: str, count: int) -> list[ReplicaEvent]:
    def done() -> bool:
        reps = rt.replicas(name)
        return len(reps) == count and ready_count(rt, name) == count

    return await until(events, done, f"{count} ready replicas of {name}")


def statuses(events: list[ReplicaEvent], rid: str) -> list[str]:
    return [e.kind.value + ":" + e.replica.status.value for e in events if e.replica.id == rid]


READY = ReplicaStatus.READY


async def health(url: str) -> int:
    async with httpx.AsyncClient() as http:
        return (await http.get(url + "/health")).status_code


async def crash(url: str) -> None:
    """Make the echo replica at ``url`` exit at once (it dies before answering)."""
    async with httpx.AsyncClient() as http:
        with contextlib.suppress(httpx.HTTPError):
            await http.post(url + "/crash")
