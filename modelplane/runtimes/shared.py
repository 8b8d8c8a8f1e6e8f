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
from pathlib import Path
from typing import Any

from modelplane.runtimes.base import Replica, ReplicaStatus
from modelplane.runtimes.local import LocalRuntime
from modelplane.store.records import Endpoint

log = logging.getLogger(__name__)

FOLLOW_POLL_S = 0.2


class SharedLocalRuntime:
    def __init__(self, *, home: Path, **local: Any) -> None:
        self.home = home
        self.local = LocalRuntime(home=home, **local)
        self.lock_path = home / "runtime.lock"
        self.state_path = home / "replicas.json"
        self._lock_fd: int | None = None
        self._seen: tuple[int, int] | None = None
        self._followed: dict[str, list[Replica]] = {}
        self._publisher: asyncio.Task[None] | None = None

    @property
    def leader(self) -> bool:
        return self._lock_fd is not None

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
            self._publisher = asyncio.create_task(self._publish_loop(), name="replica state")
        return True

    async def _publish_loop(self) -> None:
        while True:
            self._publish()
            await self.local.wait_changed()

    def _publish(self) -> None:
        state = {
            name: [r.view() | {"endpoint": name} for r in self.local.replicas(name)]
            for name in self.local.endpoints()
        }
        tmp = self.state_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "endpoints": state}))
        os.replace(tmp, self.state_path)

    def _follow(self) -> None:
        try:
            st = self.state_path.stat()
        except FileNotFoundError:
            self._followed = {}
            return
        seen = (st.st_mtime_ns, st.st_size)
        if seen == self._seen:
            return
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return  # mid-replace on an exotic filesystem: keep the last state
        self._seen = seen
        self._followed = {
            name: [
                Replica(
                    name,
                    r["index"],
                    r["generation"],
                    ReplicaStatus(r["status"]),
                    r["url"] or "",
                    r["pid"],
                    r["restarts"],
                    r["last_error"],
                )
                for r in reps
            ]
            for name, reps in data.get("endpoints", {}).items()
        }

    async def apply(self, endpoint: Endpoint) -> None:
        if self._try_lead():
            await self.local.apply(endpoint)

    async def delete(self, name: str) -> None:
        if self._try_lead():
            await self.local.delete(name)
            return
        # The supervisor deletes it on its next reconcile: wait until it is gone.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        # Another process's state, in a file: polled (no in-process event can tell).
        while self.replicas(name) and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(FOLLOW_POLL_S)

    def replicas(self, name: str) -> list[Replica]:
        if self.leader:
            return self.local.replicas(name)
        self._follow()
        return self._followed.get(name, [])

    async def wait_ready(self, name: str, count: int = 1) -> None:
        while sum(r.status == ReplicaStatus.READY for r in self.replicas(name)) < count:
            if self.leader:
                await self.local.wait_changed()
            else:
                await asyncio.sleep(FOLLOW_POLL_S)

    def endpoints(self) -> set[str]:
        return self.local.endpoints() if self.leader else set()

    async def close(self) -> None:
        await self.local.close()
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
            self._publish()  # nothing runs any more: say so
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
