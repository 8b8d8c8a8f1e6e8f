"""One loop per server process that tells the in-process caches when to reload.

Every write bumps its collection's revision in the same transaction. Once per
``interval_s`` the watcher reads the revisions of every collection its subscribers
follow, in one query, and hands each subscriber whose collections changed their new
revisions, in the order they subscribed (so a cache can build on one refreshed before
it). A change made through any process thus reaches every process within about an
interval, for one tiny query per interval however many caches there are. A subscriber
that fails is logged, keeps what it holds, and is offered the same revisions again on
the next pass; the others go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from modelplane.store.db import Database
from modelplane.store.revisions import revisions
from modelplane.tasks import Loop

log = logging.getLogger(__name__)


class Subscriber(Protocol):
    @property
    def watches(self) -> tuple[str, ...]:
        """The collections whose changes concern it."""
        ...

    async def refresh(self, revisions: tuple[int, ...]) -> None:
        """Catch up with ``revisions`` (of ``watches``, in order), read before the call:
        a subscriber already there (it reloaded after its own write) does nothing."""
        ...


@dataclass(slots=True)
class _Entry:
    subscriber: Subscriber
    seen: tuple[int, ...] | None = None
    """The revisions it last caught up with (None: not yet offered any)."""


class Watcher:
    def __init__(self, db: Database, interval_s: float = 1.0) -> None:
        self.db = db
        self.interval_s = interval_s
        self._entries: list[_Entry] = []
        self._names: tuple[str, ...] = ()
        self._loop = Loop("revision watcher", self.poll, interval_s)

    def subscribe(self, *subscribers: Subscriber) -> None:
        """Follow ``subscribers``, refreshed after those subscribed before them."""
        for sub in subscribers:
            self._entries.append(_Entry(sub))
            self._names = tuple(dict.fromkeys(self._names + tuple(sub.watches)))

    async def poll(self) -> None:
        """One pass: read every revision, then refresh the subscribers that are behind."""
        if not self._names:
            return
        current = dict(zip(self._names, await revisions(self.db, self._names), strict=True))
        for entry in self._entries:
            revs = tuple(current[name] for name in entry.subscriber.watches)
            if revs == entry.seen:
                continue
            try:
                await entry.subscriber.refresh(revs)
            except Exception:
                log.exception(
                    "refreshing %s failed; it keeps what it has and is retried",
                    type(entry.subscriber).__name__,
                )
            else:
                entry.seen = revs

    def start(self) -> None:
        """Poll every ``interval_s``; a failed read is logged and the caches keep what
        they have until the next one."""
        self._loop.start()

    async def close(self) -> None:
        await self._loop.close()
