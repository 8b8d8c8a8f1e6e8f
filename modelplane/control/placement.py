"""Endpoints on several nodes sharing one database.

A local endpoint belongs to one node (``Endpoint.node``); only servers of that node run
its replicas. :class:`Publisher` writes the replicas this server supervises to the
``replicas`` table whenever one changes, and touches them every ``HEARTBEAT_S`` so
that the others can tell a node that went away. :class:`Directory` is the other side:
the published replicas of every other node, reloaded when the ``replicas`` revision
changes (never per request), as :class:`Replica` objects the router uses like its own,
or marked failed with the reason this server cannot use them.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
from pathlib import Path

from modelplane import tasks
from modelplane.runtimes.base import Replica, ReplicaStatus, Runtime
from modelplane.store.db import Database, utc_now
from modelplane.store.records import Endpoint
from modelplane.store.replicas import Published, ReplicaRepo

log = logging.getLogger(__name__)

PUBLISH_CHECK_S = 0.25
"""How often the supervised replicas are compared (in memory) with what was published."""
HEARTBEAT_S = 15.0
"""How often a node touches its published replicas while nothing changes."""
STALE_S = 60.0
"""Published replicas untouched for this long belong to a node that is gone."""


def machine_id() -> str:
    """This machine (loopback addresses of another are not ours to reach)."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            found = Path(path).read_text().strip()
        except OSError:
            continue
        if found:
            return found
    return socket.gethostname()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Publisher:
    def __init__(self, db: Database, runtime: Runtime, node: str, machine: str) -> None:
        self.repo = ReplicaRepo(db)
        self.runtime = runtime
        self.node = node
        self.machine = machine
        self._last: list[Published] | None = None
        self._written = 0.0
        self._loop = tasks.Loop("replica publisher", self.step, PUBLISH_CHECK_S, first_now=True)

    def current(self) -> list[Published]:
        rt = self.runtime
        return [
            Published(
                self.node,
                r.id,
                name,
                self.machine,
                r.generation,
                r.url,
                r.status.value,
                r.restarts,
                r.last_error,
            )
            for name in sorted(rt.endpoints())
            for r in rt.replicas(name)
        ]

    async def step(self) -> None:
        if not self.runtime.supervising:
            return
        now = self.current()
        if now != self._last:
            await self.repo.replace(self.node, now)
            self._last = now
            self._written = time.monotonic()
        elif time.monotonic() - self._written >= HEARTBEAT_S:
            await self.repo.touch(self.node)
            self._written = time.monotonic()

    def start(self) -> None:
        self._loop.start()

    async def close(self) -> None:
        await self._loop.close()

    async def unpublish(self) -> None:
        """Once the runtime is closed: its replicas are gone, so say so at once."""
        if self._last:
            await self.repo.replace(self.node, [])
            self._last = []


class Directory:
    """Replicas that servers of other nodes published."""

    def __init__(self, db: Database, node: str, machine: str) -> None:
        self.repo = ReplicaRepo(db)
        self.node = node
        self.machine = machine
        self._by_endpoint: dict[str, list[Published]] = {}
        self._usable: dict[str, list[Replica]] = {}
        self._reasons: dict[str, str] = {}

    async def load(self) -> None:
        by: dict[str, list[Published]] = {}
        for p in await self.repo.all():
            if p.node != self.node:
                by.setdefault(p.endpoint, []).append(p)
        self._by_endpoint = by
        self._usable, self._reasons = {}, {}
        for name, pubs in by.items():
            self._usable[name] = [self._replica(p) for p in pubs]

    def _replica(self, p: Published) -> Replica:
        index = int(p.id.rsplit("-", 1)[1]) if p.id.rsplit("-", 1)[-1].isdigit() else 0
        rep = Replica(
            p.endpoint,
            index,
            p.generation,
            ReplicaStatus(p.status),
            p.url,
            p.restarts,
            p.last_error,
            {"node": p.node},
        )
        if is_loopback(rep.host) and p.machine != self.machine:
            rep.status = ReplicaStatus.FAILED
            rep.last_error = (
                f"endpoint '{p.endpoint}' runs on node '{p.node}', whose replicas listen on "
                f"{rep.host} only; set MODELPLANE_REPLICA_HOST on node '{p.node}' to an "
                "address this node can reach"
            )
            self._reasons[p.endpoint] = rep.last_error
        return rep

    def _published(self, ep: Endpoint) -> list[Published]:
        return [p for p in self._by_endpoint.get(ep.name, []) if p.node == ep.node]

    def _stale(self, ep: Endpoint) -> str | None:
        pubs = self._published(ep)
        stamps = [p.updated_at for p in pubs if p.updated_at is not None]
        if not stamps:
            return None
        age = (utc_now() - max(stamps)).total_seconds()
        if age <= STALE_S:
            return None
        return (
            f"endpoint '{ep.name}' runs on node '{ep.node}', which last published its "
            f"replicas {age:.0f} s ago (a running node does every {HEARTBEAT_S:g} s); is a "
            f"server with MODELPLANE_NODE_NAME={ep.node} still running?"
        )

    def replicas(self, ep: Endpoint) -> list[Replica]:
        reps = [r for r in self._usable.get(ep.name, []) if r.details.get("node") == ep.node]
        stale = self._stale(ep)
        if stale is None:
            return reps
        return [_failed(r, stale) for r in reps]

    def unreachable(self, ep: Endpoint) -> str | None:
        """Why this server cannot route to ``ep``'s replicas (None: it can, or they are
        just not ready yet)."""
        if ep.replicas == 0:
            return None
        if not self._published(ep):
            return (
                f"endpoint '{ep.name}' runs on node '{ep.node}', which has published no "
                f"replicas for it; is a server with MODELPLANE_NODE_NAME={ep.node} running "
                "against this database?"
            )
        stale = self._stale(ep)
        if stale is not None:
            return stale
        if any(r.status == ReplicaStatus.READY for r in self.replicas(ep)):
            return None
        return self._reasons.get(ep.name)


def _failed(r: Replica, why: str) -> Replica:
    out = r.snapshot()
    out.status = ReplicaStatus.FAILED
    out.last_error = why
    return out
