"""``gateway.inbound.peek``: what the gateway reads from a body it forwards untouched."""

from __future__ import annotations

import pytest

from modelplane.errors import InvalidRequest
from modelplane.gateway.inbound import peek


def test_model_stream_and_the_body_are_read() -> None:
    got = peek(
        b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "h\\u00e9"}]}'
    )
    assert (got.model, got.stream) == ("m", True)
    assert got.body["messages"][0]["content"] == "hé"
    assert peek(b'{"model": "m"}').stream is False


def test_what_only_the_standard_library_reads_is_still_accepted() -> None:
    got = peek(b'{"model": "m", "temperature": NaN, "top_p": Infinity}')
    assert got.model == "m"
    assert got.body["top_p"] == float("inf")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"messages": []}', "'model' is required"),
        (b'{"model": ""}', "'model' is required"),
        (b'{"model": "m", "stream": "yes"}', "'stream' must be a boolean"),
    ],
)
def test_bad_bodies_get_a_clear_400(body: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        peek(body)
    assert message in err.value.message
