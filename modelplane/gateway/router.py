"""From an endpoint to one of its upstream addresses, without touching the database.

Local endpoints have replicas (from the runtime); an external provider's endpoint has
one address, its base URL, treated as a ready replica so that balancing, outstanding
counts and outlier ejection work the same for both; it reads failed while the
endpoint's active health check (``gateway/health.py``) has it out of service.

Admission: an endpoint may cap in-flight requests per replica (``options.queue``).
When every replica is at its cap, requests wait in a bounded first-come queue for a
slot; past ``max_waiting`` (or after ``timeout_s``) they get 503 with ``retry-after``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from modelplane.errors import ModelNotFound, NoReadyReplica, Overloaded
from modelplane.gateway import balancing
from modelplane.gateway.balancing import Request, Stats, Strategy
from modelplane.gateway.outliers import Outliers
from modelplane.providers import registry as providers
from modelplane.runtimes.base import Replica, ReplicaStatus
from modelplane.store.records import Endpoint

EWMA_WEIGHT = 0.3
"""How much one new latency sample moves a replica's average."""

_NO_BODY: Mapping[str, Any] = {}


class _Policy:
    """An endpoint's strategy (which may keep state, e.g. a rotation) and wait queue,
    for one version of its spec."""

    __slots__ = ("balancing", "queue", "strategy", "version", "waiters")

    def __init__(self, ep: Endpoint) -> None:
        self.version = (ep.id, ep.generation)
        gateway = ep.spec.gateway
        self.balancing = gateway.balancing
        self.strategy: Strategy = balancing.create(gateway.balancing)
        self.queue = gateway.queue
        self.waiters: deque[asyncio.Future[None]] = deque()


class Router:
    def __init__(
        self,
        endpoints: Callable[[], Mapping[str, Endpoint]],
        replicas: Callable[[str], list[Replica]],
        unreachable: Callable[[Endpoint], str | None] | None = None,
    ) -> None:
        self._endpoints = endpoints
        self._replicas = replicas
        self._unreachable = unreachable
        """Why the replicas of an endpoint run by another node cannot be reached."""
        self._policies: dict[str, _Policy] = {}
        self._external: dict[str, tuple[Endpoint, list[Replica]]] = {}
        self._unhealthy: dict[str, str] = {}
        self._endpoint_of: dict[str, str] = {}
        self.stats = Stats()
        self.outliers = Outliers()

    @property
    def outstanding(self) -> dict[str, int]:
        return self.stats.outstanding

    def endpoint(self, name: str) -> Endpoint:
        ep = self._endpoints().get(name)
        if ep is None:
            raise ModelNotFound(name)
        return ep

    def models(self) -> list[Endpoint]:
        return sorted(self._endpoints().values(), key=lambda e: e.name)

    def replicas(self, ep: Endpoint) -> list[Replica]:
        if ep.provider is None:
            return self._replicas(ep.name)
        cached = self._external.get(ep.name)
        if cached is None or cached[0] is not ep:
            given = ep.spec.provider.base_url if ep.spec.provider else None
            url = given or providers.get(ep.provider).default_base_url
            rep = Replica(ep.name, 0, ep.generation, ReplicaStatus.READY, url)
            _mark(rep, self._unhealthy.get(ep.name))
            cached = (ep, [rep])
            self._external[ep.name] = cached
        return cached[1]

    def set_health(self, name: str, error: str | None) -> None:
        """An external endpoint's active health check took it out of service (``error``
        says why) or put it back (``None``)."""
        if error is None:
            self._unhealthy.pop(name, None)
        else:
            self._unhealthy[name] = error
        cached = self._external.get(name)
        if cached is not None:
            _mark(cached[1][0], error)

    def _policy(self, ep: Endpoint) -> _Policy:
        policy = self._policies.get(ep.name)
        if policy is None or policy.version != (ep.id, ep.generation):
            policy = _Policy(ep)
            self._policies[ep.name] = policy
        return policy

    def candidates(self, ep: Endpoint, exclude: frozenset[str] = frozenset()) -> list[str]:
        """Ready replica URLs a request may go to. Ejected replicas sit out, unless
        every candidate is ejected: then trying one beats refusing the request."""
        ready = [
            r.url
            for r in self.replicas(ep)
            if r.status == ReplicaStatus.READY and r.url not in exclude
        ]
        return [u for u in ready if not self.outliers.ejected(u)] or ready

    def _unavailable(self, ep: Endpoint) -> NoReadyReplica:
        reps = self.replicas(ep)
        starting = sum(r.status in (ReplicaStatus.PENDING, ReplicaStatus.STARTING) for r in reps)
        unhealthy = self._unhealthy.get(ep.name) if ep.provider is not None else None
        if unhealthy is not None:
            return NoReadyReplica(
                f"endpoint '{ep.name}' is out of service: its health check is failing "
                f"({unhealthy}); it takes requests again once the check passes",
                retry_after=2,
            )
        far = self._unreachable(ep) if self._unreachable is not None else None
        if far is not None:
            return NoReadyReplica(far, retry_after=2)
        if ep.replicas == 0:
            why = "it is scaled to 0 replicas; scale it up"
        elif starting:
            why = f"{starting} starting — retry in a few seconds"
        else:
            failed = [r for r in reps if r.status == ReplicaStatus.FAILED]
            why = f"{len(failed)} failed and restarting" if failed else "none is running"
        return NoReadyReplica(f"endpoint '{ep.name}' has no ready replica; {why}", retry_after=2)

    def pick(
        self,
        ep: Endpoint,
        exclude: frozenset[str] = frozenset(),
        body: Mapping[str, Any] = _NO_BODY,
        headers: Mapping[str, str] = _NO_BODY,
    ) -> str | None:
        """A replica URL with a free slot (counted as outstanding until ``release``),
        or ``None`` when every replica is at its cap. Raises ``NoReadyReplica``."""
        urls = self.candidates(ep, exclude)
        if not urls:
            raise self._unavailable(ep)
        policy = self._policy(ep)
        cap = policy.queue.max_concurrency
        if cap is not None:
            urls = [u for u in urls if self.outstanding.get(u, 0) < cap]
            if not urls:
                return None
        if len(urls) == 1:  # nothing to choose (the usual case of an external endpoint)
            url = urls[0]
        else:
            url = policy.strategy.choose(urls, Request(body, headers, policy.balancing), self.stats)
        self.outstanding[url] = self.outstanding.get(url, 0) + 1
        self._endpoint_of[url] = ep.name
        return url

    async def acquire(
        self,
        ep: Endpoint,
        exclude: frozenset[str] = frozenset(),
        body: Mapping[str, Any] = _NO_BODY,
        headers: Mapping[str, str] = _NO_BODY,
    ) -> str:
        """``pick``, waiting in the endpoint's bounded queue while every replica is busy."""
        url = self.pick(ep, exclude, body, headers)
        if url is not None:
            return url
        policy = self._policy(ep)
        q = policy.queue
        if len(policy.waiters) >= q.max_waiting:
            raise Overloaded(
                f"endpoint '{ep.name}' is at capacity and {len(policy.waiters)} requests are "
                "already waiting; retry shortly",
                retry_after=1,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + q.timeout_s
        front = False
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            if front:  # woken but beaten to the slot: keep this request's place
                policy.waiters.appendleft(waiter)
            else:
                policy.waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    self._wake(policy)  # pass on the slot this request will not use
                if isinstance(exc, TimeoutError):
                    raise Overloaded(
                        f"endpoint '{ep.name}' had no free slot within {q.timeout_s:g} s; "
                        "retry shortly",
                        retry_after=1,
                    ) from None
                raise
            finally:
                if waiter in policy.waiters:
                    policy.waiters.remove(waiter)
            url = self.pick(ep, exclude, body, headers)
            if url is not None:
                return url
            front = True

    def waiting(self) -> dict[str, int]:
        """Requests waiting for a slot, per endpoint (those with a queue in use)."""
        return {
            name: len(p.waiters) for name, p in self._policies.items() if p.queue.max_concurrency
        }

    def release(self, url: str) -> None:
        name = self._endpoint_of.get(url)
        left = self.outstanding.get(url, 1) - 1
        if left > 0:
            self.outstanding[url] = left
        else:  # replicas come and go (new ports on restart): keep no dead entries
            self.outstanding.pop(url, None)
            self._endpoint_of.pop(url, None)
        policy = self._policies.get(name) if name else None
        if policy is not None:
            self._wake(policy)

    @staticmethod
    def _wake(policy: _Policy) -> None:
        while policy.waiters:
            waiter = policy.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def observe(self, url: str, seconds: float) -> None:
        """Record a replica's time to first byte."""
        old = self.stats.latency.get(url)
        self.stats.latency[url] = seconds if old is None else (old + EWMA_WEIGHT * (seconds - old))


def _mark(rep: Replica, unhealthy: str | None) -> None:
    rep.status = ReplicaStatus.READY if unhealthy is None else ReplicaStatus.FAILED
    rep.last_error = unhealthy
