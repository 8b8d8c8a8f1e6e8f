"""Replicas as their node publishes them (the ``replicas`` table), for other nodes.

A node writes the whole set of its replicas in one transaction whenever one changes
(never per request) and touches them now and then; every write bumps the ``replicas``
revision, so the other servers reload the table through their revision watcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update

from modelplane.store.db import Database, aware, utc_now
from modelplane.store.models import ReplicaRow
from modelplane.store.revisions import bump


@dataclass(frozen=True, slots=True)
class Published:
    node: str
    id: str
    endpoint: str
    machine: str
    generation: int
    url: str
    status: str
    restarts: int = 0
    last_error: str | None = None
    updated_at: datetime | None = None
    """When its node last wrote or touched it (set by the repository)."""


def _published(r: ReplicaRow) -> Published:
    return Published(
        r.node,
        r.id,
        r.endpoint,
        r.machine,
        r.generation,
        r.url,
        r.status,
        r.restarts,
        r.last_error,
        aware(r.updated_at),
    )


class ReplicaRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> list[Published]:
        async with self.db.session() as s:
            rows = (await s.scalars(select(ReplicaRow).order_by(ReplicaRow.id))).all()
            return [_published(r) for r in rows]

    async def replace(self, node: str, replicas: list[Published]) -> None:
        """Make ``replicas`` the whole published set of ``node``."""
        now = utc_now()
        async with self.db.session() as s:
            await s.execute(delete(ReplicaRow).where(ReplicaRow.node == node))
            for r in replicas:
                s.add(
                    ReplicaRow(
                        node=node,
                        id=r.id,
                        endpoint=r.endpoint,
                        machine=r.machine,
                        generation=r.generation,
                        url=r.url,
                        status=r.status,
                        restarts=r.restarts,
                        last_error=r.last_error,
                        updated_at=now,
                    )
                )
            await bump(s, "replicas")

    async def touch(self, node: str) -> None:
        """Say that ``node`` is still there (its replicas unchanged)."""
        async with self.db.session() as s:
            await s.execute(
                update(ReplicaRow).where(ReplicaRow.node == node).values(updated_at=utc_now())
            )
            await bump(s, "replicas")
