"""Desired state (the ``endpoints`` table) → actual state (the runtime).

The reconciler also holds the snapshot of endpoints the gateway routes by. It re-reads
the table when the ``endpoints`` revision changes (the API calls :meth:`reconcile`
after its own writes; the process's revision watcher calls :meth:`refresh` for writes
by other processes), so routing never queries the database. Every ``interval_s`` it
also applies the snapshot to the runtime again, for replicas that drifted (and, with
several server processes, so that one takes over supervising replicas when the one
that did is gone); that needs no query, as the snapshot is already current.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from modelplane.runtimes.base import Runtime
from modelplane.store.db import Database
from modelplane.store.records import Endpoint
from modelplane.store.repos import EndpointRepo
from modelplane.store.revisions import revision

log = logging.getLogger(__name__)


class Reconciler:
    watches = ("endpoints",)

    def __init__(self, db: Database, runtime: Runtime, *, interval_s: float = 2.0) -> None:
        self.db = db
        self.repo = EndpointRepo(db)
        self.runtime = runtime
        self.interval_s = interval_s
        self.endpoints: dict[str, Endpoint] = {}
        self.followers: list[Callable[[], None]] = []
        """Called whenever ``endpoints`` is replaced (the health checks follow it)."""
        self.healthy = False
        self._rev = -1
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and self.healthy

    async def start(self) -> None:
        await self.reconcile()
        self._task = asyncio.create_task(self._loop(), name="reconciler")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def reconcile(self) -> None:
        """Re-read the desired endpoints now, and apply them."""
        await self._load(await revision(self.db, "endpoints"))

    async def refresh(self, revisions: tuple[int, ...]) -> None:
        (rev,) = revisions
        if rev != self._rev:
            await self._load(rev)

    async def _load(self, rev: int) -> None:
        async with self._lock:
            try:
                self.endpoints = {ep.name: ep for ep in await self.repo.all()}
                self._rev = rev
                self._tell_followers()
                await self._apply()
            except Exception:
                self.healthy = False
                raise

    def _tell_followers(self) -> None:
        for follow in self.followers:
            try:
                follow()
            except Exception:
                log.exception("a follower of the endpoints failed on their change")

    async def _apply(self) -> None:
        desired = self.endpoints
        local = {name for name, ep in desired.items() if ep.provider is None}
        for name in local:
            await self.runtime.apply(desired[name])
        for name in self.runtime.endpoints() - local:
            await self.runtime.delete(name)
        self.healthy = True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                async with self._lock:
                    await self._apply()
            except Exception:
                self.healthy = False
                log.exception("reconciling endpoints failed; retrying")
