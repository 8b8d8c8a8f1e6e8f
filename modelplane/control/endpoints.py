"""Endpoints: validate, persist the desired state, let the reconciler converge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelplane.config import NODE_NAME
from modelplane.control.audit import AuditLog
from modelplane.control.names import NAME
from modelplane.control.reconciler import Reconciler
from modelplane.control.routes import RouteService
from modelplane.control.teams import TeamService
from modelplane.engines import registry as engines
from modelplane.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from modelplane.gateway import balancing
from modelplane.gateway.health import Health
from modelplane.gateway.routes import RouteSpec
from modelplane.identity import Caller
from modelplane.providers import registry as providers
from modelplane.runtimes.base import ReplicaStatus
from modelplane.spec import EndpointSpec
from modelplane.store.records import Endpoint
from modelplane.store.repos import DuplicateName, EndpointRepo


def _check_balancing(spec: EndpointSpec) -> None:
    try:
        balancing.check(spec.gateway.balancing)
    except ValueError as exc:
        raise InvalidRequest(f"options.balancing: {exc}", param="options") from None


def _known_engine(engine: str) -> None:
    if engine not in engines.names():
        raise InvalidRequest(
            f"unknown engine '{engine}'; available: {', '.join(engines.names())}",
            param="engine",
        )


def _check_engine(engine: str, model: str, spec: EndpointSpec) -> None:
    try:
        engines.check(engine, model, spec.engine_options)
    except ValueError as exc:
        msg = str(exc)
        raise InvalidRequest(
            msg, param="options" if msg.startswith("options.") else "model"
        ) from None
    if spec.adapters and not engines.get(engine).capabilities.lora:
        raise InvalidRequest(
            f"the {engine} engine cannot serve LoRA adapters; leave adapters out or choose "
            "an engine that can",
            param="adapters",
        )


def _check_provider(provider: str, spec: EndpointSpec) -> None:
    check = spec.gateway.health_check
    if check is not None and check.path is None:
        default = providers.get(provider).health_path
        if default is None:
            raise InvalidRequest(
                f"options.health_check needs a 'path' for the {provider} provider, which has "
                "no cheap read-only request of its own to check: give the path of one that "
                "answers 2xx when the upstream is up (GET base_url + path, with the "
                "endpoint's credentials), or leave health_check out",
                param="options",
            )


def _known_provider(provider: str) -> None:
    if provider not in providers.names():
        raise InvalidRequest(
            f"unknown provider '{provider}'; available: {', '.join(providers.names())}",
            param="provider",
        )


SPEC_FIELDS = ("options", "resources", "autoscaling", "adapters")
"""What ``EndpointSpec.parse`` reads; a change to any of them is checked again."""


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
        max_replicas: int = 64,
    ) -> None:
        self.reconciler = reconciler
        self.max_replicas = max_replicas
        """``max_replicas_per_endpoint``: the most ``replicas`` or
        ``autoscaling.max_replicas`` may be."""
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
        return {**common, "engine": ep.engine, "replicas": ep.replicas, **ep.spec.view()}

    def view(self, ep: Endpoint) -> dict[str, Any]:
        if ep.provider is not None:
            view = {**self.state(ep), "status": "external"}
            if ep.spec.gateway.health_check is not None:
                health = (self.health(ep.name) if self.health else None) or Health()
                view["health"] = health.view()
                if not health.healthy:
                    view["status"] = "failed"  # out of service until its check passes
            return view
        replicas = self.reconciler.replicas(ep.name)
        ready = sum(r.status == ReplicaStatus.READY for r in replicas)
        view = {
            **self.state(ep),
            "node": ep.node,
            "ready_replicas": ready,
            "status": "ready" if ready else ("stopped" if ep.replicas == 0 else "starting"),
            "replica_status": [r.view() for r in replicas],
        }
        if (rollout := self.reconciler.rollout(ep.name)) is not None:
            view["rollout"] = rollout.view()
        return view

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
        resources: dict[str, Any] | None = None,
        autoscaling: dict[str, Any] | None = None,
        adapters: list[dict[str, Any]] | None = None,
        node: str | None = None,
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
            _known_provider(provider)
            engine, replicas = "", 0
            if node is not None:
                raise InvalidRequest(
                    "an external endpoint runs on no node; leave 'node' out", param="node"
                )
        else:
            if node is not None and not NODE_NAME.match(node):
                raise InvalidRequest(
                    "node must be 1-63 characters of a-z, A-Z, 0-9, '.', '_' or '-', "
                    "starting with a letter or digit",
                    param="node",
                )
            node = node or self.reconciler.node
            engine = engine or "llamacpp"
            _known_engine(engine)  # before the options: most of them are the engine's
        spec = EndpointSpec.parse(
            external=provider is not None,
            options=options,
            resources=resources,
            autoscaling=autoscaling,
            adapters=adapters,
        )
        self._check(spec, engine, provider, model, replicas)
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
                    resources=resources,
                    autoscaling=autoscaling,
                    adapters=adapters,
                    node=node,
                )
                await self.audit.record(
                    caller, "endpoint.create", "endpoint", name, None, self.state(ep), owner.team_id
                )
        except DuplicateName:
            raise Conflict(f"an endpoint named '{name}' already exists") from None
        await self.reconciler.reconcile()
        return ep

    def _check(
        self,
        spec: EndpointSpec,
        engine: str,
        provider: str | None,
        model: str,
        replicas: int | None,
    ) -> None:
        """What the spec cannot check alone: the registries (balancing strategies, the
        engine's options, the provider's health check) and the server's replica bound."""
        _check_balancing(spec)
        if provider is not None:
            _check_provider(provider, spec)
        else:
            spec.check_bounds(replicas, self.max_replicas)
            _check_engine(engine, model, spec)

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
        elif "provider" in changes:
            raise InvalidRequest("an endpoint cannot change to a provider", param="provider")
        if changes.keys() & {"engine", "model", *SPEC_FIELDS}:
            engine = changes.get("engine", current.engine)
            if current.provider is None:
                _known_engine(engine)
            spec = EndpointSpec.parse(
                external=current.provider is not None,
                options=changes.get("options", current.options),
                resources=changes.get("resources", current.resources),
                autoscaling=changes.get("autoscaling", current.autoscaling),
                adapters=changes.get("adapters", current.adapters),
            )
            self._check(
                spec,
                engine,
                current.provider,
                changes.get("model", current.model),
                changes.get("replicas"),
            )
        elif "replicas" in changes:  # scaling alone: the spec stays as it is
            EndpointSpec.check_replicas(changes["replicas"], self.max_replicas)
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
