"""Governance, assembled: rate limits, budgets and usage reports (the services behind
``/api``), and the gatekeeper (``governance/``) the gateway admits requests through."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from modelplane.config import Settings
from modelplane.control.budgets import BudgetService
from modelplane.control.limits import LimitService
from modelplane.control.subjects import Subjects
from modelplane.control.teams import TeamService
from modelplane.control.usage import UsageService
from modelplane.control.watcher import Watcher
from modelplane.coord import Counters
from modelplane.governance.gatekeeper import Gatekeeper
from modelplane.store.db import Database
from modelplane.store.governance import UsageRepo
from modelplane.store.records import Endpoint


class Governance:
    def __init__(
        self,
        limits: LimitService,
        budgets: BudgetService,
        usage: UsageService,
        gatekeeper: Gatekeeper,
    ) -> None:
        self.limits = limits
        self.budgets = budgets
        self.usage = usage
        self.gatekeeper = gatekeeper

    @classmethod
    async def open(
        cls,
        settings: Settings,
        db: Database,
        teams: TeamService,
        counters: Counters,
        endpoints: Callable[[], Mapping[str, Endpoint]],
        watcher: Watcher,
    ) -> Governance:
        subjects = Subjects(db, teams)
        limits = LimitService(db, subjects)
        budgets = BudgetService(db, subjects)
        await limits.start()
        await budgets.start()
        watcher.subscribe(limits, budgets)
        gatekeeper = Gatekeeper(
            counters=counters,
            repo=UsageRepo(db),
            limits=lambda: limits.rules,
            budgets=lambda: budgets.rules,
            endpoints=endpoints,
            # A slot outlives the longest request it can guard, then frees itself.
            slot_ttl_s=settings.upstream_timeout_s + 60,
            refresh_interval_s=settings.cache_refresh_interval_s,
            flush_interval_s=settings.usage_flush_interval_s,
            batch_max=settings.usage_batch_max,
            queue_max=settings.usage_queue_max,
        )
        budgets.spend = gatekeeper.spend
        await gatekeeper.start()
        return cls(limits, budgets, UsageService(db, subjects), gatekeeper)

    async def close(self) -> None:
        """Write the usage still queued, then stop (before the database closes)."""
        await self.gatekeeper.close()
