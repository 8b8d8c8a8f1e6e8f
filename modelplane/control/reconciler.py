"""Desired state (the ``endpoints`` table) → actual state (the runtime), in a loop.

The reconciler also holds the snapshot of endpoints the gateway routes by, refreshed
when the ``endpoints`` revision changes, so routing never queries the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from modelplane.runtimes.base import Runtime
from modelplane.store.db import Database
from modelplane.store.records import Endpoint
from modelplane.store.repos import EndpointRepo, revision

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(
        self, db: Database, runtime: Runtime, *, interval_s: float = 2.0, poll_s: float = 1.0
    ) -> None:
        self.db = db
        self.repo = EndpointRepo(db)
        self.runtime = runtime
        self.interval_s = interval_s
        self.poll_s = poll_s
        self.endpoints: dict[str, Endpoint] = {}
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
        async with self._lock:
            rev = await revision(self.db, "endpoints")
            desired = {ep.name: ep for ep in await self.repo.all()}
            self.endpoints = desired
            self._rev = rev
            local = {name for name, ep in desired.items() if ep.provider is None}
            for name in local:
                await self.runtime.apply(desired[name])
            for name in self.runtime.endpoints() - local:
                await self.runtime.delete(name)
            self.healthy = True

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_full = loop.time()
        while True:
            # Writes through this process reconcile at once (the API calls reconcile());
            # this loop catches writes by other processes and replicas that drifted.
            await asyncio.sleep(self.poll_s)
            try:
                full_due = loop.time() - last_full >= self.interval_s
                if full_due or await revision(self.db, "endpoints") != self._rev:
                    await self.reconcile()
                    last_full = loop.time()
            except Exception:
                self.healthy = False
                log.exception("reconciling endpoints failed; retrying")
