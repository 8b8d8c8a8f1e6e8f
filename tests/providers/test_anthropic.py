"""The Anthropic provider against a fake Messages API (tests/providers/fakes.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from modelplane.errors import UpstreamError
from modelplane.providers.anthropic import AnthropicProvider
from modelplane.providers.base import Target
from modelplane.providers.registry import get
from tests.providers.fakes import FakeAnthropic
from tests.providers.helpers import (
    TIMEOUTS,
    TRACEPARENT,
    WEATHER_TOOL,
    completion,
    error,
    make_call,
    read_stream,
)

PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
PROVIDER = AnthropicProvider()


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    server = FakeAnthropic()
    await server.start()
    yield server
    await server.close()


def target(fake: FakeAnthropic, key: str = FakeAnthropic.API_KEY, **options: object) -> Target:
    return Target(fake.url, options, {"api_key": key})


def question(**extra: object) -> dict[str, object]:
    return {
        "model": "claude",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        **extra,
    }


def test_registered_under_its_name() -> None:
    assert isinstance(get("anthropic"), AnthropicProvider)
    assert AnthropicProvider.kinds == {"chat"}


async def test_request_is_translated_to_the_messages_api(fake: FakeAnthropic) -> None:
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather where this photo was taken?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18 C, sunny"},
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "user": "user-7",
    }
    reply = await PROVIDER.send(
        target(fake, anthropic_version="2024-01-01"),
        make_call(body, "claude-sonnet-4"),
        timeouts=TIMEOUTS,
    )
    assert reply.status == 200
    sent = fake.last
    assert sent.raw_path == "/v1/messages"
    assert sent.headers["x-api-key"] == FakeAnthropic.API_KEY
    assert sent.headers["anthropic-version"] == "2024-01-01"
    assert sent.headers["traceparent"] == TRACEPARENT
    assert "authorization" not in sent.headers
    assert sent.json == {
        "model": "claude-sonnet-4",
        "max_tokens": 4096,
        "system": "Be brief.\n\nUse metric units.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather where this photo was taken?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C, sunny"}
                ],
            },
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-7"},
        "tools": [
            {
                "name": "get_weather",
                "description": "Current weather in a city",
                "input_schema": WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
            }
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    }


@pytest.mark.parametrize(
    ("extra", "options", "expected"),
    [
        ({}, {"max_tokens": 1024}, 1024),
        ({"max_tokens": 50}, {"max_tokens": 1024}, 50),
        ({"max_completion_tokens": 70}, {}, 70),
    ],
)
async def test_max_tokens_comes_from_the_request_then_the_option(
    fake: FakeAnthropic,
    extra: dict[str, int],
    options: dict[str, int],
    expected: int,
) -> None:
    await PROVIDER.send(target(fake, **options), make_call(question(**extra)), timeouts=TIMEOUTS)
    assert fake.last.json["max_tokens"] == expected


async def test_named_tool_choice(fake: FakeAnthropic) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    body = question(tools=[WEATHER_TOOL], tool_choice=choice)
    await PROVIDER.send(target(fake), make_call(body), timeouts=TIMEOUTS)
    assert fake.last.json["tool_choice"] == {"type": "tool", "name": "get_weather"}


async def test_text_answer(fake: FakeAnthropic) -> None:
    reply = await PROVIDER.send(
        target(fake), make_call(question(), "claude-sonnet-4"), timeouts=TIMEOUTS
    )
    answer = completion(reply)
    assert answer.object == "chat.completion"
    assert answer.model == "claude"  # the name the client asked for
    assert answer.id == "chatcmpl-req-42"
    assert answer.choices[0].message.content == "Paris is the capital of France."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    # cached prompt tokens count as prompt tokens, as OpenAI counts them
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (25, 9)
    assert answer.usage.total_tokens == 34


async def test_tool_call_answer(fake: FakeAnthropic) -> None:
    fake.scenario = "tool"
    reply = await PROVIDER.send(
        target(fake), make_call(question(tools=[WEATHER_TOOL])), timeouts=TIMEOUTS
    )
    choice = completion(reply).choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I'll look that up."
    (call,) = choice.message.tool_calls or []
    assert call.id == "toolu_01A09q90qw90lq917835lq9"
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "Paris", "unit": "celsius"}'


async def test_streamed_text_with_usage(fake: FakeAnthropic) -> None:
    body = question(stream=True, stream_options={"include_usage": True})
    streamed = await read_stream(
        await PROVIDER.send(target(fake), make_call(body), timeouts=TIMEOUTS)
    )
    assert fake.last.json["stream"] is True
    assert streamed.chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert streamed.text == "Paris is the capital of France."
    assert streamed.finish == "stop"
    assert streamed.usage == {"prompt_tokens": 25, "completion_tokens": 9, "total_tokens": 34}
    assert streamed.done and streamed.error is None
    assert {c["model"] for c in streamed.chunks} == {"claude"}


async def test_streamed_tool_call_deltas(fake: FakeAnthropic) -> None:
    fake.scenario = "tool"
    body = question(stream=True, tools=[WEATHER_TOOL])
    streamed = await read_stream(
        await PROVIDER.send(target(fake), make_call(body), timeouts=TIMEOUTS)
    )
    assert streamed.text == "I'll look that up."
    assert streamed.tool_calls == [
        {
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "get_weather",
            "arguments": '{"city": "Paris", "unit": "celsius"}',
        }
    ]
    first = next(c for c in streamed.chunks if c["choices"][0]["delta"].get("tool_calls"))
    assert first["choices"][0]["delta"]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": "",
    }
    assert streamed.finish == "tool_calls"
    assert streamed.usage is None  # not asked for
    assert streamed.done


@pytest.mark.parametrize(
    ("scenario", "status", "code"),
    [
        ("rate_limited", 429, "rate_limit_exceeded"),
        ("overloaded", 503, "overloaded"),
        ("too_long", 400, "context_length_exceeded"),
    ],
)
async def test_upstream_errors_become_openai_envelopes(
    fake: FakeAnthropic, scenario: str, status: int, code: str
) -> None:
    fake.scenario = scenario
    reply = await PROVIDER.send(target(fake), make_call(question(stream=True)), timeouts=TIMEOUTS)
    assert reply.status == status
    assert error(reply)["code"] == code
    if scenario == "rate_limited":
        assert reply.headers == {"retry-after": "17"}


async def test_bad_key_is_an_authentication_error_without_the_key(fake: FakeAnthropic) -> None:
    reply = await PROVIDER.send(
        target(fake, key="sk-ant-wrong"), make_call(question()), timeouts=TIMEOUTS
    )
    assert reply.status == 401
    err = error(reply)
    assert (err["type"], err["code"]) == ("authentication_error", "invalid_api_key")
    assert b"sk-ant-wrong" not in (reply.body or b"")
    assert "sk-ant-wrong" not in repr(target(fake, key="sk-ant-wrong"))


async def test_error_event_in_the_stream_ends_it(fake: FakeAnthropic) -> None:
    fake.scenario = "stream_error"
    streamed = await read_stream(
        await PROVIDER.send(target(fake), make_call(question(stream=True)), timeouts=TIMEOUTS)
    )
    assert streamed.text == "Paris is the"
    assert streamed.error is not None and streamed.error["message"] == "Overloaded"
    assert streamed.error["code"] == "overloaded"
    assert not streamed.done


async def test_error_event_before_any_text_is_an_error_reply(fake: FakeAnthropic) -> None:
    fake.scenario = "error_first"  # 200, then an error event: the gateway can still fall back
    reply = await PROVIDER.send(target(fake), make_call(question(stream=True)), timeouts=TIMEOUTS)
    assert reply.status == 503
    assert error(reply)["code"] == "overloaded"


async def test_stream_that_stops_early_ends_with_an_error(fake: FakeAnthropic) -> None:
    fake.scenario = "stream_ends_early"
    streamed = await read_stream(
        await PROVIDER.send(target(fake), make_call(question(stream=True)), timeouts=TIMEOUTS)
    )
    assert streamed.error is not None and "ended the answer early" in streamed.error["message"]
    assert not streamed.done


async def test_untranslatable_request_is_a_400_without_calling_upstream(
    fake: FakeAnthropic,
) -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    body = {"model": "claude", "messages": [{"role": "user", "content": [audio]}]}
    reply = await PROVIDER.send(target(fake), make_call(body), timeouts=TIMEOUTS)
    assert reply.status == 400
    assert "input_audio" in error(reply)["message"]
    assert fake.received == []


async def test_models_follow_pages(fake: FakeAnthropic) -> None:
    names = await PROVIDER.models(target(fake), timeouts=TIMEOUTS)
    assert names == ["claude-sonnet-4-20250514", "claude-3-5-haiku-20241022"]
    assert fake.received[1].query["after_id"] == "claude-sonnet-4-20250514"


async def test_health_lists_one_model_with_the_key(fake: FakeAnthropic) -> None:
    await PROVIDER.health(target(fake), timeouts=TIMEOUTS)
    assert (fake.last.method, fake.last.raw_path) == ("GET", "/v1/models?limit=1")
    assert fake.last.headers["x-api-key"] == FakeAnthropic.API_KEY


async def test_health_with_a_wrong_key_fails_without_the_key(fake: FakeAnthropic) -> None:
    wrong = "sk-ant-wrong-0123456789"
    with pytest.raises(UpstreamError) as err:
        await PROVIDER.health(target(fake, wrong), timeouts=TIMEOUTS)
    assert err.value.message == "GET /v1/models answered HTTP 401"
    assert wrong not in str(err.value)
