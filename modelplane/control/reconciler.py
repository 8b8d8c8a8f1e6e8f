"""Desired state (the ``endpoints`` table) → actual state (the runtime).

The reconciler also holds the snapshot of endpoints the gateway routes by. It re-reads
the table when the ``endpoints`` revision changes (the API calls :meth:`reconcile`
after its own writes; the process's revision watcher calls :meth:`refresh` for writes
by other processes), so routing never queries the database. Every ``interval_s`` it
also applies the snapshot to the runtime again, for replicas that drifted (and, with
several server processes, so that one takes over supervising replicas when the one
that did is gone); that needs no query, as the snapshot is already current.

Only the endpoints of this server's node run here (an endpoint without a node is
claimed by the first server that sees it). The replicas of the others come from the
``replicas`` table their node publishes (``control/placement.py``), reloaded when its
revision changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from modelplane import tasks
from modelplane.control.placement import Directory, Publisher, machine_id
from modelplane.runtimes.base import Replica, Rollout, Runtime
from modelplane.store.db import Database
from modelplane.store.records import Endpoint
from modelplane.store.repos import EndpointRepo
from modelplane.store.revisions import revisions

log = logging.getLogger(__name__)


class Reconciler:
    watches = ("endpoints", "replicas")

    def __init__(
        self,
        db: Database,
        runtime: Runtime,
        *,
        node: str = "local",
        machine: str | None = None,
        interval_s: float = 2.0,
    ) -> None:
        self.db = db
        self.repo = EndpointRepo(db)
        self.runtime = runtime
        self.node = node
        self.interval_s = interval_s
        self.endpoints: dict[str, Endpoint] = {}
        self.followers: list[Callable[[], None]] = []
        """Called whenever ``endpoints`` is replaced (the health checks follow it)."""
        self.healthy = False
        machine = machine or machine_id()
        self.publisher = Publisher(db, runtime, node, machine)
        self.directory = Directory(db, node, machine)
        self._revs: tuple[int, int] = (-1, -1)
        self._lock = asyncio.Lock()
        self._loop = tasks.Loop("reconciler", self._reapply, interval_s, on_error=self._unhealthy)

    @property
    def running(self) -> bool:
        return self._loop.running and self.healthy

    async def start(self) -> None:
        await self.reconcile()
        self._loop.start()
        self.publisher.start()

    async def close(self) -> None:
        """Stop reconciling (the runtime is closed by its owner, then :meth:`after_close`)."""
        await self._loop.close()
        await self.publisher.close()

    async def after_close(self) -> None:
        """The runtime is closed: unpublish its replicas (best effort)."""
        try:
            await self.publisher.unpublish()
        except Exception:
            log.exception("unpublishing this node's replicas failed; others see them go stale")

    def mine(self, ep: Endpoint) -> bool:
        return ep.provider is None and ep.node in (None, self.node)

    def replicas(self, name: str) -> list[Replica]:
        """The endpoint's replicas: from the runtime here, or as their node published them."""
        ep = self.endpoints.get(name)
        if ep is None or ep.provider is not None or self.mine(ep):
            return self.runtime.replicas(name)
        return self.directory.replicas(ep)

    def unreachable(self, ep: Endpoint) -> str | None:
        """Why this server cannot reach the replicas of ``ep`` (another node's)."""
        if ep.provider is not None or self.mine(ep):
            return None
        return self.directory.unreachable(ep)

    def rollout(self, name: str) -> Rollout | None:
        ep = self.endpoints.get(name)
        return self.runtime.rollout(name) if ep is not None and self.mine(ep) else None

    async def reconcile(self) -> None:
        """Re-read the desired endpoints now, and apply them."""
        await self._load(await revisions(self.db, self.watches), endpoints=True)

    async def refresh(self, revs: tuple[int, ...]) -> None:
        ep_rev, rep_rev = revs
        if (ep_rev, rep_rev) != self._revs:
            await self._load((ep_rev, rep_rev), endpoints=ep_rev != self._revs[0])

    async def _load(self, revs: tuple[int, ...], *, endpoints: bool) -> None:
        async with self._lock:
            try:
                if endpoints or revs[1] != self._revs[1]:
                    await self.directory.load()
                if endpoints:
                    found = await self.repo.all()
                    unowned = [ep.name for ep in found if ep.provider is None and ep.node is None]
                    if unowned and await self.repo.claim(unowned, self.node):
                        found = await self.repo.all()
                    self.endpoints = {ep.name: ep for ep in found}
                    self._tell_followers()
                    await self._apply()
                self._revs = (revs[0], revs[1])
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
        local = {name for name, ep in desired.items() if self.mine(ep)}
        for name in local:
            await self.runtime.apply(desired[name])
        for name in self.runtime.endpoints() - local:
            await self.runtime.delete(name)
        self.healthy = True

    async def _reapply(self) -> None:
        async with self._lock:
            await self._apply()

    def _unhealthy(self, exc: BaseException) -> None:
        self.healthy = False
