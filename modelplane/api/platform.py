"""The running platform: every long-lived resource, opened and closed in order."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from modelplane.config import Settings
from modelplane.control.endpoints import EndpointService
from modelplane.control.keys import KeyService
from modelplane.control.reconciler import Reconciler
from modelplane.gateway.proxy import Proxy
from modelplane.gateway.router import Router
from modelplane.runtimes import registry as runtimes
from modelplane.store.db import Database

log = logging.getLogger(__name__)


@dataclass
class Platform:
    settings: Settings
    db: Database
    keys: KeyService
    reconciler: Reconciler
    endpoints: EndpointService
    router: Router
    proxy: Proxy
    new_admin_key: str | None = field(default=None)

    @classmethod
    async def open(cls, settings: Settings) -> Platform:
        settings.home.mkdir(parents=True, exist_ok=True)
        db = Database(settings.sqlalchemy_url)
        await db.migrate()
        keys = KeyService(db, settings.cache_refresh_interval_s)
        preset = settings.admin_key.get_secret_value() if settings.admin_key else None
        new_admin = await keys.bootstrap_admin(settings.admin_key_path, preset)
        if new_admin:
            log.warning(
                "created the first admin key; it is in %s (mode 0600)", settings.admin_key_path
            )
        await keys.start()
        runtime = runtimes.create(
            "local",
            home=settings.home,
            engine_threads=settings.engine_threads,
            start_timeout_s=settings.replica_start_timeout_s,
            health_interval_s=settings.health_interval_s,
            backoff_max_s=settings.restart_backoff_max_s,
        )
        reconciler = Reconciler(
            db,
            runtime,
            interval_s=settings.reconcile_interval_s,
            poll_s=settings.cache_refresh_interval_s,
        )
        await reconciler.start()
        router = Router(lambda: reconciler.endpoints, runtime.replicas)
        proxy = Proxy(router, timeout_s=settings.upstream_timeout_s)
        return cls(
            settings, db, keys, reconciler, EndpointService(reconciler), router, proxy, new_admin
        )

    async def close(self) -> None:
        await self.proxy.close()
        await self.reconciler.close()
        await self.reconciler.runtime.close()
        await self.keys.close()
        await self.db.close()
