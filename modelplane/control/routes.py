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

from modelplane.control.audit import AuditLog
from modelplane.control.names import NAME
from modelplane.control.snapshot import Snapshot
from modelplane.control.teams import TeamService
from modelplane.errors import Conflict, InvalidRequest, NotFound, PermissionDenied, first_invalid
from modelplane.gateway.routes import RouteSpec
from modelplane.identity import Caller
from modelplane.store.db import Database
from modelplane.store.records import Endpoint, Route
from modelplane.store.repos import RouteRepo

log = logging.getLogger(__name__)

SYSTEM = Caller("system:config", "admin")
"""Who applies ``modelplane.yaml``."""


def parse_spec(raw: Mapping[str, Any]) -> RouteSpec:
    try:
        return RouteSpec.model_validate(raw)
    except ValidationError as exc:
        where, why = first_invalid(exc.errors())
        raise InvalidRequest(f"{where}: {why}" if where else why, param=where or None) from None


def route_view(route: Route, teams: TeamService) -> dict[str, Any]:
    return {
        "name": route.name,
        **RouteSpec.model_validate(route.spec).model_dump(),
        **teams.owner_view(route.owner),
        "source": route.source,
        "created_at": route.created_at.isoformat(),
        "updated_at": route.updated_at.isoformat(),
    }


class RouteService(Snapshot):
    collection = "routes"

    def __init__(self, db: Database, teams: TeamService) -> None:
        super().__init__(db)
        self.teams = teams
        self.repo = RouteRepo(db)
        self.audit = AuditLog(db)
        self.routes: dict[str, Route] = {}
        """The snapshot the gateway routes by; replaced (never mutated) on change."""

    async def load(self) -> None:
        self.routes = {r.name: r for r in await self.repo.all()}

    def _check(
        self,
        name: str,
        spec: RouteSpec,
        endpoints: Mapping[str, Endpoint],
        caller: Caller | None = None,
    ) -> None:
        if not NAME.match(name):
            raise InvalidRequest(
                "a route name is 1-63 characters of a-z, 0-9, '.', '_' or '-'", param="name"
            )
        usable = {n for n, ep in endpoints.items() if caller is None or caller.can_read(ep.owner)}
        missing = sorted(spec.endpoints() - usable)
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
        self,
        caller: Caller,
        name: str,
        raw: Mapping[str, Any],
        endpoints: Mapping[str, Endpoint],
    ) -> tuple[Route, bool]:
        """Create or replace. ``raw`` is a route spec plus, optionally, ``team`` and
        ``shared_with`` (who owns it and who else may call it)."""
        body = dict(raw)
        team, shared_with = body.pop("team", None), body.pop("shared_with", None)
        spec = parse_spec(body)
        current = await self.repo.get(name)
        if current is None:
            if not (caller.is_admin or caller.role == "team_admin") or not caller.allows("write"):
                raise PermissionDenied("creating routes needs an admin or team_admin key")
            owner = self.teams.owner(caller, team, shared_with)
        else:
            if not caller.can_read(current.owner):
                raise Conflict(f"the name '{name}' is taken by another team's route")
            if not caller.can_manage(current.owner):
                raise PermissionDenied(
                    f"route '{name}' is shared with you; only its team changes it"
                )
            if current.source == "config":
                raise Conflict(f"route '{name}' is declared in modelplane.yaml; change it there")
            owner = current.owner
            if team is not None or shared_with is not None:
                owner = self.teams.owner(
                    caller,
                    team if team is not None else self.teams.name_of(owner.team_id),
                    shared_with if shared_with is not None else None,
                )
        self._check(name, spec, endpoints, caller)
        async with self.db.transaction():
            route, created = await self.repo.put(
                name, spec.model_dump(exclude_defaults=True), "api", owner
            )
            await self._record(caller, "route.put", current, route)
        await self.reload()
        return route, created

    async def _record(
        self, caller: Caller, action: str, before: Route | None, after: Route | None
    ) -> None:
        """The audit event of a route change (``None``: absent before, or after)."""
        route = after or before
        assert route is not None
        await self.audit.record(
            caller,
            action,
            "route",
            route.name,
            route_view(before, self.teams) if before else None,
            route_view(after, self.teams) if after else None,
            route.owner.team_id,
        )

    async def get(self, caller: Caller, name: str) -> Route:
        route = await self.repo.get(name)
        if route is None or not caller.can_read(route.owner):
            raise NotFound(f"no route named '{name}'")
        return route

    async def list(self, caller: Caller) -> list[Route]:
        return [r for r in await self.repo.all() if caller.can_read(r.owner)]

    async def delete(self, caller: Caller, name: str) -> None:
        current = await self.get(caller, name)
        if not caller.can_manage(current.owner):
            raise PermissionDenied(f"route '{name}' is shared with you; only its team deletes it")
        if current.source == "config":
            raise Conflict(f"route '{name}' is declared in modelplane.yaml; remove it there")
        async with self.db.transaction():
            if not await self.repo.delete(name):
                raise NotFound(f"no route named '{name}'")
            await self._record(caller, "route.delete", current, None)
        await self.reload()

    async def sync_declared(
        self, declared: Mapping[str, Mapping[str, Any]], endpoints: Mapping[str, Endpoint]
    ) -> None:
        """Make the ``config`` routes in the database match ``modelplane.yaml``. A route
        the file gets wrong is reported and skipped; the others still apply."""
        await self.reload()
        for name, raw in declared.items():
            try:
                body = dict(raw)
                team, shared_with = body.pop("team", None), body.pop("shared_with", None)
                owner = self.teams.owner(SYSTEM, team, shared_with)
                spec = parse_spec(body)
                self._check(name, spec, endpoints)
            except (InvalidRequest, Conflict) as exc:
                log.error("modelplane.yaml: route '%s' was not applied: %s", name, exc.message)
                continue
            async with self.db.transaction():
                current = await self.repo.get(name)
                route, _ = await self.repo.put(
                    name, spec.model_dump(exclude_defaults=True), "config", owner
                )
                await self._record(SYSTEM, "route.put", current, route)
        for route in await self.repo.all():
            if route.source == "config" and route.name not in declared:
                async with self.db.transaction():
                    if await self.repo.delete(route.name):
                        await self._record(SYSTEM, "route.delete", route, None)
        await self.reload()
