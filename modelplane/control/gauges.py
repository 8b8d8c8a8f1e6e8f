"""The metrics that describe state rather than events, refreshed from the services:
replicas per local endpoint (ready, desired; an external endpoint with an active health
check counts as one replica, ready while the check passes), requests waiting in the gateway per
endpoint, and how much of each budget is spent. The same loop flushes the request
metrics once a second, so that other workers' scrapes see them."""

from __future__ import annotations

import logging

from modelplane.control.governance import Governance
from modelplane.control.reconciler import Reconciler
from modelplane.control.teams import TeamService
from modelplane.gateway.router import Router
from modelplane.runtimes.base import ReplicaStatus
from modelplane.tasks import Loop
from modelplane.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

KEYS = "_max"
"""The ``name`` of the key budgets' gauge: the highest ratio among them."""


class Gauges:
    def __init__(
        self,
        metrics: Metrics,
        reconciler: Reconciler,
        router: Router,
        governance: Governance,
        teams: TeamService,
    ) -> None:
        self.metrics = metrics
        self.reconciler = reconciler
        self.router = router
        self.governance = governance
        self.teams = teams
        self._loop: Loop | None = None

    def start(self, interval_s: float) -> None:
        self._loop = Loop("refreshing the gauges", self._sample, interval_s, first_now=True)
        self._loop.start()

    async def close(self) -> None:
        if self._loop is not None:
            await self._loop.close()

    async def _sample(self) -> None:
        self.sample()

    def sample(self) -> None:
        """Replicas and queues: cheap, from memory, every second; and the requests
        recorded since the last flush written out."""
        self.metrics.flush()
        replicas = {}
        for ep in self.reconciler.endpoints.values():
            if ep.provider is None:
                ready = sum(
                    r.status == ReplicaStatus.READY for r in self.reconciler.replicas(ep.name)
                )
                replicas[ep.name] = (ready, ep.replicas)
            elif ep.options.get("health_check") is not None:
                # One replica, ready while its active health check passes, so that
                # "replica down" alerts cover checked external endpoints too.
                ready = sum(r.status == ReplicaStatus.READY for r in self.router.replicas(ep))
                replicas[ep.name] = (ready, 1)
        self.metrics.set_replicas(replicas)
        self.metrics.set_waiting(self.router.waiting())
        self.metrics.registry.forget_dead()

    async def budgets(self) -> None:
        """Spend over the hard budget (else the soft one) of every budget: per team, and
        the highest of the keys' under ``name="_max"`` (keys are never labels). Called
        when ``/metrics`` is scraped: reading spend may take a Redis round trip per
        budget."""
        spend = self.governance.gatekeeper.spend
        used: dict[tuple[str, str], float] = {}
        for (scope, subject), rule in list(self.governance.budgets.rules.items()):
            limit = rule.budget.hard_usd or rule.budget.soft_usd
            if not limit:
                continue
            ratio = (await spend.status(rule)).spent_usd / limit
            if scope == "team":
                used[scope, self.teams.name_of(subject) or subject] = ratio
            else:
                used[scope, KEYS] = max(ratio, used.get((scope, KEYS), 0.0))
        self.metrics.set_budgets(used)
