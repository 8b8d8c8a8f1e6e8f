"""Routes: a public model name → weighted targets, fallbacks, timeouts, retries, cache.

Every endpoint is also reachable under its own name through an implicit route with one
target and the defaults below, so a route is only written when it adds something.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelplane.errors import ModelNotFound
from modelplane.identity import UNSHARED, Owned
from modelplane.store.records import Endpoint, Route


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WeightedTarget(_Strict):
    endpoint: str = Field(min_length=1)
    weight: float = Field(default=1.0, ge=0)
    """Relative share of traffic; 0 drains a target without removing it."""


class Timeouts(_Strict):
    connect_s: float = Field(default=5.0, gt=0)
    """Opening a connection to one upstream."""
    ttft_s: float | None = Field(default=None, gt=0)
    """Until one upstream starts answering: the first streamed byte, or the whole body of
    a non-streaming answer. Past it the attempt counts as failed (retry, then fall back)."""
    total_s: float | None = Field(default=None, gt=0)
    """The whole request, every attempt included; default ``upstream_timeout_s``."""


class Retries(_Strict):
    attempts: int = Field(default=2, ge=0, le=10)
    """Retries on one target (another replica where there is one) before falling back."""
    backoff_s: float = Field(default=0.05, ge=0)
    """First delay; it doubles per retry, up to ``max_backoff_s``, with full jitter."""
    max_backoff_s: float = Field(default=2.0, ge=0)


class CachePolicy(_Strict):
    enabled: bool = False
    ttl_s: float = Field(default=300.0, gt=0)


FallbackOn = Literal["connect", "5xx", "429", "timeout", "context_length"]
EVERY_FAILURE: tuple[FallbackOn, ...] = ("connect", "5xx", "429", "timeout", "context_length")


class RouteSpec(_Strict):
    targets: list[WeightedTarget] = Field(min_length=1)
    fallbacks: list[str] = Field(default_factory=list)
    """Endpoints tried in order when the chosen target fails in a way named by
    ``fallback_on`` (after its retries)."""
    fallback_on: list[FallbackOn] = Field(default_factory=lambda: list(EVERY_FAILURE))
    aliases: list[str] = Field(default_factory=list)
    sticky: Literal["none", "key", "user"] = "none"
    """Keep one API key (or one ``user`` field value) on one target of a split."""
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retries: Retries = Field(default_factory=Retries)
    cache: CachePolicy = Field(default_factory=CachePolicy)

    @model_validator(mode="after")
    def _check(self) -> RouteSpec:
        if not any(t.weight > 0 for t in self.targets):
            raise ValueError("at least one target needs a weight above 0")
        names = [t.endpoint for t in self.targets]
        if len(set(names)) != len(names):
            raise ValueError("each endpoint may appear once in targets")
        return self

    def endpoints(self) -> set[str]:
        return {t.endpoint for t in self.targets} | set(self.fallbacks)


DEFAULT = RouteSpec(targets=[WeightedTarget(endpoint="-")])


@dataclass(frozen=True, slots=True)
class ResolvedRoute:
    name: str
    spec: RouteSpec
    implicit: bool
    owner: Owned = UNSHARED
    local: bool = False
    """Every target and fallback is an endpoint modelplane runs itself (worked out when
    the table is built, for the local upstream timeout)."""
    live: tuple[WeightedTarget, ...] = field(init=False)
    """The targets with a weight above 0 (worked out once, not per request)."""
    first: str = field(init=False)
    """The first of them: the endpoint whose limits a request counts against."""
    total_s: float | None = field(init=False)
    """``spec.timeouts.total_s``, copied out of the pydantic model (read per request)."""

    def __post_init__(self) -> None:
        live = tuple(t for t in self.spec.targets if t.weight > 0)
        object.__setattr__(self, "live", live)
        object.__setattr__(self, "first", live[0].endpoint)
        object.__setattr__(self, "total_s", self.spec.timeouts.total_s)

    def chain(self, sticky_id: str | None) -> list[str]:
        """The endpoints to try, in order: one weighted pick, then the fallbacks."""
        live = self.live
        first = live[0].endpoint if len(live) == 1 else pick_weighted(live, sticky_id)
        fallbacks = self.spec.fallbacks
        return [first, *[f for f in fallbacks if f != first]] if fallbacks else [first]


def pick_weighted(targets: Sequence[WeightedTarget], sticky_id: str | None) -> str:
    """A weighted random choice; with ``sticky_id``, weighted rendezvous hashing, so one
    id keeps its target, and a weight change moves only the share it must."""
    live = [t for t in targets if t.weight > 0]
    if len(live) == 1:
        return live[0].endpoint
    if sticky_id is None:
        return random.choices(live, weights=[t.weight for t in live])[0].endpoint
    best, best_score = live[0].endpoint, math.inf
    for t in live:
        digest = hashlib.blake2b(f"{sticky_id}\0{t.endpoint}".encode(), digest_size=8).digest()
        u = (int.from_bytes(digest) + 1) / (2**64 + 1)  # uniform in (0, 1)
        score = -math.log(u) / t.weight
        if score < best_score:
            best, best_score = t.endpoint, score
    return best


class RouteTable:
    """Public names → routes, rebuilt when the routes or endpoints snapshot changes."""

    def __init__(
        self,
        routes: Callable[[], Mapping[str, Route]],
        endpoints: Callable[[], Mapping[str, Endpoint]],
    ) -> None:
        self._routes = routes
        self._endpoints = endpoints
        self._seen: tuple[object, object] | None = None
        self._by_name: dict[str, ResolvedRoute] = {}

    def _rebuild(self) -> None:
        routes, endpoints = self._routes(), self._endpoints()
        if self._seen is not None and self._seen[0] is routes and self._seen[1] is endpoints:
            return

        def local(names: list[str]) -> bool:
            return all(n in endpoints and endpoints[n].provider is None for n in names)

        table: dict[str, ResolvedRoute] = {
            name: ResolvedRoute(
                name,
                DEFAULT.model_copy(update={"targets": [WeightedTarget(endpoint=name)]}),
                implicit=True,
                owner=ep.owner,
                local=ep.provider is None,
            )
            for name, ep in endpoints.items()
        }
        for route in routes.values():
            spec = RouteSpec.model_validate(route.spec)
            targets = [*(t.endpoint for t in spec.targets if t.weight > 0), *spec.fallbacks]
            resolved = ResolvedRoute(route.name, spec, False, route.owner, local(targets))
            table[route.name] = resolved
            for alias in resolved.spec.aliases:
                table.setdefault(alias, resolved)
        self._by_name = table
        self._seen = (routes, endpoints)

    def resolve(self, model: str) -> ResolvedRoute:
        route = self.lookup(model)
        if route is None:
            raise ModelNotFound(model)
        return route

    def lookup(self, model: str) -> ResolvedRoute | None:
        """The route a public name (or alias) stands for, or ``None``."""
        self._rebuild()
        return self._by_name.get(model)

    def names(self, readable: Callable[[Owned], bool]) -> list[str]:
        """Public names whose route ``readable`` accepts (the caller's view)."""
        self._rebuild()
        return sorted(n for n, r in self._by_name.items() if readable(r.owner))
