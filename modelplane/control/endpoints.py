"""Endpoints: validate, persist the desired state, let the reconciler converge."""

from __future__ import annotations

import re
from typing import Any

from modelplane.control.reconciler import Reconciler
from modelplane.engines import registry as engines
from modelplane.errors import Conflict, InvalidRequest, NotFound
from modelplane.runtimes.base import ReplicaStatus
from modelplane.store.records import GATEWAY_OPTIONS, Endpoint
from modelplane.store.repos import DuplicateName, EndpointRepo

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MAX_REPLICAS = 64


def _check_replicas(replicas: int | None) -> None:
    if replicas is not None and not 0 <= replicas <= MAX_REPLICAS:
        raise InvalidRequest(f"replicas must be between 0 and {MAX_REPLICAS}", param="replicas")


def _check_spec(engine: str, model: str, options: dict[str, Any]) -> None:
    if engine not in engines.names():
        raise InvalidRequest(
            f"unknown engine '{engine}'; available: {', '.join(engines.names())}",
            param="engine",
        )
    engine_options = {k: v for k, v in options.items() if k not in GATEWAY_OPTIONS}
    try:
        engines.check(engine, model, engine_options)
    except ValueError as exc:
        msg = str(exc)
        raise InvalidRequest(
            msg, param="options" if msg.startswith("options.") else "model"
        ) from None


class EndpointService:
    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self.repo = EndpointRepo(reconciler.db)

    def view(self, ep: Endpoint) -> dict[str, Any]:
        replicas = self.reconciler.runtime.replicas(ep.name)
        ready = sum(r.status == ReplicaStatus.READY for r in replicas)
        return {
            "name": ep.name,
            "engine": ep.engine,
            "model": ep.model,
            "replicas": ep.replicas,
            "options": ep.options,
            "generation": ep.generation,
            "ready_replicas": ready,
            "status": "ready" if ready else ("stopped" if ep.replicas == 0 else "starting"),
            "replica_status": [r.view() for r in replicas],
            "created_at": ep.created_at.isoformat(),
            "updated_at": ep.updated_at.isoformat(),
        }

    async def create(
        self, *, name: str, engine: str, model: str, replicas: int, options: dict[str, Any]
    ) -> Endpoint:
        if not NAME.match(name):
            raise InvalidRequest(
                "name must be 1-63 characters of a-z, 0-9, '.', '_' or '-', "
                "starting with a letter or digit",
                param="name",
            )
        _check_replicas(replicas)
        _check_spec(engine, model, options)
        try:
            ep = await self.repo.add(
                name=name, engine=engine, model=model, replicas=replicas, options=options
            )
        except DuplicateName:
            raise Conflict(f"an endpoint named '{name}' already exists") from None
        await self.reconciler.reconcile()
        return ep

    async def list(self) -> list[Endpoint]:
        return await self.repo.all()

    async def get(self, name: str) -> Endpoint:
        ep = await self.repo.get(name)
        if ep is None:
            raise NotFound(f"no endpoint named '{name}'")
        return ep

    async def update(self, name: str, changes: dict[str, Any]) -> Endpoint:
        current = await self.get(name)
        _check_replicas(changes.get("replicas"))
        if changes.keys() & {"engine", "model", "options"}:
            _check_spec(
                changes.get("engine", current.engine),
                changes.get("model", current.model),
                changes.get("options", current.options),
            )
        ep = await self.repo.update(name, changes)
        if ep is None:
            raise NotFound(f"no endpoint named '{name}'")
        await self.reconciler.reconcile()
        return ep

    async def delete(self, name: str) -> None:
        if not await self.repo.delete(name):
            raise NotFound(f"no endpoint named '{name}'")
        # Returns once every replica process is gone.
        await self.reconciler.reconcile()
