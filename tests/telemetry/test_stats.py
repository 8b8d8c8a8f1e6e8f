"""The in-process request statistics behind the dashboard, on an injected clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from modelplane.errors import ModelNotFound
from modelplane.telemetry.stats import OTHER, RequestStats


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(**kw: int) -> tuple[RequestStats, Clock]:
    clock = Clock()
    return RequestStats(clock=clock, timer=clock, **kw), clock


def test_counts_per_endpoint_and_overall() -> None:
    stats, clock = make()
    for _ in range(3):
        stats.record("a", 200, 0.03, tokens=5)
    stats.record("b", 500, 0.2)
    clock.now += 1
    stats.record("a", 404, 0.01)
    snap = stats.snapshot(window_s=10, step_s=1, endpoint="a")
    assert "series" not in snap["endpoints"]["b"]  # only the endpoint asked for
    assert snap["window_s"] == 10 and len(snap["t"]) == 10
    assert snap["t"][-1] == int(clock.now)
    a = snap["endpoints"]["a"]
    assert a["totals"]["requests"] == 4
    assert a["totals"]["errors"] == 1
    assert a["totals"]["tokens"] == 15
    assert a["series"]["requests"][-2:] == [3, 1]
    assert a["series"]["tokens_per_s"][-2:] == [15.0, 0.0]
    assert a["series"]["error_rate"][-2:] == [0, 1.0]
    assert a["series"]["p50_ms"][:8] == [None] * 8
    overall = snap["overall"]["totals"]
    assert (overall["requests"], overall["errors"], overall["tokens"]) == (5, 2, 15)
    assert overall["error_rate"] == 0.4
    assert overall["rps"] == 0.5
    assert overall["mean_ms"] == pytest.approx((3 * 30 + 200 + 10) / 5, abs=0.1)


def test_steps_add_up_seconds() -> None:
    stats, clock = make()
    for _ in range(10):
        stats.record("a", 200, 0.05)
        clock.now += 1
    snap = stats.snapshot(window_s=10, step_s=5)
    # The window ends at the current second, which has no request yet.
    assert snap["overall"]["series"]["requests"] == [5, 4]
    assert snap["overall"]["series"]["rps"] == [1.0, 0.8]


def test_percentiles_from_the_histogram() -> None:
    stats, _ = make()
    for _ in range(90):
        stats.record("a", 200, 0.03, ttft_s=0.007)  # (0.025, 0.05]
    for _ in range(10):
        stats.record("a", 200, 3.0, ttft_s=0.007)  # (2.5, 5]
    totals = stats.snapshot(60, 60)["overall"]["totals"]
    assert 25 < totals["p50_ms"] <= 50
    assert 2500 < totals["p95_ms"] <= 5000
    assert 5 < totals["ttft_p50_ms"] <= 10


def test_labels_are_capped_and_the_rest_count_as_other() -> None:
    stats, clock = make(max_labels=3, window_s=60)
    for name in ("a", "b", "c", "d", "e"):
        stats.record(name, 200, 0.01)
    stats.record("a", 200, 0.01)  # a known label is still its own
    endpoints = stats.snapshot(60, 60)["endpoints"]
    assert sorted(endpoints) == ["a", "b", "c", OTHER]
    assert endpoints[OTHER]["totals"]["requests"] == 2
    assert endpoints["a"]["totals"]["requests"] == 2
    # Once the old labels leave the window, new ones get their own again.
    clock.now += 61
    stats.record("f", 200, 0.01)
    assert sorted(stats.snapshot(60, 60)["endpoints"]) == ["f"]


def test_the_window_forgets_old_seconds() -> None:
    stats, clock = make(window_s=600)
    stats.record("a", 200, 0.01)
    clock.now += 300
    assert stats.snapshot(300, 5)["overall"]["totals"]["requests"] == 0
    assert stats.snapshot(600, 5)["overall"]["totals"]["requests"] == 1
    clock.now += 300  # the slot is reused by this second
    stats.record("a", 200, 0.01)
    assert stats.snapshot(600, 5)["overall"]["totals"]["requests"] == 1
    clock.now += 600
    assert stats.snapshot(600, 5)["overall"]["totals"]["requests"] == 0
    assert stats.snapshot(600, 5)["endpoints"] == {}


def test_windows_are_clamped() -> None:
    stats, _ = make(window_s=60)
    snap = stats.snapshot(window_s=10_000, step_s=0)
    assert (snap["window_s"], snap["step_s"], len(snap["t"])) == (60, 1, 60)


def test_the_error_ring_keeps_the_last_errors_newest_first() -> None:
    stats, clock = make(errors_kept=3)
    for i in range(5):
        clock.now += 1
        body = b'{"error":{"message":"bad %d","type":"x"}}' % i
        stats.answer("ep", "model", f"req-{i}", clock.now - 0.5, 400 + i, body)
    errors = stats.snapshot(60, 60)["recent_errors"]
    assert [e["request_id"] for e in errors] == ["req-4", "req-3", "req-2"]
    assert errors[0] == {
        "at": clock.now,
        "model": "model",
        "endpoint": "ep",
        "status": 404,
        "message": "bad 4",
        "request_id": "req-4",
    }
    assert stats.snapshot(60, 60)["overall"]["totals"]["p50_ms"] == 500.0  # all took 0.5 s


def test_errors_never_keep_a_key() -> None:
    stats, _ = make()
    leaked = b'{"error":{"message":"upstream said: Bearer sk-abcdefghijklmnopqrstuvwxyz"}}'
    stats.answer("ep", "m", "r", 0.0, 401, leaked)
    message = stats.snapshot(60, 60)["recent_errors"][0]["message"]
    assert "abcdefghijklmnop" not in message and "[redacted]" in message


def test_failures_before_an_answer_count_under_the_requested_model() -> None:
    stats, _ = make()
    stats.failed("nope", "r1", 0.0, ModelNotFound("nope"))
    stats.failed("x", "r2", 0.0, RuntimeError("boom"))
    snap = stats.snapshot(60, 60)
    assert snap["endpoints"]["nope"]["totals"]["errors"] == 1
    first, second = snap["recent_errors"]
    assert (first["status"], first["message"]) == (500, "internal error (RuntimeError)")
    assert second["status"] == 404 and second["endpoint"] is None


def test_visible_filters_endpoints_and_errors() -> None:
    stats, _ = make()
    stats.record("mine", 200, 0.01)
    stats.record("theirs", 200, 0.01)
    stats.answer("theirs", "theirs", "r", 0.0, 500, b"{}")
    snap = stats.snapshot(60, 60, visible={"mine"}.__contains__)
    assert list(snap["endpoints"]) == ["mine"]
    assert snap["overall"]["totals"]["requests"] == 1
    assert snap["recent_errors"] == []


async def _chunks(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def test_a_stream_is_timed_and_counted_when_it_ends() -> None:
    stats, clock = make()
    started = clock.now
    token = b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'

    async def slow() -> AsyncIterator[bytes]:
        clock.now += 0.02
        yield token
        clock.now += 0.5
        yield token + token
        yield b"data: [DONE]\n\n"

    out = [c async for c in stats.stream(slow(), "ep", "model", "r", started)]
    assert len(out) == 3
    totals = stats.snapshot(60, 60)["endpoints"]["ep"]["totals"]
    # Without a usage chunk: one token per text-bearing frame (three in two chunks), as
    # the usage record estimates too (one per chunk, 2, before both shared one reader).
    assert (totals["requests"], totals["errors"], totals["tokens"]) == (1, 0, 3)
    assert 10 < totals["ttft_p50_ms"] <= 25
    assert 500 < totals["p50_ms"] <= 1000


async def test_a_stream_prefers_its_usage_chunk() -> None:
    stats, clock = make()
    token = b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":11}}\n\n'
    async for _ in stats.stream(_chunks(token, usage), "ep", "m", "r", clock.now):
        pass
    assert stats.snapshot(60, 60)["overall"]["totals"]["tokens"] == 11


async def test_a_stream_ending_with_an_error_event_is_an_error() -> None:
    stats, clock = make()
    token = b'data: {"choices":[{"delta":{"content":"say \\"error\\": {x}"}}]}\n\n'
    error = b'data: {"error": {"message": "took too long", "code": "upstream_timeout"}}\n\n'
    async for _ in stats.stream(_chunks(token, token + error), "ep", "m", "r9", clock.now):
        pass
    snap = stats.snapshot(60, 60)
    assert snap["overall"]["totals"]["errors"] == 1
    [err] = snap["recent_errors"]
    assert (err["status"], err["message"], err["request_id"]) == (504, "took too long", "r9")


async def test_a_stream_the_client_left_is_recorded_once() -> None:
    stats, clock = make()
    stream = stats.stream(_chunks(b"data: {}\n\n", b"data: {}\n\n"), "ep", "m", "r", clock.now)
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    del stream
    assert stats.snapshot(60, 60)["overall"]["totals"]["requests"] == 1
    dropped = stats.stream(_chunks(b"data: {}\n\n"), "ep", "m", "r", clock.now)
    await anext(dropped)
    del dropped  # never finished nor closed: recorded when it is collected
    assert stats.snapshot(60, 60)["overall"]["totals"]["requests"] == 2
