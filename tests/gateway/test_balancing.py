"""Balancing strategies, through the registry like the router uses them."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import pytest

from modelplane.gateway import balancing
from modelplane.gateway.balancing import PowerOfTwo, Request, Stats
from modelplane.spec import BalancingConfig

URLS = ["http://a", "http://b", "http://c"]


def strategy(name: str, **settings: Any) -> balancing.Strategy:
    return balancing.create(balancing.parse({"strategy": name, **settings}))


def req(
    body: dict[str, Any] | None = None, headers: dict[str, str] | None = None, **settings: Any
) -> Request:
    return Request(body or {}, headers or {}, BalancingConfig(**settings))


def chat(system: str, user: str) -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}


def test_round_robin_takes_turns() -> None:
    s = strategy("round_robin")
    picks = [s.choose(URLS, req(), Stats()) for _ in range(6)]
    assert picks == URLS * 2


def test_least_outstanding_prefers_the_idle_replica_and_rotates_ties() -> None:
    s = strategy("least_outstanding")
    stats = Stats(outstanding={"http://a": 3, "http://b": 1, "http://c": 2})
    assert {s.choose(URLS, req(), stats) for _ in range(5)} == {"http://b"}
    idle = Counter(s.choose(URLS, req(), Stats()) for _ in range(300))
    assert set(idle.values()) == {100}


def test_power_of_two_never_picks_the_busiest_of_the_pair() -> None:
    s = PowerOfTwo(BalancingConfig(), rng=random.Random(7))
    stats = Stats(outstanding={"http://a": 9, "http://b": 0, "http://c": 0})
    picks = Counter(s.choose(URLS, req(), stats) for _ in range(600))
    # "a" could only win a pair against itself, which sampling excludes.
    assert picks["http://a"] == 0
    assert picks["http://b"] > 200 and picks["http://c"] > 200


def test_latency_ewma_measures_everyone_then_prefers_the_fast_one() -> None:
    s = strategy("latency_ewma")
    stats = Stats(latency={"http://a": 0.050})
    assert s.choose(URLS, req(), stats) in ("http://b", "http://c")
    stats.latency.update({"http://b": 0.010, "http://c": 0.030})
    assert s.choose(URLS, req(), stats) == "http://b"
    # A fast replica that is busy loses to a slower idle one.
    stats.outstanding["http://b"] = 5
    assert s.choose(URLS, req(), stats) == "http://c"


def test_session_affinity_is_sticky_and_moves_only_the_departed_replicas_sessions() -> None:
    s = strategy("session_affinity")
    sessions = [f"user-{i}" for i in range(300)]
    home = {k: s.choose(URLS, req(headers={"x-session-id": k}), Stats()) for k in sessions}
    again = {k: s.choose(URLS, req(headers={"x-session-id": k}), Stats()) for k in sessions}
    assert home == again
    assert min(Counter(home.values()).values()) > 60  # spread, not all on one
    without_c = {k: s.choose(URLS[:2], req(headers={"x-session-id": k}), Stats()) for k in sessions}
    moved = [k for k in sessions if without_c[k] != home[k]]
    assert moved and all(home[k] == "http://c" for k in moved)
    # The OpenAI ``user`` field works as the session key too.
    assert s.choose(URLS, req(body={"user": "user-7"}), Stats()) == home["user-7"]
    # A header named in any case is looked up as the server receives it: lowercase.
    assert BalancingConfig.parse({"affinity_header": "X-Tenant"}).affinity_header == "x-tenant"


def test_prefix_cache_keeps_a_shared_prefix_on_one_replica_until_its_bound() -> None:
    s = strategy("prefix_cache", prefix_chars=64)
    system = "You are a support agent for ACME. Answer briefly and politely. " * 2
    stats = Stats()
    owner = s.choose(URLS, req(chat(system, "q0"), prefix_chars=64), stats)
    placed = []
    for i in range(30):  # the same prefix, every request still in flight
        total = sum(stats.outstanding.values()) + 1
        bound = math.ceil(1.25 * total / len(URLS))
        url = s.choose(URLS, req(chat(system, f"question {i}"), prefix_chars=64), stats)
        # The owner takes it exactly while it stays within the bound; else it spills.
        assert (url == owner) == (stats.outstanding.get(owner, 0) + 1 <= bound)
        assert stats.outstanding.get(url, 0) + 1 <= bound
        placed.append(url)
        stats.outstanding[url] = stats.outstanding.get(url, 0) + 1
    assert Counter(placed)[owner] == max(Counter(placed).values())
    assert len(set(placed)) > 1
    # Idle again: the prefix goes home.
    assert s.choose(URLS, req(chat(system, "later"), prefix_chars=64), Stats()) == owner


def test_prefix_cache_spreads_different_prefixes() -> None:
    s = strategy("prefix_cache")
    homes = Counter(
        s.choose(URLS, req(chat(f"system prompt number {i}", "hi")), Stats()) for i in range(300)
    )
    assert len(homes) == 3 and min(homes.values()) > 50


def test_prefix_of_completions_prompts() -> None:
    r = req({"prompt": "abcdef"}, prefix_chars=3)
    assert r.prefix == "abc"
    assert req({"prompt": ["xyz"]}).prefix == "xyz"
    assert req({}).prefix is None


@pytest.mark.parametrize(
    "value",
    [
        "warp-drive",
        {"strategy": "prefix_cache", "colour": 1},
        {"strategy": "prefix_cache", "load_factor": 0.5},
        3,
    ],
)
def test_bad_configs_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        balancing.parse(value)
