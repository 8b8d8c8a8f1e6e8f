"""Log lines never carry credentials, whoever wrote them."""

from __future__ import annotations

import json
import logging

from modelplane.telemetry.logging import ConsoleFormatter, JsonFormatter, redact


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


def test_structured_fields_become_keys_or_pairs() -> None:
    fields = {
        "request_id": "r1",
        "status": 200,
        "team": None,
        "model": "a b",
        "key": "mp-" + "y" * 40,
    }
    record = logging.LogRecord("modelplane.access", logging.INFO, __file__, 1, "done", (), None)
    record.fields = fields
    line = json.loads(JsonFormatter().format(record))
    assert line["status"] == 200 and line["team"] is None and line["request_id"] == "r1"
    assert line["key"] == "[redacted]"
    console = ConsoleFormatter().format(record)
    assert console.endswith('done status=200 model="a b" key=[redacted]')


def test_json_lines_stay_json_whatever_the_fields_hold() -> None:
    """A line a log shipper cannot parse is a lost line: NaN becomes null, and what the
    fast encoder refuses (an integer past 64 bits, a key that is not a string) or does
    not know (any other object) is still written."""
    record = logging.LogRecord("modelplane.access", logging.INFO, __file__, 1, "done", (), None)
    record.fields = {"ratio": float("nan"), "count": 7, 3: "three", "when": object()}

    def strict(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    line = json.loads(JsonFormatter().format(record), parse_constant=strict)
    assert line["ratio"] is None and line["count"] == 7 and line["3"] == "three"
    assert line["when"].startswith("<object object")
    # Past 64 bits the line is written by ``json``, which must not write NaN either.
    record.fields = {"big": 2**70, "ratio": float("nan"), "spread": [1.5, float("-inf")]}
    line = json.loads(JsonFormatter().format(record), parse_constant=strict)
    assert line == {**line, "big": 2**70, "ratio": None, "spread": [1.5, None]}


def test_json_timestamps_follow_each_record_across_seconds() -> None:
    formatter = JsonFormatter()
    stamps = []
    for created in (1_700_000_000.5, 1_700_000_000.75, 1_700_000_001.125, 1_700_000_000.25):
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "m", (), None)
        record.created, record.msecs = created, (created % 1) * 1000
        stamps.append(json.loads(formatter.format(record))["ts"])
    assert stamps == [
        "2023-11-14T22:13:20.500Z",
        "2023-11-14T22:13:20.750Z",
        "2023-11-14T22:13:21.125Z",
        "2023-11-14T22:13:20.250Z",
    ]
