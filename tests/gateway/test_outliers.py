"""Passive outlier ejection, with a clock the test moves."""

from __future__ import annotations

from datetime import UTC, datetime

from modelplane.gateway.outliers import Outliers
from modelplane.gateway.router import Router
from modelplane.runtimes.base import Replica, ReplicaStatus
from modelplane.store.records import Endpoint


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_consecutive_failures_eject_for_a_growing_cooldown() -> None:
    clock = Clock()
    o = Outliers(consecutive=3, base_cooldown_s=5, max_cooldown_s=12, clock=clock)
    assert not o.failure("a") and not o.failure("a")
    assert o.failure("a") and o.ejected("a")
    clock.now += 5.1
    assert not o.ejected("a")
    # Failing again right after coming back: twice as long this time, then capped.
    for _ in range(3):
        o.failure("a")
    assert o.ejected("a") and 9.9 < o.cooldown_left("a") <= 10
    clock.now += 10.1
    for _ in range(3):
        o.failure("a")
    assert o.cooldown_left("a") == 12


def test_a_success_resets_the_count_and_the_history() -> None:
    clock = Clock()
    o = Outliers(consecutive=3, base_cooldown_s=5, clock=clock)
    o.failure("a")
    o.failure("a")
    o.success("a")
    assert not o.failure("a") and not o.failure("a")  # counting starts over
    assert o.failure("a")
    clock.now += 6
    o.success("a")  # served fine after its cooldown: forgiven
    for _ in range(3):
        o.failure("a")
    assert o.cooldown_left("a") == 5


def _router(urls: list[str]) -> tuple[Router, Endpoint]:
    now = datetime.now(UTC)
    ep = Endpoint("e", "m", "llamacpp", None, "smollm2", len(urls), {}, 1, now, now)
    reps = [Replica("m", i, 1, ReplicaStatus.READY, url) for i, url in enumerate(urls)]
    return Router(lambda: {"m": ep}, lambda name: reps), ep


def test_router_skips_ejected_replicas_but_never_refuses_for_that_alone() -> None:
    router, ep = _router(["http://a", "http://b"])
    for _ in range(3):
        router.outliers.failure("http://a")
    assert {router.pick(ep) for _ in range(10)} == {"http://b"}
    for _ in range(3):
        router.outliers.failure("http://b")
    # Everyone is ejected: better to try one than to fail the request.
    assert router.pick(ep) in ("http://a", "http://b")
