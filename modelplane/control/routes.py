"""Routes: validated, persisted, and cached for the gateway (no query per request).

Routes come from two places: the control API (``PUT /api/routes/{name}``) and the
``routes`` section of ``modelplane.yaml``, which is reconciled into the database at
start. A declared route belongs to the file: the API refuses to change it, and it is
removed when it leaves the file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from modelplane.control.endpoints import NAME
from modelplane.control.snapshot import Snapshot
from modelplane.errors import Conflict, InvalidRequest, NotFound, first_invalid
from modelplane.gateway.routes import RouteSpec
from modelplane.store.db import Database
from modelplane.store.records import Endpoint, Route
from modelplane.store.repos import RouteRepo

log = logging.getLogger(__name__)


def parse_spec(raw: Mapping[str, Any]) -> RouteSpec:
    try:
        return RouteSpec.model_validate(raw)
    except ValidationError as exc:
        where, why = first_invalid(exc.errors())
        raise InvalidRequest(f"{where}: {why}" if where else why, param=where or None) from None


def route_view(route: Route) -> dict[str, Any]:
    return {
        "name": route.name,
        **RouteSpec.model_validate(route.spec).model_dump(),
        "source": route.source,
        "created_at": route.created_at.isoformat(),
        "updated_at": route.updated_at.isoformat(),
    }


class RouteService(Snapshot):
    collection = "routes"

    def __init__(self, db: Database, refresh_interval_s: float = 1.0) -> None:
        super().__init__(db, refresh_interval_s)
        self.repo = RouteRepo(db)
        self.routes: dict[str, Route] = {}
        """The snapshot the gateway routes by; replaced (never mutated) on change."""

    async def load(self) -> None:
        self.routes = {r.name: r for r in await self.repo.all()}

    def _check(self, name: str, spec: RouteSpec, endpoints: Mapping[str, Endpoint]) -> None:
        if not NAME.match(name):
            raise InvalidRequest(
                "a route name is 1-63 characters of a-z, 0-9, '.', '_' or '-'", param="name"
            )
        missing = sorted(spec.endpoints() - endpoints.keys())
        if missing:
            raise InvalidRequest(
                f"no endpoint named {', '.join(repr(m) for m in missing)}; create it first",
                param="targets",
            )
        taken = {
            a: r.name
            for r in self.routes.values()
            if r.name != name
            for a in RouteSpec.model_validate(r.spec).aliases
        }
        for alias in spec.aliases:
            if (alias in self.routes and alias != name) or alias in endpoints:
                raise Conflict(f"alias '{alias}' is already the name of a route or endpoint")
            if alias in taken:
                raise Conflict(f"alias '{alias}' already belongs to route '{taken[alias]}'")

    async def put(
        self, name: str, raw: Mapping[str, Any], endpoints: Mapping[str, Endpoint]
    ) -> tuple[Route, bool]:
        spec = parse_spec(raw)
        current = await self.repo.get(name)
        if current is not None and current.source == "config":
            raise Conflict(f"route '{name}' is declared in modelplane.yaml; change it there")
        self._check(name, spec, endpoints)
        route, created = await self.repo.put(name, spec.model_dump(exclude_defaults=True), "api")
        await self.reload()
        return route, created

    async def get(self, name: str) -> Route:
        route = await self.repo.get(name)
        if route is None:
            raise NotFound(f"no route named '{name}'")
        return route

    async def list(self) -> list[Route]:
        return await self.repo.all()

    async def delete(self, name: str) -> None:
        current = await self.get(name)
        if current.source == "config":
            raise Conflict(f"route '{name}' is declared in modelplane.yaml; remove it there")
        await self.repo.delete(name)
        await self.reload()

    async def sync_declared(
        self, declared: Mapping[str, Mapping[str, Any]], endpoints: Mapping[str, Endpoint]
    ) -> None:
        """Make the ``config`` routes in the database match ``modelplane.yaml``. A route
        the file gets wrong is reported and skipped; the others still apply."""
        await self.reload()
        for name, raw in declared.items():
            try:
                spec = parse_spec(raw)
                self._check(name, spec, endpoints)
            except (InvalidRequest, Conflict) as exc:
                log.error("modelplane.yaml: route '%s' was not applied: %s", name, exc.message)
                continue
            await self.repo.put(name, spec.model_dump(exclude_defaults=True), "config")
        for route in await self.repo.all():
            if route.source == "config" and route.name not in declared:
                await self.repo.delete(route.name)
        await self.reload()
