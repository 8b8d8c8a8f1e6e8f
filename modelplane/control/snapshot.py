"""An in-process copy of one collection, reloaded when its revision changes.

Every write bumps the collection's revision in the same transaction; the process's
:class:`~modelplane.control.watcher.Watcher` reads the revisions once a second and
refreshes the snapshots whose revision moved, so a change made through any process
reaches every process's hot path within about a second, with no query per request.
"""

from __future__ import annotations

from modelplane.store.db import Database
from modelplane.store.repos import revision


class Snapshot:
    collection: str

    def __init__(self, db: Database) -> None:
        self.db = db
        self._rev = -1

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
        await self.refresh((await revision(self.db, self.collection),))

    async def refresh(self, revisions: tuple[int, ...]) -> None:
        (rev,) = revisions
        if rev != self._rev:
            await self.load()
            self._rev = rev
