"""Endpoints: validate, persist the desired state, let the reconciler converge."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from modelplane.control.audit import AuditLog
from modelplane.control.names import NAME
from modelplane.control.reconciler import Reconciler
from modelplane.control.routes import RouteService
from modelplane.control.teams import TeamService
from modelplane.engines import registry as engines
from modelplane.errors import Conflict, InvalidRequest, NotFound, PermissionDenied, first_invalid
from modelplane.gateway.health import Health, HealthCheck
from modelplane.gateway.routes import RouteSpec
from modelplane.identity import Caller
from modelplane.providers import registry as providers
from modelplane.runtimes.base import ReplicaStatus
from modelplane.store.records import GATEWAY_OPTIONS, Endpoint
from modelplane.store.repos import DuplicateName, EndpointRepo

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
    if "health_check" in options:
        raise InvalidRequest(
            "options.health_check is for external endpoints; modelplane checks its own "
            "replicas' /health every MODELPLANE_HEALTH_INTERVAL_S",
            param="options",
        )
    engine_options = {k: v for k, v in options.items() if k not in GATEWAY_OPTIONS}
    try:
        engines.check(engine, model, engine_options)
    except ValueError as exc:
        msg = str(exc)
        raise InvalidRequest(
            msg, param="options" if msg.startswith("options.") else "model"
        ) from None


CREDENTIAL_REF = re.compile(r"^(env|secret):[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


def _check_provider(provider: str, options: dict[str, Any]) -> None:
    if provider not in providers.names():
        raise InvalidRequest(
            f"unknown provider '{provider}'; available: {', '.join(providers.names())}",
            param="provider",
        )
    base_url = options.get("base_url")
    if base_url is not None and not (
        isinstance(base_url, str) and base_url.startswith(("http://", "https://"))
    ):
        raise InvalidRequest("options.base_url must be an http(s) URL", param="options")
    creds = options.get("credentials", {})
    if not isinstance(creds, dict) or not all(
        isinstance(v, str) and CREDENTIAL_REF.match(v) for v in creds.values()
    ):
        # Options are shown by the API; a secret written here would be shown too.
        raise InvalidRequest(
            "options.credentials maps a field to 'env:VARIABLE' or 'secret:NAME', never "
            "to the secret itself",
            param="options",
        )
    if options.get("health_check") is not None:
        try:
            check = HealthCheck.model_validate(options["health_check"])
        except ValidationError as exc:
            where, why = first_invalid(exc.errors())
            raise InvalidRequest(f"options.health_check.{where}: {why}", param="options") from None
        default = providers.get(provider).health_path
        if check.path is None and default is None:
            raise InvalidRequest(
                f"options.health_check needs a 'path' for the {provider} provider, which has "
                "no cheap read-only request of its own to check: give the path of one that "
                "answers 2xx when the upstream is up (GET base_url + path, with the "
                "endpoint's credentials), or leave health_check out",
                param="options",
            )


class EndpointService:
    """Every call names its caller: another team's private endpoint reads as missing
    (404); one shared with the caller can be used and read but not changed (403)."""

    def __init__(
        self,
        reconciler: Reconciler,
        teams: TeamService,
        routes: RouteService,
        *,
        health: Callable[[str], Health | None] | None = None,
    ) -> None:
        self.reconciler = reconciler
        self.health = health
        self.db = reconciler.db
        self.repo = EndpointRepo(reconciler.db)
        self.audit = AuditLog(reconciler.db)
        self.teams = teams
        self.routes = routes

    def state(self, ep: Endpoint) -> dict[str, Any]:
        """The desired state: the view without the replicas' live status (what the audit
        log records)."""
        common = {
            "name": ep.name,
            "model": ep.model,
            "options": ep.options,
            "generation": ep.generation,
            **self.teams.owner_view(ep.owner),
            "created_at": ep.created_at.isoformat(),
            "updated_at": ep.updated_at.isoformat(),
        }
        if ep.provider is not None:
            return {**common, "provider": ep.provider}
        return {**common, "engine": ep.engine, "replicas": ep.replicas}

    def view(self, ep: Endpoint) -> dict[str, Any]:
        if ep.provider is not None:
            view = {**self.state(ep), "status": "external"}
            if ep.options.get("health_check") is not None:
                health = (self.health(ep.name) if self.health else None) or Health()
                view["health"] = health.view()
                if not health.healthy:
                    view["status"] = "failed"  # out of service until its check passes
            return view
        replicas = self.reconciler.runtime.replicas(ep.name)
        ready = sum(r.status == ReplicaStatus.READY for r in replicas)
        return {
            **self.state(ep),
            "ready_replicas": ready,
            "status": "ready" if ready else ("stopped" if ep.replicas == 0 else "starting"),
            "replica_status": [r.view() for r in replicas],
        }

    async def create(
        self,
        caller: Caller,
        *,
        name: str,
        model: str,
        options: dict[str, Any],
        engine: str | None = None,
        provider: str | None = None,
        replicas: int = 1,
        team: str | None = None,
        shared_with: list[str] | None = None,
    ) -> Endpoint:
        if not (caller.is_admin or caller.role == "team_admin") or not caller.allows("write"):
            raise PermissionDenied("creating endpoints needs an admin or team_admin key")
        owner = self.teams.owner(caller, team, shared_with)
        if not NAME.match(name):
            raise InvalidRequest(
                "name must be 1-63 characters of a-z, 0-9, '.', '_' or '-', "
                "starting with a letter or digit",
                param="name",
            )
        if provider is not None:
            if engine is not None:
                raise InvalidRequest("give an engine or a provider, not both", param="engine")
            _check_provider(provider, options)
            engine, replicas = "", 0
        else:
            engine = engine or "llamacpp"
            _check_replicas(replicas)
            _check_spec(engine, model, options)
        try:
            async with self.db.transaction():
                ep = await self.repo.add(
                    name=name,
                    engine=engine,
                    provider=provider,
                    model=model,
                    replicas=replicas,
                    options=options,
                    owner=owner,
                )
                await self.audit.record(
                    caller, "endpoint.create", "endpoint", name, None, self.state(ep), owner.team_id
                )
        except DuplicateName:
            raise Conflict(f"an endpoint named '{name}' already exists") from None
        await self.reconciler.reconcile()
        return ep

    async def list(self, caller: Caller) -> list[Endpoint]:
        return [ep for ep in await self.repo.all() if caller.can_read(ep.owner)]

    async def get(self, caller: Caller, name: str) -> Endpoint:
        ep = await self.repo.get(name)
        if ep is None or not caller.can_read(ep.owner):
            raise NotFound(f"no endpoint named '{name}'")
        return ep

    async def _managed(self, caller: Caller, name: str) -> Endpoint:
        ep = await self.get(caller, name)
        if not caller.can_manage(ep.owner):
            raise PermissionDenied(
                f"endpoint '{name}' is shared with you; only its own team can change it"
            )
        return ep

    async def update(self, caller: Caller, name: str, changes: dict[str, Any]) -> Endpoint:
        current = await self._managed(caller, name)
        if "shared_with" in changes:
            changes["shared_with"] = self.teams.share_ids(changes["shared_with"])
        if current.provider is not None:
            if changes.keys() & {"engine", "replicas"}:
                raise InvalidRequest(
                    f"'{name}' is served by the {current.provider} provider; it has no engine "
                    "or replicas",
                    param="engine" if "engine" in changes else "replicas",
                )
            _check_provider(current.provider, changes.get("options", current.options))
        elif "provider" in changes:
            raise InvalidRequest("an endpoint cannot change to a provider", param="provider")
        _check_replicas(changes.get("replicas"))
        if current.provider is None and changes.keys() & {"engine", "model", "options"}:
            _check_spec(
                changes.get("engine", current.engine),
                changes.get("model", current.model),
                changes.get("options", current.options),
            )
        async with self.db.transaction():
            ep = await self.repo.update(name, changes)
            if ep is None:
                raise NotFound(f"no endpoint named '{name}'")
            await self.audit.record(
                caller,
                "endpoint.update",
                "endpoint",
                name,
                self.state(current),
                self.state(ep),
                ep.owner.team_id,
            )
        await self.reconciler.reconcile()
        return ep

    async def delete(self, caller: Caller, name: str) -> None:
        current = await self._managed(caller, name)
        users = sorted(
            r.name
            for r in self.routes.routes.values()
            if name in RouteSpec.model_validate(r.spec).endpoints()
        )
        if users:
            raise Conflict(
                f"endpoint '{name}' is used by route(s) {', '.join(users)}; change or "
                "delete them first"
            )
        async with self.db.transaction():
            if not await self.repo.delete(name):
                raise NotFound(f"no endpoint named '{name}'")
            await self.audit.record(
                caller,
                "endpoint.delete",
                "endpoint",
                name,
                self.state(current),
                None,
                current.owner.team_id,
            )
        # Returns once every replica process is gone.
        await self.reconciler.reconcile()
