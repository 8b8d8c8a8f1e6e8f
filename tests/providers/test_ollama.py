"""The Ollama provider against a fake Ollama server (tests/providers/fakes.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from openai.types import Completion, CreateEmbeddingResponse

from modelplane.errors import UpstreamError
from modelplane.providers.base import Target
from modelplane.providers.ollama import OllamaProvider
from modelplane.providers.registry import get
from tests.providers.fakes import OLLAMA_PULL, FakeOllama
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

PROVIDER = OllamaProvider()


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    server = FakeOllama()
    await server.start()
    yield server
    await server.close()


def target(fake: FakeOllama, **options: object) -> Target:
    return Target(fake.url, options)


def question(**extra: object) -> dict[str, object]:
    return {
        "model": "llama",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        **extra,
    }


def test_registered_under_its_name() -> None:
    assert isinstance(get("ollama"), OllamaProvider)
    assert OllamaProvider.default_base_url == "http://127.0.0.1:11434"


async def test_chat_request_is_translated(fake: FakeOllama) -> None:
    call = {"id": "call_1", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": '{"city": "Paris"}'}  # type: ignore[assignment]
    body = {
        "model": "llama",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                ],
            },
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
        ],
        "tools": [WEATHER_TOOL],
        "temperature": 0.1,
        "top_p": 0.5,
        "max_tokens": 64,
        "stop": "END",
        "seed": 7,
        "response_format": {"type": "json_object"},
    }
    where = target(fake, keep_alive="10m", options={"num_ctx": 8192})
    reply = await PROVIDER.send(where, make_call(body, "llama3.2"), timeouts=TIMEOUTS)
    assert reply.status == 200
    sent = fake.last
    assert sent.raw_path == "/api/chat"
    assert sent.headers["traceparent"] == TRACEPARENT
    assert sent.json == {
        "model": "llama3.2",
        "stream": False,  # Ollama streams unless told not to
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather here?", "images": ["iVBORw0K"]},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                ],
            },
            {"role": "tool", "content": "18 C", "tool_name": "get_weather"},
        ],
        "tools": [WEATHER_TOOL],
        "format": "json",
        "options": {
            "num_ctx": 8192,
            "temperature": 0.1,
            "top_p": 0.5,
            "num_predict": 64,
            "stop": ["END"],
            "seed": 7,
        },
        "keep_alive": "10m",
    }


async def test_text_answer(fake: FakeOllama) -> None:
    reply = await PROVIDER.send(target(fake), make_call(question(), "llama3.2"), timeouts=TIMEOUTS)
    answer = completion(reply)
    assert answer.model == "llama"
    assert answer.choices[0].message.content == "Paris is the capital of France."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (26, 7)


async def test_tool_call_answer(fake: FakeOllama) -> None:
    fake.scenario = "tool"
    reply = await PROVIDER.send(
        target(fake), make_call(question(tools=[WEATHER_TOOL])), timeouts=TIMEOUTS
    )
    choice = completion(reply).choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')
    assert call.id.startswith("call_")


async def test_ndjson_stream_becomes_chunks(fake: FakeOllama) -> None:
    body = question(stream=True, stream_options={"include_usage": True})
    streamed = await read_stream(
        await PROVIDER.send(target(fake), make_call(body), timeouts=TIMEOUTS)
    )
    assert fake.last.json["stream"] is True
    assert streamed.text == "Paris is the capital of France."
    assert streamed.finish == "length"
    assert streamed.usage == {"prompt_tokens": 26, "completion_tokens": 7, "total_tokens": 33}
    assert streamed.done


async def test_streamed_tool_call(fake: FakeOllama) -> None:
    fake.scenario = "tool"
    body = question(stream=True, tools=[WEATHER_TOOL])
    streamed = await read_stream(
        await PROVIDER.send(target(fake), make_call(body), timeouts=TIMEOUTS)
    )
    (call,) = streamed.tool_calls
    assert (call["name"], call["arguments"]) == ("get_weather", '{"city": "Paris"}')
    assert streamed.finish == "tool_calls"
    assert streamed.done


async def test_tool_choice_none_leaves_tools_out(fake: FakeOllama) -> None:
    body = question(tools=[WEATHER_TOOL], tool_choice="none")
    await PROVIDER.send(target(fake), make_call(body), timeouts=TIMEOUTS)
    assert "tools" not in fake.last.json


async def test_missing_model_is_a_404(fake: FakeOllama) -> None:
    fake.scenario = "missing"
    reply = await PROVIDER.send(target(fake), make_call(question(), "nope"), timeouts=TIMEOUTS)
    assert reply.status == 404
    err = error(reply)
    assert err["message"] == "model 'nope' not found"
    assert err["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("scenario", "message"),
    [("stream_error", "unexpected EOF"), ("cut", "failed in the middle")],
)
async def test_broken_streams_end_with_an_error_event(
    fake: FakeOllama, scenario: str, message: str
) -> None:
    fake.scenario = scenario
    streamed = await read_stream(
        await PROVIDER.send(target(fake), make_call(question(stream=True)), timeouts=TIMEOUTS)
    )
    assert streamed.text == "Paris is"
    assert streamed.error is not None and message in streamed.error["message"]
    assert not streamed.done


async def test_error_before_any_text_is_an_error_reply(fake: FakeOllama) -> None:
    fake.scenario = "error_first"
    reply = await PROVIDER.send(target(fake), make_call(question(stream=True)), timeouts=TIMEOUTS)
    assert reply.status == 500
    assert "unexpected EOF" in error(reply)["message"]


async def test_embeddings(fake: FakeOllama) -> None:
    body = {"model": "embed", "input": ["a", "b"]}
    call = make_call(body, "nomic-embed-text", kind="embeddings")
    reply = await PROVIDER.send(target(fake), call, timeouts=TIMEOUTS)
    assert fake.last.raw_path == "/api/embed"
    assert fake.last.json == {"model": "nomic-embed-text", "input": ["a", "b"]}
    result = CreateEmbeddingResponse.model_validate(body_of(reply))
    assert [d.embedding for d in result.data] == [[0.5, -0.25], [1.0, 2.0]]
    assert [d.index for d in result.data] == [0, 1]
    assert result.usage.prompt_tokens == 8


async def test_embeddings_refuse_token_ids(fake: FakeOllama) -> None:
    call = make_call({"model": "embed", "input": [[1, 2, 3]]}, kind="embeddings")
    reply = await PROVIDER.send(target(fake), call, timeouts=TIMEOUTS)
    assert reply.status == 400
    assert fake.received == []


async def test_completions_continue_the_raw_prompt(fake: FakeOllama) -> None:
    body = {"model": "llama", "prompt": "1, 2, 3,", "max_tokens": 5, "stop": ["\n"]}
    reply = await PROVIDER.send(
        target(fake), make_call(body, "llama3.2", "completions"), timeouts=TIMEOUTS
    )
    assert fake.last.raw_path == "/api/generate"
    assert fake.last.json == {
        "model": "llama3.2",
        "prompt": "1, 2, 3,",
        "raw": True,
        "stream": False,
        "options": {"num_predict": 5, "stop": ["\n"]},
    }
    result = Completion.model_validate(body_of(reply))
    assert result.choices[0].text == " 4, 5, 6"
    assert result.choices[0].finish_reason == "length"
    assert result.usage is not None and result.usage.total_tokens == 33


async def test_streamed_completions(fake: FakeOllama) -> None:
    body = {"model": "llama", "prompt": "1, 2, 3,", "stream": True}
    reply = await PROVIDER.send(
        target(fake), make_call(body, "llama3.2", "completions"), timeouts=TIMEOUTS
    )
    streamed = await read_stream(reply, kind="completions")
    assert "".join(c["choices"][0]["text"] for c in streamed.chunks) == " 4, 5"
    assert streamed.chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert {c["object"] for c in streamed.chunks} == {"text_completion"}
    assert streamed.done


async def test_models_from_tags(fake: FakeOllama) -> None:
    assert await PROVIDER.models(target(fake), timeouts=TIMEOUTS) == [
        "llama3.2:latest",
        "nomic-embed-text:latest",
    ]


async def test_health_asks_for_the_version(fake: FakeOllama) -> None:
    await PROVIDER.health(target(fake), timeouts=TIMEOUTS)
    assert (fake.last.method, fake.last.raw_path) == ("GET", "/api/version")
    fake.scenario = "down"
    with pytest.raises(UpstreamError) as err:
        await PROVIDER.health(target(fake), timeouts=TIMEOUTS)
    assert err.value.message == "GET /api/version answered HTTP 503"


async def test_health_with_a_path(fake: FakeOllama) -> None:
    await PROVIDER.health(target(fake, health_check={"path": "/api/tags"}), timeouts=TIMEOUTS)
    assert fake.last.raw_path == "/api/tags"


async def test_pull_yields_progress(fake: FakeOllama) -> None:
    progress = [p async for p in PROVIDER.pull(target(fake), "llama3.2", timeouts=TIMEOUTS)]
    assert progress == OLLAMA_PULL
    assert fake.last.json == {"model": "llama3.2", "stream": True}


async def test_failed_pull_raises(fake: FakeOllama) -> None:
    fake.scenario = "pull_fails"
    with pytest.raises(UpstreamError, match="file does not exist"):
        async for _ in PROVIDER.pull(target(fake), "no-such-model", timeouts=TIMEOUTS):
            pass
