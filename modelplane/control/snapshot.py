"""An in-process copy of one collection, reloaded when its revision changes.

Every write bumps the collection's revision in the same transaction, and each server
process polls the revision (one tiny query a second), so a change made through any
process reaches every process's hot path within about a second, with no query per
request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from modelplane.store.db import Database
from modelplane.store.repos import revision

log = logging.getLogger(__name__)


class Snapshot:
    collection: str

    def __init__(self, db: Database, refresh_interval_s: float = 1.0) -> None:
        self.db = db
        self.refresh_interval_s = refresh_interval_s
        self._rev = -1
        self._task: asyncio.Task[None] | None = None

    async def load(self) -> None:
        """Read the collection; replace (never mutate) what readers hold."""
        raise NotImplementedError

    async def reload(self) -> None:
        rev = await revision(self.db, self.collection)
        if rev != self._rev:
            await self.load()
            self._rev = rev

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.create_task(self._loop(), name=f"{self.collection} snapshot")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval_s)
            try:
                await self.reload()
            except Exception:
                log.exception("reloading %s failed; serving the last known ones", self.collection)
