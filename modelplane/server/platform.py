"""The running platform: every long-lived resource, opened and closed in order."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modelplane import coord
from modelplane.config import Settings
from modelplane.control.accounts import AccountService
from modelplane.control.audit import AuditLog
from modelplane.control.endpoints import EndpointService
from modelplane.control.gauges import Gauges
from modelplane.control.governance import Governance
from modelplane.control.jwt import JwtAuth, looks_like_jwt
from modelplane.control.keys import KeyService
from modelplane.control.reconciler import Reconciler
from modelplane.control.routes import RouteService
from modelplane.control.secrets import SecretService, master_secret
from modelplane.control.teams import TeamService
from modelplane.control.watcher import Watcher
from modelplane.gateway.cache import ResponseCache
from modelplane.gateway.health import HealthChecker
from modelplane.gateway.proxy import Proxy
from modelplane.gateway.router import Router
from modelplane.gateway.routes import RouteTable
from modelplane.identity import Caller
from modelplane.runtimes import registry as runtimes
from modelplane.store.db import Database
from modelplane.telemetry.metrics import Metrics
from modelplane.telemetry.requests import Observer
from modelplane.telemetry.stats import RequestStats
from modelplane.telemetry.tracing import Tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

METRICS_SAMPLE_S = 1.0
"""How often the replica and queue gauges are refreshed."""


@contextlib.asynccontextmanager
async def startup_lock(path: Path) -> AsyncIterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@dataclass
class Parts:
    """What :meth:`Platform.open` opens, in order; each is closed by the exit stack."""

    db: Database
    keys: KeyService
    reconciler: Reconciler
    endpoints: EndpointService
    teams: TeamService
    routes: RouteService
    secrets: SecretService
    router: Router
    proxy: Proxy
    coord: coord.Coord
    governance: Governance
    accounts: AccountService
    watcher: Watcher
    health: HealthChecker
    tracing: Tracing
    jwt: JwtAuth | None = None
    metrics: Metrics | None = None
    new_admin_key: str | None = None


class Platform:
    """Every long-lived resource of one server process, fully built by the constructor
    from the parts :meth:`open` opened. ``close`` closes them in reverse order; so does a
    failure halfway through ``open``, so nothing is left running."""

    def __init__(self, settings: Settings, parts: Parts, stack: AsyncExitStack) -> None:
        self.settings = settings
        self._stack = stack
        self.db = parts.db
        self.keys = parts.keys
        self.reconciler = parts.reconciler
        self.endpoints = parts.endpoints
        self.teams = parts.teams
        self.routes = parts.routes
        self.secrets = parts.secrets
        self.router = parts.router
        self.proxy = parts.proxy
        self.coord = parts.coord
        self.governance = parts.governance
        self.accounts = parts.accounts
        self.watcher = parts.watcher
        """The one loop that refreshes the caches above when the database changes."""
        self.health: HealthChecker | None = parts.health
        """Active health checks of external endpoints that ask for them."""
        self.jwt = parts.jwt
        """Bearer JWTs from an OIDC issuer, when ``settings.jwt`` is set."""
        self.metrics = parts.metrics
        """Prometheus metrics (None: ``metrics_enabled`` is off)."""
        self.tracing = parts.tracing
        self.new_admin_key = parts.new_admin_key
        self.audit = AuditLog(self.db)
        self.stats = RequestStats()
        """Live request statistics of this process, for the dashboard."""
        self.observer = Observer(
            self.stats,
            self.metrics,
            self.tracing,
            route_of=self._route_of,
            team_of=self.teams.name_of,
            log_prompts=self._log_prompts,
            access_log=settings.access_log,
        )
        """Records each /v1 request: stats, metrics, its trace's root span, the access log."""
        self.proxy.metrics = self.metrics
        self.proxy.tracer = self.tracing.tracer
        self.gauges: Gauges | None = None
        if self.metrics is not None:
            self.gauges = Gauges(
                self.metrics, self.reconciler, self.router, self.governance, self.teams
            )
            self.gauges.start(METRICS_SAMPLE_S)
            stack.push_async_callback(self.gauges.close)

    def _route_of(self, model: str) -> str | None:
        route = self.proxy.routes.lookup(model)
        return route.name if route is not None else None

    def _log_prompts(self, endpoint: str) -> bool:
        ep = self.reconciler.endpoints.get(endpoint)
        return ep is not None and ep.spec.gateway.log_prompts

    @classmethod
    async def open(
        cls, settings: Settings, tracer_provider: TracerProvider | None = None
    ) -> Platform:
        """Open everything; ``tracer_provider`` replaces the one ``otel_endpoint``
        would configure (its owner shuts it down). If any part fails to open, the parts
        opened before it are closed before the error propagates."""
        stack = AsyncExitStack()
        try:
            return cls(settings, await _open_parts(settings, tracer_provider, stack), stack)
        except BaseException:
            await stack.aclose()
            raise

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller behind an ``Authorization`` header (an API key, or a JWT when an
        issuer is configured), or 401."""
        if self.jwt is not None and authorization:
            token = authorization.partition(" ")[2].strip()
            if looks_like_jwt(token) and authorization[:7].lower() == "bearer ":
                return self.jwt.verify(token)
        return self.keys.authenticate(authorization)

    async def close(self) -> None:
        await self._stack.aclose()


async def _open_parts(
    settings: Settings, tracer_provider: TracerProvider | None, stack: AsyncExitStack
) -> Parts:
    """Open each part and push its close onto ``stack`` at once, so that a failure at
    any point closes exactly what is open (in reverse order)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    tracing = Tracing.configure(
        settings.otel_endpoint,
        settings.otel_service_name,
        settings.otel_sample_ratio,
        tracer_provider,
    )
    stack.callback(tracing.close)
    metrics = Metrics() if settings.metrics_enabled else None
    db = Database(settings.sqlalchemy_url)
    stack.push_async_callback(db.close)
    keys = KeyService(db, settings.cache_refresh_interval_s)
    preset = settings.admin_key.get_secret_value() if settings.admin_key else None
    # Worker processes start together: one at a time migrates and mints the first key.
    async with startup_lock(settings.home / "startup.lock"):
        await db.migrate()
        new_admin = await keys.bootstrap_admin(settings.admin_key_path, preset)
    if new_admin:
        log.warning("created the first admin key; it is in %s (mode 0600)", settings.admin_key_path)
    await keys.start()
    stack.push_async_callback(keys.close)
    runtime = runtimes.create(
        settings.runtime,
        settings=settings,
        on_restart=metrics.restarted if metrics is not None else None,
    )
    reconciler = Reconciler(
        db, runtime, node=settings.node_name, interval_s=settings.reconcile_interval_s
    )
    # Closed in reverse: the reconciler's loop, then the replicas, then their entries
    # in the database (so other nodes stop routing to them).
    stack.push_async_callback(reconciler.after_close)
    stack.push_async_callback(runtime.close)
    stack.push_async_callback(reconciler.close)
    await reconciler.start()
    master = master_secret(
        settings.secret_key.get_secret_value() if settings.secret_key else None,
        settings.home / "secret.key",
    )
    secrets = SecretService(db, master)
    await secrets.start()
    teams = TeamService(db)
    await teams.start()
    accounts = AccountService(db, teams, keys)
    await accounts.start()
    routes = RouteService(db, teams)
    await routes.sync_declared(settings.routes, reconciler.endpoints)
    await routes.start()
    watcher = Watcher(db, settings.cache_refresh_interval_s)
    stack.push_async_callback(watcher.close)
    # Teams first: the others name them. Endpoints before routes, which refer to them.
    watcher.subscribe(teams, accounts, keys, secrets, reconciler, routes)
    router = Router(lambda: reconciler.endpoints, reconciler.replicas, reconciler.unreachable)
    table = RouteTable(lambda: routes.routes, lambda: reconciler.endpoints)
    shared = coord.create(
        settings.redis_url or None, cache_max_bytes=settings.response_cache_max_bytes
    )
    stack.push_async_callback(shared.close)
    governance = await Governance.open(
        settings, db, teams, shared.counters, lambda: reconciler.endpoints, watcher
    )
    stack.push_async_callback(governance.close)
    proxy = Proxy(
        router,
        table,
        timeout_s=settings.upstream_timeout_s,
        local_timeout_s=settings.local_upstream_timeout_s,
        cache=ResponseCache(shared.cache),
        secrets=secrets.get,
        governor=governance.gatekeeper if settings.governance_enabled else None,
    )
    stack.push_async_callback(proxy.close)
    health = HealthChecker(lambda: reconciler.endpoints, router, proxy.upstream)
    stack.push_async_callback(health.close)
    health.sync()
    reconciler.followers.append(health.sync)
    watcher.start()
    endpoints = EndpointService(
        reconciler,
        teams,
        routes,
        health=health.state,
        max_replicas=settings.max_replicas_per_endpoint,
    )
    jwt_auth = None
    if settings.jwt is not None:
        jwt_auth = JwtAuth(settings.jwt, teams.id_of, accounts.user_for)
        stack.push_async_callback(jwt_auth.close)
        await jwt_auth.start()
    return Parts(
        db=db,
        keys=keys,
        reconciler=reconciler,
        endpoints=endpoints,
        teams=teams,
        routes=routes,
        secrets=secrets,
        router=router,
        proxy=proxy,
        coord=shared,
        governance=governance,
        accounts=accounts,
        watcher=watcher,
        health=health,
        tracing=tracing,
        jwt=jwt_auth,
        metrics=metrics,
        new_admin_key=new_admin,
    )
