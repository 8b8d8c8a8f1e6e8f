"""The Vertex AI (Gemini) provider against a fake aiplatform endpoint
(tests/providers/fakes.py)."""

from __future__ import annotations

import base64
import struct
import sys
from collections.abc import AsyncIterator

import pytest
from openai.types import CreateEmbeddingResponse

from modelplane.errors import ModelplaneError, UpstreamError
from modelplane.providers.base import Target
from modelplane.providers.vertex import VertexProvider, _base
from tests.providers.fakes import FakeVertex
from tests.providers.helpers import (
    TIMEOUTS,
    TRACEPARENT,
    WEATHER_TOOL,
    body_of,
    completion,
    error,
    make_call,
    read_stream,
)

MODEL = "gemini-2.5-flash"
PREFIX = f"/v1/projects/acme-ml/locations/europe-west4/publishers/google/models/{MODEL}"


@pytest.fixture
async def provider() -> AsyncIterator[VertexProvider]:
    fresh = VertexProvider()  # one per test: it caches default credentials
    yield fresh
    await fresh.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeVertex]:
    server = FakeVertex()
    await server.start()
    yield server
    await server.close()


def target(fake: FakeVertex, token: str = FakeVertex.TOKEN, **options: object) -> Target:
    opts = {"project": "acme-ml", "region": "europe-west4", **options}
    return Target(fake.url, opts, {"access_token": token} if token else {})


def question(**extra: object) -> dict[str, object]:
    return {
        "model": "gemini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        **extra,
    }


async def test_request_is_translated_to_generate_content(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    call = {"id": "call_1", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": '{"city": "Paris"}'}  # type: ignore[assignment]
    body = {
        "model": "gemini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AA="}},
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18}'},
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "max_tokens": 200,
        "temperature": 0.3,
        "top_p": 0.8,
        "stop": ["END"],
        "response_format": {"type": "json_object"},
    }
    reply = await provider.send(target(fake), make_call(body, MODEL), timeouts=TIMEOUTS)
    assert reply.status == 200
    sent = fake.last
    assert sent.raw_path == PREFIX + ":generateContent"
    assert sent.headers["authorization"] == f"Bearer {FakeVertex.TOKEN}"
    assert sent.headers["traceparent"] == TRACEPARENT
    assert sent.json == {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "Weather?"},
                    {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AA="}},
                ],
            },
            {
                "role": "model",
                "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
            },
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 18}}}],
            },
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {
            "maxOutputTokens": 200,
            "temperature": 0.3,
            "topP": 0.8,
            "stopSequences": ["END"],
            "responseMimeType": "application/json",
        },
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "description": "Current weather in a city",
                        "parametersJsonSchema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
                    }
                ]
            }
        ],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
    }


async def test_named_tool_choice_and_json_schema(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    body = question(
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    )
    await provider.send(target(fake), make_call(body, MODEL), timeouts=TIMEOUTS)
    sent = fake.last.json
    assert sent["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }
    assert sent["generationConfig"]["responseJsonSchema"] == schema


async def test_text_answer(fake: FakeVertex, provider: VertexProvider) -> None:
    reply = await provider.send(target(fake), make_call(question(), MODEL), timeouts=TIMEOUTS)
    answer = completion(reply)
    assert answer.model == "gemini"
    assert answer.choices[0].message.content == "Paris is the capital of France."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    # thinking tokens are output tokens, as OpenAI's reasoning tokens are
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (12, 11)


async def test_function_call_keeps_its_signature_for_the_next_turn(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    fake.scenario = "tool"
    reply = await provider.send(target(fake), make_call(question(), MODEL), timeouts=TIMEOUTS)
    choice = completion(reply).choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')
    assert call.id.startswith("call_")
    follow_up = question()
    follow_up["messages"] = [  # the client sends the call back, as chat clients do
        *follow_up["messages"],  # type: ignore[misc]
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "18 C"},
    ]
    fake.scenario = "ok"
    await provider.send(target(fake), make_call(follow_up, MODEL), timeouts=TIMEOUTS)
    model_turn, result_turn = fake.last.json["contents"][1:]
    assert model_turn["parts"] == [
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
            "thoughtSignature": "CiQBVKhc7g==",
        }
    ]
    assert result_turn["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"content": "18 C"}}}
    ]


async def test_stream_with_crlf_events_and_usage(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    body = question(stream=True, stream_options={"include_usage": True})
    reply = await provider.send(target(fake), make_call(body, MODEL), timeouts=TIMEOUTS)
    streamed = await read_stream(reply)
    assert fake.last.raw_path == PREFIX + ":streamGenerateContent?alt=sse"
    assert streamed.text == "Paris is the capital of France."
    assert streamed.finish == "stop"
    assert streamed.usage == {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}
    assert streamed.done


async def test_streamed_function_call(fake: FakeVertex, provider: VertexProvider) -> None:
    fake.scenario = "tool"
    body = question(stream=True, tools=[WEATHER_TOOL])
    reply = await provider.send(target(fake), make_call(body, MODEL), timeouts=TIMEOUTS)
    streamed = await read_stream(reply)
    (call,) = streamed.tool_calls
    assert (call["name"], call["arguments"]) == ("get_weather", '{"city": "Paris"}')
    assert call["id"].startswith("call_")
    assert streamed.finish == "tool_calls"  # Gemini says STOP; OpenAI clients expect this
    assert streamed.done


@pytest.mark.parametrize("scenario", ["safety", "blocked"])
async def test_safety_stops_are_content_filter(
    fake: FakeVertex, provider: VertexProvider, scenario: str
) -> None:
    fake.scenario = scenario
    reply = await provider.send(target(fake), make_call(question(), MODEL), timeouts=TIMEOUTS)
    choice = completion(reply).choices[0]
    assert choice.finish_reason == "content_filter"
    assert choice.message.content == ""


@pytest.mark.parametrize(
    ("scenario", "token", "status", "code"),
    [
        ("exhausted", FakeVertex.TOKEN, 429, "rate_limit_exceeded"),
        ("too_long", FakeVertex.TOKEN, 400, "context_length_exceeded"),
        ("unavailable", FakeVertex.TOKEN, 503, "upstream_error"),
        ("ok", "ya29.expired", 401, "invalid_api_key"),
    ],
)
async def test_google_errors_become_openai_envelopes(
    fake: FakeVertex,
    provider: VertexProvider,
    scenario: str,
    token: str,
    status: int,
    code: str,
) -> None:
    fake.scenario = scenario
    body = question(stream=True)
    reply = await provider.send(target(fake, token), make_call(body, MODEL), timeouts=TIMEOUTS)
    assert reply.status == status
    assert error(reply)["code"] == code
    assert token.encode() not in (reply.body or b"")


async def test_stream_error_before_any_text_is_an_error_reply(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    fake.scenario = "error_first"
    reply = await provider.send(target(fake), make_call(question(stream=True)), timeouts=TIMEOUTS)
    assert reply.status == 429
    assert error(reply)["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("encoding", ["float", "base64"])
async def test_embeddings_through_predict(
    fake: FakeVertex, provider: VertexProvider, encoding: str
) -> None:
    body = {
        "model": "embed",
        "input": ["hello", "world"],
        "dimensions": 3,
        "encoding_format": encoding,
    }
    call = make_call(body, "text-embedding-005", kind="embeddings")
    reply = await provider.send(target(fake), call, timeouts=TIMEOUTS)
    assert fake.last.raw_path.endswith("/models/text-embedding-005:predict")
    assert fake.last.json == {
        "instances": [{"content": "hello"}, {"content": "world"}],
        "parameters": {"outputDimensionality": 3},
    }
    obj = body_of(reply)
    if encoding == "base64":  # little-endian float32, which the openai SDK decodes
        for item in obj["data"]:
            raw = base64.b64decode(item["embedding"])
            item["embedding"] = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    result = CreateEmbeddingResponse.model_validate(obj)
    assert [d.embedding for d in result.data] == [[0.25, -0.5, 1.0], [0.125, 0.0, -1.5]]
    assert result.usage.prompt_tokens == 7
    assert result.model == "embed"


async def test_without_a_token_or_google_auth_says_what_to_install(
    fake: FakeVertex, provider: VertexProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "google.auth", None)
    with pytest.raises(ModelplaneError, match=r"pip install 'modelplane\[vertex\]'"):
        await provider.send(target(fake, token=""), make_call(question(), MODEL), timeouts=TIMEOUTS)
    assert fake.received == []


async def test_missing_project_is_a_clear_error(fake: FakeVertex, provider: VertexProvider) -> None:
    where = Target(fake.url, {"region": "europe-west4"}, {"access_token": FakeVertex.TOKEN})
    with pytest.raises(ModelplaneError, match="option 'project'"):
        await provider.send(where, make_call(question(), MODEL), timeouts=TIMEOUTS)


async def test_models_is_empty(fake: FakeVertex, provider: VertexProvider) -> None:
    assert await provider.models(target(fake), timeouts=TIMEOUTS) == []


async def test_health_gets_the_path_with_the_token(
    fake: FakeVertex, provider: VertexProvider
) -> None:
    assert VertexProvider.health_path is None  # no default: a check names its path
    await provider.health(target(fake, health_check={"path": "/v1/ping"}), timeouts=TIMEOUTS)
    assert (fake.last.method, fake.last.raw_path) == ("GET", "/v1/ping")
    with pytest.raises(UpstreamError) as err:
        await provider.health(
            target(fake, "wrong-token", health_check={"path": "/v1/ping"}), timeouts=TIMEOUTS
        )
    assert err.value.message == "GET /v1/ping answered HTTP 401"


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ("europe-west4", "https://europe-west4-aiplatform.googleapis.com"),
        ("global", "https://aiplatform.googleapis.com"),
    ],
)
def test_default_endpoint_per_region(region: str, expected: str) -> None:
    assert _base(Target(""), region) == expected
