"""The runtime contract: make the running replicas of an endpoint match its spec."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from modelplane.store.records import Endpoint


class ReplicaStatus(enum.StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"
    STOPPING = "stopping"


@dataclass(slots=True)
class Replica:
    endpoint: str
    index: int
    generation: int
    status: ReplicaStatus = ReplicaStatus.PENDING
    url: str = ""
    pid: int | None = None
    restarts: int = 0
    last_error: str | None = None

    def view(self) -> dict[str, object]:
        return {
            "index": self.index,
            "status": self.status.value,
            "url": self.url or None,
            "pid": self.pid,
            "generation": self.generation,
            "restarts": self.restarts,
            "last_error": self.last_error,
        }


class Runtime(Protocol):
    async def apply(self, endpoint: Endpoint) -> None:
        """Converge on the endpoint's spec; idempotent and quick (work happens behind)."""
        ...

    async def delete(self, name: str) -> None:
        """Stop every replica of the endpoint and wait until they are gone."""
        ...

    def replicas(self, name: str) -> list[Replica]: ...

    async def wait_ready(self, name: str, count: int = 1) -> None:
        """Return once the endpoint has ``count`` ready replicas."""
        ...

    def endpoints(self) -> set[str]: ...

    async def close(self) -> None: ...
