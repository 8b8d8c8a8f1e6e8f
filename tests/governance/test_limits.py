"""The limiter on both coordination backends (memory and the real Redis): the tightest
rule decides, a refusal counts nothing, settling replaces estimates and frees slots, and
a token estimate is corrected at once wherever a late correction could change whether
the next request fits."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from modelplane.coord import Coord
from modelplane.errors import RateLimited
from modelplane.governance.gatekeeper import settle_at_once
from modelplane.governance.limits import (
    MINUTE,
    Grant,
    Limiter,
    LimitRule,
    duration,
    estimate_tokens,
)
from modelplane.spec import RateLimits
from modelplane.telemetry.answers import Answer, read_answer
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


async def test_a_grant_knows_how_far_its_token_counters_are_from_their_last_quarter(
    coord: Coord,
) -> None:
    limiter = Limiter(coord.counters)
    roomy, small = rule("roomy", tpm=1000), rule("small", tpm=100)
    assert (await limiter.admit([roomy], 10)).slack == 1000 - 10 - 250
    # The tighter counter decides; requests-only rules have no say.
    both = await limiter.admit([roomy, small, rule("rpm-only", rpm=5)], 10)
    assert both.slack == 100 - 10 - 25
    # Past three quarters (80 of 100): negative.
    assert (await limiter.admit([rule("full", tpm=100)], 80)).slack < 0
    assert (await limiter.admit([rule("rpm-only-2", rpm=5)], 10)).slack == float("inf")


def test_a_token_estimate_is_corrected_at_once_only_where_it_can_change_a_decision() -> None:
    def outcome(prompt: int, completion: int | None, failed: bool = False) -> Answer:
        usage = (
            ""
            if completion is None
            else f',"usage":{{"prompt_tokens":{prompt},' + (f'"completion_tokens":{completion}}}')
        )
        return read_answer(400 if failed else 200, f'{{"id":"x"{usage}}}'.encode(), 0)

    roomy = Grant(tokens=100, token_keys=["tpm:k"], slack=500)
    # Used about what it was charged, far from the limit: the next batch will do.
    assert not settle_at_once(outcome(50, 40), roomy)
    assert not settle_at_once(outcome(50, 540), roomy)  # 490 over: within the slack
    assert not settle_at_once(outcome(0, 0, failed=True), roomy)  # gives tokens back
    # More over than the slack, or nothing said about usage: at once.
    assert settle_at_once(outcome(50, 560), roomy)
    assert settle_at_once(outcome(50, None), roomy)
    # A counter in its last quarter: every correction at once.
    tight = Grant(tokens=100, token_keys=["tpm:k"], slack=-1)
    assert settle_at_once(outcome(50, 40), tight)
    assert settle_at_once(outcome(0, 0, failed=True), tight)
    # No token limit: nothing to correct.
    assert not settle_at_once(outcome(50, None), Grant(tokens=100))
