"""Reading tokens and errors out of OpenAI answers' bytes: the one reader that both the
usage records and the metrics are made from."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from modelplane.telemetry.answers import (
    Answer,
    AnswerStream,
    answer_text,
    answer_text_tokens,
    error_message,
    parse_usage,
    read_answer,
    stream_error,
    stream_status,
    stream_text,
    text_frames,
)
from tests.gateway.fakes import chunk, usage_chunk


def test_token_counting_from_bytes() -> None:
    assert parse_usage(b'{"usage":{"prompt_tokens":9,"completion_tokens":42}}') == (9, 42)
    assert parse_usage(b'{"usage": {"completion_tokens": 7, "total_tokens": 9}}') == (0, 7)
    assert parse_usage(b'{"choices":[]}') is None
    assert parse_usage(b'{"usage":{"prompt_tokens": 9,"completion_tokens":42}}') == (9, 42)
    assert parse_usage(b'{"usage":{"prompt_tokens":"x"}}') is None
    # A whole answer without usage: estimated from the request's and the answer's size.
    body = json.dumps({"choices": [{"message": {"content": "x" * 40}}]}).encode()
    assert read_answer(200, body, 80, "ep") == Answer(200, 20, 10, True, "ep")
    assert read_answer(400, b'{"error":{"message":"no"}}', 80).failed


def test_usage_is_found_in_bodies_and_stream_tails() -> None:
    body = json.dumps(
        {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5, "x": 1}}
    ).encode()
    assert parse_usage(body) == (12, 5)
    tail = (
        chunk("m", "hi") + chunk("m", None, "stop") + usage_chunk("m", 7, 9) + b"data: [DONE]\n\n"
    )
    assert parse_usage(tail) == (7, 9)
    # Chunks that say "usage": null (include_usage, before the last one) are skipped.
    nulls = b'data: {"choices":[{"delta":{"content":"x"}}],"usage":null}\n\n'
    assert parse_usage(usage_chunk("m", 1, 2) + nulls) == (1, 2)
    assert parse_usage(nulls) is None
    # Generated text that mentions usage is text, not usage.
    quoted = b'{"choices":[{"message":{"content":"\\"usage\\": {\\"prompt_tokens\\": 1}"}}]}'
    assert parse_usage(quoted) is None
    # Embeddings count only prompt tokens; Anthropic-style names work too.
    assert parse_usage(b'{"usage": {"prompt_tokens": 4, "total_tokens": 4}}') == (4, 0)
    assert parse_usage(b'{"usage": {"input_tokens": 3, "output_tokens": 2}}') == (3, 2)
    assert parse_usage(b"not json at all") is None


def test_estimates_without_usage() -> None:
    stream = chunk("m", "a") + chunk("m", "") + chunk("m", "b") + chunk("m", None, "stop")
    assert text_frames(stream) == 2
    assert text_frames(b'data: {"choices":[{"text": "x"}]}\n\n') == 1
    body = json.dumps({"choices": [{"message": {"content": "x" * 40}}]}).encode()
    assert answer_text_tokens(body) == 10
    assert stream_status(chunk("m", "a") + b"data: [DONE]\n\n") == 200
    broken = chunk("m", "a") + b'data: {"error": {"message": "x", "code": "upstream_error"}}\n\n'
    assert stream_status(broken) == 502
    late = b'data: {"error": {"message": "x", "code": "upstream_timeout"}}\n\n'
    assert stream_status(late) == 504
    # A client that hangs up after [DONE] got everything; one that hangs up before, not.
    assert stream_status(chunk("m", "a") + b"data: [DONE]\n\n", left=True) == 200
    assert stream_status(chunk("m", "a"), left=True) == 499


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

    def done(a: Answer) -> None:
        ended.append((a.completion, a.prompt))

    watched = AnswerStream(upstream(), 0, lambda: 0.0, done)
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
