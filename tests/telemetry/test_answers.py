"""Reading tokens and errors out of OpenAI answers' bytes."""

from __future__ import annotations

from modelplane.telemetry.answers import completion_tokens, error_message, stream_error


def test_token_counting_from_bytes() -> None:
    assert completion_tokens(b'{"usage":{"prompt_tokens":9,"completion_tokens":42}}') == 42
    assert completion_tokens(b'{"usage": {"completion_tokens": 7, "total_tokens": 9}}') == 7
    assert completion_tokens(b'{"choices":[]}') == 0


def test_error_messages_and_stream_error_events() -> None:
    assert error_message(b'{"error":{"message":"no such model","code":"x"}}') == "no such model"
    assert error_message(b'{"error":"plain"}') == "plain"
    assert error_message(b"<html>bad gateway</html>") == "<html>bad gateway</html>"
    token = b'data: {"choices":[{"delta":{"content":"Hi"}}]}\n\n'
    event = b'data: {"error":{"message":"replica died","code":"upstream_error"}}\n\n'
    assert stream_error(token + event + b"data: [DONE]\n\n") == (502, "replica died")
    timeout = b'data: {"error": {"message": "too slow", "code": "upstream_timeout"}}\n\n'
    assert stream_error(timeout) == (504, "too slow")
