"""The running platform: every long-lived resource, opened and closed in order."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
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
class Platform:
    settings: Settings
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
    """The one loop that refreshes the caches above when the database changes."""
    new_admin_key: str | None = field(default=None)
    audit: AuditLog = field(init=False)
    jwt: JwtAuth | None = None
    """Bearer JWTs from an OIDC issuer, when ``settings.jwt`` is set."""
    stats: RequestStats = field(default_factory=RequestStats)
    """Live request statistics of this process, for the dashboard."""
    metrics: Metrics | None = None
    """Prometheus metrics (None: ``metrics_enabled`` is off)."""
    tracing: Tracing = field(default_factory=Tracing)
    observer: Observer = field(init=False)
    """Records each /v1 request: stats, metrics, its trace's root span, the access log."""
    gauges: Gauges | None = None
    health: HealthChecker | None = None
    """Active health checks of external endpoints that ask for them."""

    def __post_init__(self) -> None:
        self.audit = AuditLog(self.db)
        self.observer = Observer(self.stats)

    def _observe(self) -> None:
        """Wire the recorders to the tables that name what they record."""
        self.observer = Observer(
            self.stats,
            self.metrics,
            self.tracing,
            route_of=self._route_of,
            team_of=self.teams.name_of,
            log_prompts=self._log_prompts,
            access_log=self.settings.access_log,
        )
        self.proxy.metrics = self.metrics
        self.proxy.tracer = self.tracing.tracer
        if self.metrics is not None:
            self.gauges = Gauges(
                self.metrics, self.reconciler, self.router, self.governance, self.teams
            )
            self.gauges.start(METRICS_SAMPLE_S)

    def _route_of(self, model: str) -> str | None:
        route = self.proxy.routes.lookup(model)
        return route.name if route is not None else None

    def _log_prompts(self, endpoint: str) -> bool:
        ep = self.reconciler.endpoints.get(endpoint)
        return ep is not None and ep.options.get("log_prompts") is True

    @classmethod
    async def open(
        cls, settings: Settings, tracer_provider: TracerProvider | None = None
    ) -> Platform:
        """Open everything; ``tracer_provider`` replaces the one ``otel_endpoint``
        would configure (its owner shuts it down)."""
        settings.home.mkdir(parents=True, exist_ok=True)
        metrics = Metrics() if settings.metrics_enabled else None
        db = Database(settings.sqlalchemy_url)
        watcher = Watcher(db, settings.cache_refresh_interval_s)
        keys = KeyService(db, settings.cache_refresh_interval_s)
        preset = settings.admin_key.get_secret_value() if settings.admin_key else None
        # Worker processes start together: one at a time migrates and mints the first key.
        async with startup_lock(settings.home / "startup.lock"):
            await db.migrate()
            new_admin = await keys.bootstrap_admin(settings.admin_key_path, preset)
        if new_admin:
            log.warning(
                "created the first admin key; it is in %s (mode 0600)", settings.admin_key_path
            )
        await keys.start()
        runtime = runtimes.create(
            "local-shared" if settings.workers > 1 else "local",
            home=settings.home,
            engine_threads=settings.engine_threads,
            start_timeout_s=settings.replica_start_timeout_s,
            health_interval_s=settings.health_interval_s,
            backoff_max_s=settings.restart_backoff_max_s,
            on_restart=metrics.restarted if metrics is not None else None,
        )
        reconciler = Reconciler(db, runtime, interval_s=settings.reconcile_interval_s)
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
        # Teams first: the others name them. Endpoints before routes, which refer to them.
        watcher.subscribe(teams, accounts, keys, secrets, reconciler, routes)
        router = Router(lambda: reconciler.endpoints, runtime.replicas)
        table = RouteTable(lambda: routes.routes, lambda: reconciler.endpoints)
        shared = coord.create(
            settings.redis_url or None, cache_max_bytes=settings.response_cache_max_bytes
        )
        governance = await Governance.open(
            settings, db, teams, shared.counters, lambda: reconciler.endpoints, watcher
        )
        proxy = Proxy(
            router,
            table,
            timeout_s=settings.upstream_timeout_s,
            cache=ResponseCache(shared.cache),
            secrets=secrets.get,
            governor=governance.gatekeeper if settings.governance_enabled else None,
        )
        health = HealthChecker(lambda: reconciler.endpoints, router, proxy.upstream)
        health.sync()
        reconciler.followers.append(health.sync)
        watcher.start()
        endpoints = EndpointService(reconciler, teams, routes, health=health.state)
        jwt_auth = None
        if settings.jwt is not None:
            jwt_auth = JwtAuth(settings.jwt, teams.id_of, accounts.user_for)
            await jwt_auth.start()
        platform = cls(
            settings,
            db,
            keys,
            reconciler,
            endpoints,
            teams,
            routes,
            secrets,
            router,
            proxy,
            shared,
            governance,
            accounts,
            watcher,
            new_admin,
        )
        platform.jwt = jwt_auth
        platform.health = health
        platform.metrics = metrics
        platform.tracing = Tracing.configure(
            settings.otel_endpoint,
            settings.otel_service_name,
            settings.otel_sample_ratio,
            tracer_provider,
        )
        platform._observe()
        return platform

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller behind an ``Authorization`` header (an API key, or a JWT when an
        issuer is configured), or 401."""
        if self.jwt is not None and authorization:
            token = authorization.partition(" ")[2].strip()
            if looks_like_jwt(token) and authorization[:7].lower() == "bearer ":
                return self.jwt.verify(token)
        return self.keys.authenticate(authorization)

    async def close(self) -> None:
        await self.watcher.close()
        if self.gauges is not None:
            await self.gauges.close()
        if self.jwt is not None:
            await self.jwt.close()
        await self.governance.close()
        if self.health is not None:
            await self.health.close()
        await self.proxy.close()
        await self.coord.close()
        await self.reconciler.close()
        await self.reconciler.runtime.close()
        await self.keys.close()
        await self.db.close()
        self.tracing.close()
