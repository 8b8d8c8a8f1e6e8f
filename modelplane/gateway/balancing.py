"""Load balancing across an endpoint's ready replicas.

Every strategy implements one method, ``choose(urls, request, stats) -> url``, and is
registered by name; built-ins go through the same ``register`` call as any other.
An endpoint picks one with its ``balancing`` option: a name, or an object
``{"strategy": name, ...settings}`` (see ``modelplane.spec.BalancingConfig``).

- ``round_robin``: each replica in turn.
- ``least_outstanding`` (default): fewest requests in flight; ties rotate.
- ``power_of_two``: two replicas at random, the less loaded of them.
- ``latency_ewma``: lowest recent time-to-first-byte (an exponentially weighted
  average), weighted by the requests in flight.
- ``session_affinity``: the same session (``affinity_header``, else the request's
  ``user``) goes to the same replica while it is ready (rendezvous hashing: when a
  replica leaves, only its own sessions move).
- ``prefix_cache``: requests whose prompts share their first ``prefix_chars``
  characters go to the same replica, so its KV cache already holds the prefix —
  consistent hashing with bounded loads: a replica takes a key only while it has fewer
  than ``load_factor`` times the average requests in flight (rounded up), so a hot prefix
  spills to the next replica on the ring instead of overloading one.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from modelplane.plugins import Registry
from modelplane.spec import BalancingConfig


@dataclass
class Stats:
    """What the router knows about each replica URL."""

    outstanding: dict[str, int] = field(default_factory=dict)
    latency: dict[str, float] = field(default_factory=dict)
    """Exponentially weighted time to first byte, in seconds."""


class Request:
    """The request being placed; what a strategy reads is computed only on demand."""

    def __init__(
        self, body: Mapping[str, Any], headers: Mapping[str, str], config: BalancingConfig
    ) -> None:
        self._body = body
        self._headers = headers
        self._config = config

    @cached_property
    def affinity(self) -> str | None:
        key = self._headers.get(self._config.affinity_header) or self._body.get("user")
        return str(key) if key else None

    @cached_property
    def prefix(self) -> str | None:
        """The start of the prompt as the model will see it (roles included)."""
        n = self._config.prefix_chars
        messages = self._body.get("messages")
        if isinstance(messages, list):
            parts: list[str] = []
            size = 0
            for m in messages:
                if not isinstance(m, dict):
                    continue
                content = m.get("content")
                text = content if isinstance(content, str) else json.dumps(content)
                parts.append(f"{m.get('role')}:{text}\n")
                size += len(parts[-1])
                if size >= n:
                    break
            return "".join(parts)[:n] or None
        prompt = self._body.get("prompt")
        if isinstance(prompt, list) and prompt:
            prompt = prompt[0]
        return prompt[:n] if isinstance(prompt, str) and prompt else None


class Strategy(Protocol):
    def choose(self, urls: Sequence[str], request: Request, stats: Stats) -> str: ...


def _h(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class RoundRobin:
    def __init__(self, config: BalancingConfig) -> None:
        self._n = itertools.count()

    def choose(self, urls: Sequence[str], request: Request, stats: Stats) -> str:
        return urls[next(self._n) % len(urls)]


class LeastOutstanding:
    """Fewest requests in flight; ties rotate so idle replicas share the load."""

    def __init__(self, config: BalancingConfig) -> None:
        self._n = itertools.count()

    def choose(self, urls: Sequence[str], request: Request, stats: Stats) -> str:
        load = stats.outstanding
        start = next(self._n) % len(urls)
        best, best_load = urls[start], load.get(urls[start], 0)
        for i in range(1, len(urls)):
            url = urls[(start + i) % len(urls)]
            if load.get(url, 0) < best_load:
                best, best_load = url, load.get(url, 0)
        return best


class PowerOfTwo:
    def __init__(self, config: BalancingConfig, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, urls: Sequence[str], request: Request, stats: Stats) -> str:
        if len(urls) == 1:
            return urls[0]
        a, b = self._rng.sample(list(urls), 2)
        return a if stats.outstanding.get(a, 0) <= stats.outstanding.get(b, 0) else b


class LatencyEwma:
    """Lowest expected wait: recent latency times (requests in flight + 1). Replicas with
    no measurement yet go first, so each gets measured."""

    def __init__(self, config: BalancingConfig) -> None:
        self._fallback = LeastOutstanding(config)

    def choose(self, urls: Sequence[str], request: Request, stats: Stats) -> str:
        unmeasured = [u for u in urls if u not in stats.latency]
        if unmeasured:
            return self._fallback.choose(unmeasured, request, stats)
        return min(urls, key=lambda u: stats.latency[u] * (stats.outstanding.get(u, 0) + 1))


class SessionAffinity:
    def __init__(self, config: BalancingConfig) -> None:
        self._fallback = LeastOutstanding(config)

    def choose(self, urls: Sequence[str], request: Request, stats: Stats) -> str:
        key = request.affinity
        if key is None:
            return self._fallback.choose(urls, request, stats)
        return max(urls, key=lambda u: _h(f"{key}|{u}"))


class PrefixCache:
    VNODES = 64

    def __init__(self, config: BalancingConfig) -> None:
        self._factor = config.load_factor
        self._fallback = LeastOutstanding(config)
        self._ring: tuple[tuple[str, ...], list[int], list[str]] | None = None

    def _nodes(self, urls: Sequence[str]) -> tuple[list[int], list[str]]:
        members = tuple(sorted(urls))
        if self._ring is None or self._ring[0] != members:
            points = sorted((_h(f"{u}#{v}"), u) for u in members for v in range(self.VNODES))
            self._ring = (members, [p for p, _ in points], [u for _, u in points])
        return self._ring[1], self._ring[2]

    def choose(self, urls: Sequence[str], request: Request, stats: Stats) -> str:
        prefix = request.prefix
        if prefix is None or len(urls) == 1:
            return self._fallback.choose(urls, request, stats)
        load = stats.outstanding
        total = sum(load.get(u, 0) for u in urls) + 1  # with this request
        bound = math.ceil(self._factor * total / len(urls))
        hashes, owners = self._nodes(urls)
        start = bisect.bisect(hashes, _h(prefix))
        seen: set[str] = set()
        for i in range(len(owners)):
            url = owners[(start + i) % len(owners)]
            if url in seen:
                continue
            if load.get(url, 0) + 1 <= bound:
                return url
            seen.add(url)
            if len(seen) == len(urls):
                break
        return self._fallback.choose(urls, request, stats)


StrategyFactory = Callable[[BalancingConfig], Strategy]

STRATEGIES: Registry[StrategyFactory] = Registry("balancer")
"""Plugins add strategies through the ``modelplane.balancers`` entry point group."""


def register(name: str, factory: str | StrategyFactory) -> None:
    STRATEGIES.register(name, factory)


def check(config: BalancingConfig) -> BalancingConfig:
    """``ValueError`` unless a strategy of that name is registered (the control plane
    asks when an endpoint is written; the spec itself only knows it is a name)."""
    if config.strategy not in STRATEGIES:
        raise ValueError(
            f"unknown balancing strategy '{config.strategy}'; choose one "
            f"of {', '.join(STRATEGIES.names())}"
        )
    return config


def parse(value: object) -> BalancingConfig:
    """An endpoint's ``balancing`` option (absent, a name, or an object), its strategy
    registered."""
    return check(BalancingConfig.parse(value))


def create(config: BalancingConfig) -> Strategy:
    return STRATEGIES.get(config.strategy)(config)


register("round_robin", RoundRobin)
register("least_outstanding", LeastOutstanding)
register("power_of_two", PowerOfTwo)
register("latency_ewma", LatencyEwma)
register("session_affinity", SessionAffinity)
register("prefix_cache", PrefixCache)
