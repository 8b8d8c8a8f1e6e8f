"""The OpenAI-compatible surface of the server, driven by the official openai SDK."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.helpers import ADMIN_KEY, LONG, Server, eventually


def test_chat_completion_answers_sensibly_with_correct_usage(shared_server: Server) -> None:
    client = shared_server.openai()
    r = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=40,
    )
    text = r.choices[0].message.content or ""
    assert "Paris" in text
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.model == "smollm2"
    assert r.usage is not None
    assert r.usage.prompt_tokens > 5
    assert 0 < r.usage.completion_tokens <= 40
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streamed_chat_completion_has_text_and_usage_in_last_chunk(
    shared_server: Server,
) -> None:
    client = shared_server.openai()
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "What is the capital of Japan?"}],
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Tokyo" in text
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 3, "the answer should arrive in pieces, not at once"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    # Each content chunk carries one token here; usage must agree with what was sent.
    assert last.usage.completion_tokens >= len(content_chunks)
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] in ("stop", "length")


def test_stream_usage_matches_non_stream_usage(shared_server: Server) -> None:
    client = shared_server.openai()
    kw = {
        "model": "smollm2",
        "max_tokens": 12,
        "temperature": 0,
        "seed": 1,
        "messages": [{"role": "user", "content": "Name three primary colors."}],
    }
    whole = client.chat.completions.create(**kw)  # type: ignore[call-overload]
    chunks = list(
        client.chat.completions.create(  # type: ignore[call-overload]
            **kw, stream=True, stream_options={"include_usage": True}
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_completions_endpoint(shared_server: Server) -> None:
    client = shared_server.openai()
    r = client.completions.create(
        model="smollm2", prompt="One, two, three,", max_tokens=5, temperature=0
    )
    assert r.choices[0].text
    assert r.usage is not None and r.usage.completion_tokens == 5
    assert r.choices[0].finish_reason == "length"


def test_models_lists_endpoints(shared_server: Server) -> None:
    ids = [m.id for m in shared_server.openai().models.list()]
    assert "smollm2" in ids


@pytest.mark.parametrize("key", [None, "mp-wrong", "not-even-a-key"])
def test_missing_or_wrong_key_is_401(shared_server: Server, key: str | None) -> None:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    resp = httpx.post(
        shared_server.base_url + "/v1/chat/completions",
        headers=headers,
        json={"model": "smollm2", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert resp.status_code == 401
    err = resp.json()["error"]
    assert err["type"] == "authentication_error"
    if key:
        assert key not in resp.text, "a key must never be echoed back"


def test_wrong_key_through_sdk_raises_authentication_error(shared_server: Server) -> None:
    with pytest.raises(openai.AuthenticationError):
        shared_server.openai(key="mp-nope").models.list()


def test_unknown_model_is_404_model_not_found(shared_server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        shared_server.openai().chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
    body = info.value.body
    assert isinstance(body, dict)
    assert body["code"] == "model_not_found"
    assert body["param"] == "model"
    assert "no-such-model" in body["message"]


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 2}, "n"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ],
)
def test_invalid_parameters_are_400_naming_the_parameter(
    shared_server: Server, params: dict[str, object], param: str
) -> None:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], **params}
    with pytest.raises(openai.BadRequestError) as info:
        shared_server.openai().chat.completions.create(**body)  # type: ignore[call-overload]
    err = info.value.body
    assert isinstance(err, dict)
    assert err["param"] == param
    assert param.split("[")[0] in err["message"]


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"{not json", None),
        (b"[]", None),
        (b'{"messages": []}', "model"),
        (b'{"model": 3}', "model"),
        (b'{"model": "smollm2", "stream": "yes"}', "stream"),
    ],
)
def test_malformed_bodies_are_400(shared_server: Server, raw: bytes, param: str | None) -> None:
    resp = shared_server.http.post(
        "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == param


def test_oversized_body_is_413(shared_server: Server) -> None:
    huge = "x" * (5 * 1024 * 1024)
    with pytest.raises(openai.APIStatusError) as info:
        shared_server.openai().chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": huge}]
        )
    assert info.value.status_code == 413
    assert isinstance(info.value.body, dict)
    assert info.value.body["code"] == "payload_too_large"


def test_oversized_chunked_body_is_413(shared_server: Server) -> None:
    def body() -> object:
        for _ in range(6):
            yield b"x" * (1024 * 1024)

    resp = shared_server.http.post(
        "/v1/chat/completions",
        content=body(),  # type: ignore[arg-type]
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"


def test_every_response_carries_a_request_id(shared_server: Server) -> None:
    ok = shared_server.http.get("/v1/models")
    bad = httpx.get(shared_server.base_url + "/v1/models")
    assert ok.headers["x-request-id"] and bad.headers["x-request-id"]
    assert ok.headers["x-request-id"] != bad.headers["x-request-id"]
    mine = shared_server.http.get("/v1/models", headers={"x-request-id": "abc-123"})
    assert mine.headers["x-request-id"] == "abc-123"
    corr = shared_server.http.get("/v1/models", headers={"x-correlation-id": "corr-9"})
    assert corr.headers["x-request-id"] == "corr-9"
    # The OpenAI POST routes (served outside FastAPI) too: answers and every error.
    url = "/v1/chat/completions"
    ok_body = {"model": "smollm2", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    answered = shared_server.http.post(url, json=ok_body, headers={"x-request-id": "rq-1"})
    assert answered.status_code == 200 and answered.headers["x-request-id"] == "rq-1"
    errors = {
        400: shared_server.http.post(url, content=b"{", headers={"x-request-id": "rq-2"}),
        401: httpx.post(shared_server.base_url + url, json=ok_body),
        405: shared_server.http.get(url),
        413: shared_server.http.post(url, content=b"x" * (5 * 1024 * 1024)),
    }
    for status, resp in errors.items():
        assert resp.status_code == status and resp.headers["x-request-id"], status
    assert errors[400].headers["x-request-id"] == "rq-2"
    # With both headers, x-request-id wins wherever it comes, on every kind of route.
    both = {"x-correlation-id": "corr-1", "x-request-id": "rq-3"}
    listed = shared_server.http.get("/v1/models", headers=both)
    posted = shared_server.http.post(url, content=b"{", headers=both)
    assert listed.headers["x-request-id"] == posted.headers["x-request-id"] == "rq-3"


def test_json_object_response_format_gives_json(shared_server: Server) -> None:
    import json

    r = shared_server.openai().chat.completions.create(
        model="smollm2",
        max_tokens=60,
        temperature=0,
        response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Give the capital of France as JSON."}],
    )
    text = r.choices[0].message.content or ""
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    else:
        assert text.lstrip().startswith("{")


def test_no_ready_replica_is_503_with_retry_after(shared_server: Server) -> None:
    resp = shared_server.http.post(
        "/api/endpoints", json={"name": "sleeping", "model": "smollm2", "replicas": 0}
    )
    assert resp.status_code == 201
    try:
        r = shared_server.http.post(
            "/v1/chat/completions",
            json={"model": "sleeping", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 503
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "no_ready_replica"
        assert "scaled to 0" in r.json()["error"]["message"]
    finally:
        shared_server.http.delete("/api/endpoints/sleeping")


def test_admin_key_is_not_accepted_in_other_schemes(shared_server: Server) -> None:
    resp = httpx.get(
        shared_server.base_url + "/v1/models", headers={"authorization": f"Basic {ADMIN_KEY}"}
    )
    assert resp.status_code == 401


def _replica_health(server: Server) -> dict[str, int]:
    url = server.endpoint("smollm2")["replica_status"][0]["url"]
    data: dict[str, int] = httpx.get(url + "/health").json()
    return data


def test_client_disconnect_through_the_gateway_stops_generation(shared_server: Server) -> None:
    body = {"model": "smollm2", **LONG, "stream": True}
    with shared_server.http.stream("POST", "/v1/completions", json=body) as resp:
        lines = resp.iter_lines()
        for _ in range(3):
            next(lines)
        assert _replica_health(shared_server)["active"] == 1
    eventually(
        lambda: _replica_health(shared_server)["active"] == 0,
        timeout=5,
        what="the replica to stop generating for a departed client",
    )

    with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=1.0) as http:
        http.post(
            shared_server.base_url + "/v1/completions",
            json={**body, "stream": False},
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
        )
    eventually(
        lambda: _replica_health(shared_server)["active"] == 0,
        timeout=5,
        what="the replica to stop a non-streaming generation",
    )
