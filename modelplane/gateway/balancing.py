"""Load-balancing strategies: choose one replica URL among the ready ones.

Each strategy is a small class behind one method, registered by name; endpoints pick
one with the ``balancing`` engine option (default ``least_outstanding``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol


class Strategy(Protocol):
    def choose(self, urls: Sequence[str], outstanding: Mapping[str, int]) -> str: ...


class RoundRobin:
    def __init__(self) -> None:
        self._n = itertools.count()

    def choose(self, urls: Sequence[str], outstanding: Mapping[str, int]) -> str:
        return urls[next(self._n) % len(urls)]


class LeastOutstanding:
    """Fewest requests in flight; ties rotate so idle replicas share the load."""

    def __init__(self) -> None:
        self._n = itertools.count()

    def choose(self, urls: Sequence[str], outstanding: Mapping[str, int]) -> str:
        start = next(self._n) % len(urls)
        best, best_load = urls[start], outstanding.get(urls[start], 0)
        for i in range(1, len(urls)):
            url = urls[(start + i) % len(urls)]
            load = outstanding.get(url, 0)
            if load < best_load:
                best, best_load = url, load
        return best


STRATEGIES: dict[str, Callable[[], Strategy]] = {
    "round_robin": RoundRobin,
    "least_outstanding": LeastOutstanding,
}


def register(name: str, factory: Callable[[], Strategy]) -> None:
    STRATEGIES[name] = factory


def create(name: str) -> Strategy:
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise KeyError(
            f"unknown balancing strategy '{name}'; known: {', '.join(sorted(STRATEGIES))}"
        ) from None
