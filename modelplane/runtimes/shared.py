"""The local runtime shared by several server processes on one machine
(``modelplane serve --workers N``).

One process — whichever holds an exclusive ``flock`` on ``$MODELPLANE_HOME/runtime.lock``
— supervises the replica subprocesses, exactly as the plain local runtime does, and
publishes their state (address, status, last error) to ``$MODELPLANE_HOME/replicas.json``
on every change, written atomically. Every other process routes by that file, re-read
when it changes. When the supervising process dies, the kernel releases its lock (and
its replicas die with it); the next process to take the lock starts them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelplane import tasks
from modelplane.config import Settings
from modelplane.runtimes.base import (
    EventKind,
    Events,
    Replica,
    ReplicaStatus,
    Rollout,
    Runtime,
    Watch,
    wait_ready,
)
from modelplane.runtimes.local import LocalRuntime
from modelplane.store.records import Endpoint

log = logging.getLogger(__name__)

FOLLOW_POLL_S = 0.2
"""How often a process that does not supervise re-reads the state file (for watchers)."""

_VIEW_FIELDS = frozenset({"id", "index", "status", "url", "generation", "restarts", "last_error"})


def _replica(name: str, r: dict[str, Any]) -> Replica:
    return Replica(
        name,
        r["index"],
        r["generation"],
        ReplicaStatus(r["status"]),
        r["url"] or "",
        r["restarts"],
        r["last_error"],
        {k: v for k, v in r.items() if k not in _VIEW_FIELDS and k != "endpoint"},
    )


class SharedLocalRuntime:
    def __init__(self, *, home: Path, **local: Any) -> None:
        self.home = home
        self.local = LocalRuntime(home=home, **local)
        self.lock_path = home / "runtime.lock"
        self.state_path = home / "replicas.json"
        self.events = Events()
        self._lock_fd: int | None = None
        self._seen: tuple[int, int] | None = None
        self._followed: dict[str, list[Replica]] = {}
        self._rollouts: dict[str, Rollout] = {}
        self._publisher: asyncio.Task[None] | None = None
        self._follower = tasks.Loop("replica state follower", self._follow_step, FOLLOW_POLL_S)

    @property
    def leader(self) -> bool:
        return self._lock_fd is not None

    @property
    def supervising(self) -> bool:
        return self.leader

    def _try_lead(self) -> bool:
        if self._lock_fd is None:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._lock_fd = fd
            log.info("this process (pid %d) now supervises the local replicas", os.getpid())
            # What it followed from the previous supervisor is gone with it.
            for reps in self._followed.values():
                for r in reps:
                    self.events.publish(EventKind.REMOVED, r)
            self._followed = {}
            # Followed from now on, before the first apply publishes anything.
            events = self.local.watch()
            self._publisher = asyncio.create_task(self._publish_loop(events), name="replica state")
        return True

    async def _publish_loop(self, events: Watch) -> None:
        with events:
            self._publish()
            async for event in events:
                self._publish()
                self.events.publish(event.kind, event.replica)

    def _publish(self) -> None:
        state = {
            name: [r.view() | {"endpoint": name} for r in self.local.replicas(name)]
            for name in self.local.endpoints()
        }
        rollouts = {
            name: ro.view() for name in self.local.endpoints() if (ro := self.local.rollout(name))
        }
        tmp = self.state_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "endpoints": state, "rollouts": rollouts}))
        os.replace(tmp, self.state_path)

    def _follow(self) -> None:
        try:
            st = self.state_path.stat()
        except FileNotFoundError:
            self._set_followed({})
            return
        seen = (st.st_mtime_ns, st.st_size)
        if seen == self._seen:
            return
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return  # mid-replace on an exotic filesystem: keep the last state
        self._seen = seen
        self._rollouts = {
            name: Rollout(ro["status"], ro["generation"], ro["reason"])
            for name, ro in data.get("rollouts", {}).items()
        }
        self._set_followed(
            {
                name: [_replica(name, r) for r in reps]
                for name, reps in data.get("endpoints", {}).items()
            }
        )

    def _set_followed(self, new: dict[str, list[Replica]]) -> None:
        """Replace what is followed, telling watchers what differs."""
        old = {r.id: r for reps in self._followed.values() for r in reps}
        now = {r.id: r for reps in new.values() for r in reps}
        self._followed = new
        for rid, r in now.items():
            before = old.get(rid)
            if before is None:
                self.events.publish(EventKind.ADDED, r)
            elif before != r:
                self.events.publish(EventKind.CHANGED, r)
        for rid, r in old.items():
            if rid not in now:
                self.events.publish(EventKind.REMOVED, r)

    async def _follow_step(self) -> None:
        if not self.leader:
            self._follow()

    def watch(self) -> Watch:
        if not self.leader:
            self._follower.start()  # another process's state, in a file: polled
        return self.events.watch()

    async def wait_ready(self, name: str, count: int = 1) -> None:
        await wait_ready(self, name, count)

    def rollout(self, name: str) -> Rollout | None:
        if self.leader:
            return self.local.rollout(name)
        self._follow()
        return self._rollouts.get(name)

    async def apply(self, endpoint: Endpoint) -> None:
        if self._try_lead():
            await self.local.apply(endpoint)

    async def delete(self, name: str) -> None:
        if self._try_lead():
            await self.local.delete(name)
            return
        # The supervisor deletes it on its next reconcile: wait until it is gone.
        with self.watch() as events, contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                while self.replicas(name):
                    await anext(events)

    def replicas(self, name: str) -> list[Replica]:
        if self.leader:
            return self.local.replicas(name)
        self._follow()
        return self._followed.get(name, [])

    def endpoints(self) -> set[str]:
        return self.local.endpoints() if self.leader else set()

    async def close(self) -> None:
        await self._follower.close()
        await self.local.close()
        if self._publisher is not None:
            await tasks.cancel(self._publisher)
            self._publish()  # nothing runs any more: say so
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _options(settings: Settings) -> dict[str, Any]:
    return {
        "home": settings.home,
        "replica_host": settings.replica_host,
        "engine_threads": settings.engine_threads,
        "start_timeout_s": settings.replica_start_timeout_s,
        "health_interval_s": settings.health_interval_s,
        "backoff_max_s": settings.restart_backoff_max_s,
    }


def local(settings: Settings, on_restart: Callable[[str], None] | None = None) -> Runtime:
    """The ``local`` runtime: plain in one server process, shared with ``workers > 1``."""
    if settings.workers > 1:
        return SharedLocalRuntime(**_options(settings), on_restart=on_restart)
    return LocalRuntime(**_options(settings), on_restart=on_restart)


def local_shared(settings: Settings, on_restart: Callable[[str], None] | None = None) -> Runtime:
    """``local-shared``: the shared variant even in one process (what ``local`` picks
    with several workers)."""
    return SharedLocalRuntime(**_options(settings), on_restart=on_restart)
