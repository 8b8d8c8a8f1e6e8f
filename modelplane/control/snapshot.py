"""An in-process copy of one collection, reloaded when its revision changes.

Every write bumps the collection's revision in the same transaction; the process's
:class:`~modelplane.control.watcher.Watcher` reads the revisions once a second and
refreshes the snapshots whose revision moved, so a change made through any process
reaches every process's hot path within about a second, with no query per request.
"""

from __future__ import annotations

import asyncio

from modelplane.store.db import Database
from modelplane.store.revisions import revisions


class Snapshot:
    """Subclasses name their ``collection`` (or, reading several, override ``watches``)
    and implement ``load``."""

    collection: str

    def __init__(self, db: Database) -> None:
        self.db = db
        self._rev: tuple[int, ...] = ()
        self._loading = asyncio.Lock()
        """One load at a time, so that a slow load of an older state can never replace
        a newer one (two writes through this process reload at once)."""

    @property
    def watches(self) -> tuple[str, ...]:
        return (self.collection,)

    async def load(self) -> None:
        """Read the collection; replace (never mutate) what readers hold."""
        raise NotImplementedError

    async def start(self) -> None:
        await self.reload()

    async def reload(self) -> None:
        """Catch up now (after a write through this process, say)."""
        async with self._loading:
            await self._catch_up(await revisions(self.db, self.watches))

    async def refresh(self, revisions: tuple[int, ...]) -> None:
        async with self._loading:
            await self._catch_up(revisions)

    async def _catch_up(self, rev: tuple[int, ...]) -> None:
        """Load unless ``rev`` is what was loaded last; the data read is at least as new
        as ``rev``, as it is read after it."""
        if rev != self._rev:
            await self.load()
            self._rev = rev
