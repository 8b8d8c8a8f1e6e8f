"""The limiter on both coordination backends (memory and the real Redis): the tightest
rule decides, a refusal counts nothing, settling replaces estimates and frees slots."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from modelplane.coord import Coord
from modelplane.errors import RateLimited
from modelplane.gateway.limits import (
    MINUTE,
    Limiter,
    LimitRule,
    RateLimits,
    duration,
    estimate_tokens,
)
from tests.coord.helpers import Backend


@pytest.fixture(params=["memory", "redis"])
async def coord(request: pytest.FixtureRequest) -> AsyncIterator[Coord]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    backend = Backend(url)
    try:
        yield backend.connect()
    finally:
        await backend.aclose()


def rule(name: str, **limits: int) -> LimitRule:
    return LimitRule(name, f"key '{name}'", RateLimits(**limits))


def test_reset_times_are_written_the_openai_way() -> None:
    assert [duration(s) for s in (0.25, 1, 12, 59.2, 60, 63, 3600)] == [
        "250ms",
        "1s",
        "12s",
        "1m0s",
        "1m0s",
        "1m3s",
        "60m0s",
    ]


def test_token_estimate() -> None:
    body = b"x" * 400
    assert estimate_tokens(body, {}) == 100
    assert estimate_tokens(body, {"max_tokens": 50}) == 150
    assert estimate_tokens(body, {"max_completion_tokens": 20, "max_tokens": 50}) == 120
    assert estimate_tokens(b"{}", {"max_tokens": "lots"}) == 1


async def test_the_tightest_rule_decides_and_a_refusal_counts_nothing(coord: Coord) -> None:
    limiter = Limiter(coord.counters)
    loose, tight = rule("loose", rpm=10, tpm=1000), rule("tight", rpm=2)
    first = await limiter.admit([loose, tight], 10)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-remaining-tokens"] == "990"
    await limiter.admit([loose, tight], 10)
    with pytest.raises(RateLimited) as refused:
        await limiter.admit([loose, tight], 10)
    assert "key 'tight'" in refused.value.message and refused.value.retry_after >= 1
    assert refused.value.extra_headers["x-ratelimit-remaining-requests"] == "0"
    # The loose rule's counters gave back what the refused request took.
    assert (await coord.counters.incr("rpm:loose", 0, MINUTE)).count == 2
    assert (await coord.counters.incr("tpm:loose", 0, MINUTE)).count == 20


async def test_settling_replaces_the_estimate_and_frees_slots(coord: Coord) -> None:
    limiter = Limiter(coord.counters)
    r = rule("k", tpm=100, concurrency=1)
    grant = await limiter.admit([r], 80)
    with pytest.raises(RateLimited, match="1 requests in flight"):
        await limiter.admit([r], 1)
    await limiter.settle(grant, 5)
    assert (await coord.counters.incr("tpm:k", 0, MINUTE)).count == 5
    grant = await limiter.admit([r], 90)  # room again, and the slot is free
    await limiter.settle(grant, 200)  # used more than it was charged
    assert (await coord.counters.incr("tpm:k", 0, MINUTE)).count == 205
    with pytest.raises(RateLimited, match="100 tokens per minute"):
        await limiter.admit([r], 1)


async def test_limits_fail_open_when_the_backend_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = Backend("redis://127.0.0.1:1/0")  # nothing listens there
    down = backend.connect()
    try:
        grant = await Limiter(down.counters).admit([rule("k", rpm=1)], 1)
        assert grant.headers == {} and not grant.slots
        assert "not enforced" in caplog.text
    finally:
        await down.close()
