"""Log lines never carry credentials, whoever wrote them."""

from __future__ import annotations

import json
import logging

from modelplane.telemetry.logging import JsonFormatter, redact


def test_bearer_tokens_and_keys_are_redacted() -> None:
    line = (
        "headers={'Authorization': 'Bearer mp-abcdefghijklmnopqrstuvwxyz0123'} "
        "x-api-key: sk-ant-test-0123456789abcdef api_key=AKIAIOSFODNN7EXAMPLE"
    )
    out = redact(line)
    assert "mp-abcdefghijklmnopqrstuvwxyz0123" not in out
    assert "sk-ant-test-0123456789abcdef" not in out
    assert "AKIAIOSFODNN7EXAMPLE" not in out
    assert out.count("[redacted]") == 3
    assert redact("the capital of France is Paris") == "the capital of France is Paris"


def test_json_lines_redact_messages_and_tracebacks() -> None:
    secret = "mp-" + "x" * 43
    try:
        raise ValueError(f"rejected {secret}")
    except ValueError:
        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "call with %s", (secret,), exc_info=True
        )
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert secret not in line
    assert json.loads(line)["msg"] == "call with [redacted]"
