"""Reading tokens and errors out of OpenAI answers' bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from modelplane.telemetry.answers import (
    Watched,
    answer_text,
    completion_tokens,
    error_message,
    prompt_tokens,
    stream_error,
    stream_text,
)


def test_token_counting_from_bytes() -> None:
    assert completion_tokens(b'{"usage":{"prompt_tokens":9,"completion_tokens":42}}') == 42
    assert completion_tokens(b'{"usage": {"completion_tokens": 7, "total_tokens": 9}}') == 7
    assert completion_tokens(b'{"choices":[]}') == 0
    assert prompt_tokens(b'{"usage":{"prompt_tokens": 9,"completion_tokens":42}}') == 9
    assert prompt_tokens(b'{"usage":{"prompt_tokens":"x"}}') == 0


def test_answer_texts_for_prompt_logging() -> None:
    assert answer_text(b'{"choices":[{"message":{"role":"assistant","content":"Hi"}}]}') == "Hi"
    assert answer_text(b'{"choices":[{"text":"Hello"}]}') == "Hello"
    assert answer_text(b"not json") is None
    frames = (
        b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
        b'data: {"choices":[{"delta":{"content":"Par"}}]}\n\n'
        b'data: {"choices":[{"delta":{"content":"is"}}]}\n\ndata: [DONE]\n\n'
    )
    assert stream_text(frames) == "Paris"


async def test_a_stream_is_recorded_at_its_done_before_the_client_sees_it() -> None:
    """A client stops at ``[DONE]``; the rest of the upstream's stream may come later."""
    release = asyncio.Event()
    ended: list[tuple[int, int]] = []

    async def upstream() -> AsyncIterator[bytes]:
        yield b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
        yield b'data: {"usage":{"prompt_tokens":4,"completion_tokens":1}}\n\ndata: [DONE]\n\n'
        await release.wait()  # the end of the HTTP body, still on its way

    watched = Watched(upstream(), lambda: 0.0, lambda f, t, e, p: ended.append((t, p)))
    chunks = [await anext(watched), await anext(watched)]
    assert chunks[-1].endswith(b"[DONE]\n\n") and ended == [(1, 4)]
    release.set()
    assert [c async for c in watched] == []
    await watched.aclose()
    assert ended == [(1, 4)]  # once


def test_error_messages_and_stream_error_events() -> None:
    assert error_message(b'{"error":{"message":"no such model","code":"x"}}') == "no such model"
    assert error_message(b'{"error":"plain"}') == "plain"
    assert error_message(b"<html>bad gateway</html>") == "<html>bad gateway</html>"
    token = b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
    event = b'data: {"error":{"message":"replica died","code":"upstream_error"}}\n\n'
    assert stream_error(token + event + b"data: [DONE]\n\n") == (502, "replica died")
    timeout = b'data: {"error": {"message": "too slow", "code": "upstream_timeout"}}\n\n'
    assert stream_error(timeout) == (504, "too slow")
