"""The response cache on both coordination backends: keys, hits, expiry, and streams
stored only when they complete cleanly."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from modelplane.coord import create
from modelplane.gateway.cache import Hit, ResponseCache
from tests.coord.helpers import Backend, eventually

JSON = "application/json"
SSE = "text/event-stream; charset=utf-8"
ANSWER = json.dumps({"id": "c1", "choices": [{"message": {"content": "hi"}}]}).encode()
FRAMES = [
    b'data: {"choices":[{"delta":{"content":"he"}}]}\n\n',
    b'data: {"choices":[{"delta":{"content":"llo \\"error\\": no"}}]}\n\n',
    b"data: [DONE]\n\n",
]


@pytest.fixture(params=["memory", "redis"])
def coord_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
async def backend(coord_url: str) -> AsyncIterator[Backend]:
    backend = Backend(coord_url)
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture
def cache(backend: Backend) -> ResponseCache:
    return ResponseCache(backend.connect().cache, max_entry_bytes=4096)


class Upstream:
    """An upstream body iterator that records whether it was closed."""

    def __init__(self, chunks: list[bytes], fail_after: int | None = None) -> None:
        self.chunks = chunks
        self.fail_after = fail_after
        self.closed = False

    async def __call__(self) -> AsyncIterator[bytes]:
        try:
            for i, chunk in enumerate(self.chunks):
                if i == self.fail_after:
                    raise ConnectionResetError("upstream went away")
                yield chunk
        finally:
            self.closed = True


def _split(frames: list[bytes], size: int) -> list[bytes]:
    """The stream cut into pieces that ignore frame boundaries, as TCP would."""
    raw = b"".join(frames)
    return [raw[i : i + size] for i in range(0, len(raw), size)]


async def _drain(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in stream]


def test_keys_ignore_order_model_and_user_but_not_what_changes_the_answer() -> None:
    cache = ResponseCache(create(None).cache)
    body = {"model": "a", "messages": [{"role": "user", "content": "x"}], "temperature": 0}
    key = cache.key("route", "chat", body)
    assert key == cache.key("route", "chat", dict(reversed(body.items())))
    assert key == cache.key("route", "chat", {**body, "user": "u-1", "model": "alias"})
    for other in (
        cache.key("route", "chat", {**body, "temperature": 0.5}),
        cache.key("route", "chat", {**body, "stream": True}),
        cache.key("route", "chat", {**body, "stream_options": {"include_usage": True}}),
        cache.key("other-route", "chat", body),
        cache.key("route", "completions", body),
    ):
        assert other != key


async def test_a_stored_answer_is_a_hit_until_it_expires(cache: ResponseCache) -> None:
    key = cache.key("r", "chat", {"messages": []})
    assert await cache.get(key) is None
    await cache.put(key, JSON, ANSWER, 60)
    hit = await cache.get(key)
    assert hit == Hit(JSON, ANSWER, stream=False, status=200)
    assert await _drain(cache.replay(hit)) == [ANSWER]

    await cache.put("short", JSON, ANSWER, 0.1)
    assert await cache.get("short")

    async def expired() -> bool:
        return await cache.get("short") is None

    await eventually(expired, what="a 100 ms answer expiring")


async def test_errors_incomplete_and_oversized_answers_are_not_stored(
    cache: ResponseCache,
) -> None:
    error = json.dumps({"error": {"message": "boom", "type": "x"}}).encode()
    for key, ctype, body in [
        ("error", JSON, error),
        ("spaced-error", JSON, b'{"id": 1, "error" : "boom"}'),
        ("stream-error", SSE, b"data: {}\n\ndata: " + error + b"\n\ndata: [DONE]\n\n"),
        ("no-done", SSE, b"".join(FRAMES[:2])),
        ("empty", JSON, b""),
        ("oversized", JSON, b'{"x":"' + b"a" * 4096 + b'"}'),
    ]:
        await cache.put(key, ctype, body, 60)
        assert await cache.get(key) is None, key
    await cache.put("null-error", JSON, b'{"id":1,"error":null}', 60)
    assert await cache.get("null-error")


async def test_a_teed_stream_replays_byte_identical_frame_by_frame(cache: ResponseCache) -> None:
    upstream = Upstream(_split(FRAMES, 7))
    passed = await _drain(cache.tee("k", upstream(), SSE, 60))
    assert passed == upstream.chunks and upstream.closed
    hit = await cache.get("k")
    assert hit is not None and hit.stream and hit.content_type == SSE
    assert await _drain(cache.replay(hit)) == FRAMES


async def test_crlf_frames_and_a_trailing_remainder_replay_unchanged(cache: ResponseCache) -> None:
    frames = [b"data: {}\r\n\r\n", b": keep-alive\n\n", b"data: [DONE]\n\n\n"]
    await _drain(cache.tee("k", Upstream(frames)(), SSE, 60))
    hit = await cache.get("k")
    assert hit is not None
    assert await _drain(cache.replay(hit)) == [*frames[:2], b"data: [DONE]\n\n", b"\n"]


async def test_a_broken_stream_is_passed_on_but_not_stored(cache: ResponseCache) -> None:
    upstream = Upstream(FRAMES, fail_after=2)
    seen: list[bytes] = []
    with pytest.raises(ConnectionResetError):
        async for chunk in cache.tee("k", upstream(), SSE, 60):
            seen.append(chunk)
    assert seen == FRAMES[:2] and upstream.closed
    assert await cache.get("k") is None


async def test_an_abandoned_stream_closes_upstream_and_is_not_stored(
    cache: ResponseCache,
) -> None:
    upstream = Upstream(FRAMES)
    stream = cache.tee("k", upstream(), SSE, 60)
    assert await anext(aiter(stream)) == FRAMES[0]
    await stream.aclose()
    assert upstream.closed
    assert await cache.get("k") is None


async def test_a_stream_past_the_entry_limit_passes_through_unstored(
    cache: ResponseCache,
) -> None:
    frames = [b'data: {"x":"' + b"a" * 1000 + b'"}\n\n'] * 5 + [b"data: [DONE]\n\n"]
    upstream = Upstream(frames)
    assert await _drain(cache.tee("k", upstream(), SSE, 60)) == frames
    assert await cache.get("k") is None


async def test_an_error_event_in_a_stream_keeps_it_out(cache: ResponseCache) -> None:
    frames = [FRAMES[0], b'data: {"error": {"message": "replica failed"}}\n\n', FRAMES[2]]
    await _drain(cache.tee("k", Upstream(frames)(), SSE, 60))
    assert await cache.get("k") is None


async def test_an_entry_that_is_not_ours_is_a_miss(backend: Backend) -> None:
    coord = backend.connect()
    await coord.cache.set("k", b"not an entry", 60)
    assert await ResponseCache(coord.cache).get("k") is None


async def test_an_unreachable_backend_fails_open() -> None:
    coord = create("redis://127.0.0.1:1/0")
    try:
        cache = ResponseCache(coord.cache)
        await cache.put("k", JSON, ANSWER, 60)
        assert await cache.get("k") is None
        assert await _drain(cache.tee("k", Upstream(FRAMES)(), SSE, 60)) == FRAMES
    finally:
        await coord.close()
