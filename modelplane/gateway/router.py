"""From a model name to a ready replica, without touching the database."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from modelplane.errors import ModelNotFound, NoReadyReplica
from modelplane.gateway import balancing
from modelplane.gateway.balancing import BalancingConfig, Request, Stats, Strategy
from modelplane.gateway.outliers import Outliers
from modelplane.runtimes.base import Replica, ReplicaStatus
from modelplane.store.records import Endpoint

EWMA_WEIGHT = 0.3
"""How much one new latency sample moves a replica's average."""

_NO_BODY: Mapping[str, Any] = {}


class Router:
    def __init__(
        self,
        endpoints: Callable[[], Mapping[str, Endpoint]],
        replicas: Callable[[str], list[Replica]],
    ) -> None:
        self._endpoints = endpoints
        self._replicas = replicas
        self._strategies: dict[str, tuple[object, BalancingConfig, Strategy]] = {}
        self.stats = Stats()
        self.outliers = Outliers()

    @property
    def outstanding(self) -> dict[str, int]:
        return self.stats.outstanding

    def models(self) -> list[Endpoint]:
        return sorted(self._endpoints().values(), key=lambda e: e.name)

    def _strategy(self, ep: Endpoint) -> tuple[BalancingConfig, Strategy]:
        raw = ep.options.get("balancing")
        cached = self._strategies.get(ep.name)
        if cached is None or cached[0] != raw:
            config = BalancingConfig.parse(raw)
            cached = (raw, config, balancing.create(config))
            self._strategies[ep.name] = cached
        return cached[1], cached[2]

    def pick(
        self,
        model: str,
        exclude: frozenset[str] = frozenset(),
        body: Mapping[str, Any] = _NO_BODY,
        headers: Mapping[str, str] = _NO_BODY,
    ) -> str:
        """The URL of a ready replica of ``model``; 404 or 503 (with a reason) if none.
        ``body`` and ``headers`` are read only by strategies that need them."""
        ep = self._endpoints().get(model)
        if ep is None:
            raise ModelNotFound(model)
        reps = self._replicas(model)
        urls = self.candidates(model, exclude, reps)
        if urls:
            config, strategy = self._strategy(ep)
            return strategy.choose(urls, Request(body, headers, config), self.stats)
        starting = sum(r.status in (ReplicaStatus.PENDING, ReplicaStatus.STARTING) for r in reps)
        if ep.replicas == 0:
            why = "it is scaled to 0 replicas; scale it up"
        elif starting:
            why = f"{starting} starting — retry in a few seconds"
        else:
            failed = [r for r in reps if r.status == ReplicaStatus.FAILED]
            why = f"{len(failed)} failed and restarting" if failed else "none is running"
        raise NoReadyReplica(f"endpoint '{model}' has no ready replica; {why}", retry_after=2)

    def candidates(
        self, model: str, exclude: frozenset[str] = frozenset(), reps: list[Replica] | None = None
    ) -> list[str]:
        """Ready replica URLs a request may go to. Ejected replicas sit out, unless
        every candidate is ejected: then trying one beats refusing the request."""
        if reps is None:
            reps = self._replicas(model)
        ready = [r.url for r in reps if r.status == ReplicaStatus.READY and r.url not in exclude]
        return [u for u in ready if not self.outliers.ejected(u)] or ready

    def observe(self, url: str, seconds: float) -> None:
        """Record a replica's time to first byte."""
        old = self.stats.latency.get(url)
        self.stats.latency[url] = seconds if old is None else (old + EWMA_WEIGHT * (seconds - old))

    @contextmanager
    def track(self, url: str) -> Iterator[None]:
        self.outstanding[url] = self.outstanding.get(url, 0) + 1
        try:
            yield
        finally:
            left = self.outstanding[url] - 1
            if left:
                self.outstanding[url] = left
            else:  # replicas come and go (new ports on restart): keep no dead entries
                del self.outstanding[url]
