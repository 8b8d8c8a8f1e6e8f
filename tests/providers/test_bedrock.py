"""The Bedrock provider against a fake bedrock-runtime that checks SigV4 signatures and
streams real event-stream frames (tests/providers/fakes.py)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelplane.errors import ModelplaneError, UpstreamError
from modelplane.providers.base import Target
from modelplane.providers.bedrock import BedrockProvider
from tests.providers.fakes import FakeBedrock
from tests.providers.helpers import (
    TIMEOUTS,
    TRACEPARENT,
    WEATHER_TOOL,
    completion,
    error,
    make_call,
    read_stream,
)

MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"
CREDENTIALS = {
    "aws_access_key_id": FakeBedrock.ACCESS_KEY,
    "aws_secret_access_key": FakeBedrock.SECRET_KEY,
    "aws_session_token": FakeBedrock.SESSION_TOKEN,
}


@pytest.fixture
async def provider() -> AsyncIterator[BedrockProvider]:
    fresh = BedrockProvider()  # one per test: it caches default credentials
    yield fresh
    await fresh.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeBedrock]:
    server = FakeBedrock()
    await server.start()
    yield server
    await server.close()


def target(
    fake: FakeBedrock, credentials: dict[str, str] = CREDENTIALS, **options: object
) -> Target:
    return Target(fake.url, {"region": FakeBedrock.REGION, **options}, credentials)


def question(**extra: object) -> dict[str, object]:
    return {
        "model": "sonnet",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        **extra,
    }


async def test_request_is_signed_and_translated_to_converse(
    fake: FakeBedrock, provider: BedrockProvider
) -> None:
    body = question(
        max_tokens=300,
        temperature=0.5,
        stop=["END"],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    reply = await provider.send(target(fake), make_call(body, MODEL_ID), timeouts=TIMEOUTS)
    assert reply.status == 200
    assert fake.signature_ok == [True]
    sent = fake.last
    # The model id is one path segment, percent-encoded as the AWS SDKs send it.
    assert sent.raw_path == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    assert sent.headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={FakeBedrock.ACCESS_KEY}/"
    )
    assert f"/{FakeBedrock.REGION}/bedrock/aws4_request" in sent.headers["authorization"]
    assert sent.headers["x-amz-security-token"] == FakeBedrock.SESSION_TOKEN
    assert sent.headers["traceparent"] == TRACEPARENT
    assert sent.json == {
        "messages": [{"role": "user", "content": [{"text": "What is the capital of France?"}]}],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 300, "temperature": 0.5, "stopSequences": ["END"]},
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "get_weather",
                        "description": "Current weather in a city",
                        "inputSchema": {"json": WEATHER_TOOL["function"]["parameters"]},  # type: ignore[index]
                    }
                }
            ],
            "toolChoice": {"tool": {"name": "get_weather"}},
        },
    }


async def test_tool_history_becomes_tool_use_and_tool_result_blocks(
    fake: FakeBedrock, provider: BedrockProvider
) -> None:
    call = {"id": "tooluse_1", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": '{"city": "Paris"}'}  # type: ignore[assignment]
    body = {
        "model": "sonnet",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "tooluse_1", "content": "18 C"},
        ],
        "tools": [WEATHER_TOOL],
    }
    await provider.send(target(fake, max_tokens=99), make_call(body, MODEL_ID), timeouts=TIMEOUTS)
    sent = fake.last.json
    assert sent["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"text": "Checking."},
                {
                    "toolUse": {
                        "toolUseId": "tooluse_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                },
            ],
        },
        {
            "role": "user",
            "content": [{"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "18 C"}]}}],
        },
    ]
    assert sent["inferenceConfig"] == {"maxTokens": 99}
    assert "toolChoice" not in sent["toolConfig"]


async def test_text_answer(fake: FakeBedrock, provider: BedrockProvider) -> None:
    reply = await provider.send(target(fake), make_call(question(), MODEL_ID), timeouts=TIMEOUTS)
    answer = completion(reply)
    assert answer.model == "sonnet"
    assert answer.choices[0].message.content == "Paris is the capital of France."
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (25, 9)


async def test_tool_call_answer(fake: FakeBedrock, provider: BedrockProvider) -> None:
    fake.scenario = "tool"
    reply = await provider.send(target(fake), make_call(question(), MODEL_ID), timeouts=TIMEOUTS)
    choice = completion(reply).choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    (call,) = choice.message.tool_calls or []
    assert (call.id, call.function.name) == ("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "get_weather")
    assert call.function.arguments == '{"city": "Paris"}'


async def test_event_stream_becomes_chunks_with_usage(
    fake: FakeBedrock, provider: BedrockProvider
) -> None:
    body = question(stream=True, stream_options={"include_usage": True})
    reply = await provider.send(target(fake), make_call(body, MODEL_ID), timeouts=TIMEOUTS)
    streamed = await read_stream(reply)
    assert fake.last.raw_path.endswith("/converse-stream")
    assert fake.signature_ok == [True]
    assert streamed.text == "Paris is the capital of France."
    assert streamed.finish == "stop"
    # Bedrock reports usage after messageStop; it still reaches the client.
    assert streamed.usage == {"prompt_tokens": 25, "completion_tokens": 9, "total_tokens": 34}
    assert streamed.done


async def test_streamed_tool_use_becomes_tool_call_deltas(
    fake: FakeBedrock, provider: BedrockProvider
) -> None:
    fake.scenario = "tool"
    body = question(stream=True, tools=[WEATHER_TOOL])
    reply = await provider.send(target(fake), make_call(body, MODEL_ID), timeouts=TIMEOUTS)
    streamed = await read_stream(reply)
    assert streamed.text == "Let me check."
    assert streamed.tool_calls == [
        {
            "id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        }
    ]
    assert streamed.finish == "tool_calls"
    assert streamed.done


@pytest.mark.parametrize(
    ("scenario", "status", "code"),
    [
        ("throttled", 429, "rate_limit_exceeded"),
        ("too_long", 400, "context_length_exceeded"),
        ("not_ready", 503, None),
        ("unavailable", 503, None),
    ],
)
async def test_aws_errors_map_to_statuses(
    fake: FakeBedrock, provider: BedrockProvider, scenario: str, status: int, code: str | None
) -> None:
    fake.scenario = scenario
    reply = await provider.send(target(fake), make_call(question(), MODEL_ID), timeouts=TIMEOUTS)
    assert reply.status == status
    assert error(reply)["code"] == code


async def test_wrong_secret_is_rejected_without_leaking_it(
    fake: FakeBedrock, provider: BedrockProvider
) -> None:
    creds = {**CREDENTIALS, "aws_secret_access_key": "not-the-secret"}
    reply = await provider.send(
        target(fake, creds), make_call(question(), MODEL_ID), timeouts=TIMEOUTS
    )
    assert fake.signature_ok == [False]
    assert reply.status == 403
    err = error(reply)
    assert err["code"] == "invalid_api_key" and "signature" in err["message"]
    assert b"not-the-secret" not in (reply.body or b"")


@pytest.mark.parametrize(
    ("scenario", "status", "message"),
    [("stream_exception", 429, "Too many tokens"), ("bad_frame", 502, "failed in the middle")],
)
async def test_broken_streams_end_with_an_error_event(
    fake: FakeBedrock, provider: BedrockProvider, scenario: str, status: int, message: str
) -> None:
    fake.scenario = scenario
    body = question(stream=True)
    streamed = await read_stream(
        await provider.send(target(fake), make_call(body, MODEL_ID), timeouts=TIMEOUTS)
    )
    assert streamed.text == "Paris is the"
    assert streamed.error is not None and message in streamed.error["message"]
    expected = (
        ("rate_limit_error", "rate_limit_exceeded") if status == 429 else ("upstream_error",) * 2
    )
    assert (streamed.error["type"], streamed.error["code"]) == expected
    assert not streamed.done


async def test_exception_before_any_text_is_an_error_reply(
    fake: FakeBedrock, provider: BedrockProvider
) -> None:
    fake.scenario = "exception_first"
    body = question(stream=True)
    reply = await provider.send(target(fake), make_call(body, MODEL_ID), timeouts=TIMEOUTS)
    assert reply.status == 429
    assert error(reply)["code"] == "rate_limit_exceeded"


async def test_default_credential_chain(
    fake: FakeBedrock,
    provider: BedrockProvider,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FakeBedrock.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FakeBedrock.SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", FakeBedrock.SESSION_TOKEN)
    reply = await provider.send(
        target(fake, {}), make_call(question(), MODEL_ID), timeouts=TIMEOUTS
    )
    assert reply.status == 200
    assert fake.signature_ok == [True]


async def test_no_credentials_anywhere_is_a_clear_error(
    fake: FakeBedrock,
    provider: BedrockProvider,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ModelplaneError, match="looked for AWS credentials and found none"):
        await provider.send(target(fake, {}), make_call(question(), MODEL_ID), timeouts=TIMEOUTS)
    assert fake.received == []


async def test_region_fills_the_url_template(fake: FakeBedrock, provider: BedrockProvider) -> None:
    where = Target(fake.url + "/{region}", {"region": FakeBedrock.REGION}, CREDENTIALS)
    await provider.send(where, make_call(question(), MODEL_ID), timeouts=TIMEOUTS)
    assert fake.last.raw_path.startswith(f"/{FakeBedrock.REGION}/model/")
    assert fake.signature_ok == [True]


async def test_missing_region_is_a_clear_error(
    fake: FakeBedrock, provider: BedrockProvider
) -> None:
    with pytest.raises(ModelplaneError, match="option 'region'"):
        await provider.send(
            Target(fake.url, {}, CREDENTIALS), make_call(question(), MODEL_ID), timeouts=TIMEOUTS
        )
    assert fake.received == []


async def test_missing_botocore_says_what_to_install(
    fake: FakeBedrock, provider: BedrockProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "botocore.auth", None)
    with pytest.raises(ModelplaneError, match=r"pip install 'modelplane\[bedrock\]'"):
        await provider.send(target(fake), make_call(question(), MODEL_ID), timeouts=TIMEOUTS)


async def test_http_image_urls_are_refused(fake: FakeBedrock, provider: BedrockProvider) -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    body = {"model": "sonnet", "messages": [{"role": "user", "content": [image]}]}
    reply = await provider.send(target(fake), make_call(body, MODEL_ID), timeouts=TIMEOUTS)
    assert reply.status == 400
    assert "data: URLs" in error(reply)["message"]
    assert fake.received == []


async def test_models_is_empty(fake: FakeBedrock, provider: BedrockProvider) -> None:
    assert await provider.models(target(fake), timeouts=TIMEOUTS) == []


async def test_health_gets_the_path_signed(fake: FakeBedrock, provider: BedrockProvider) -> None:
    assert BedrockProvider.health_path is None  # no default: a check names its path
    await provider.health(target(fake, health_check={"path": "/ping"}), timeouts=TIMEOUTS)
    assert (fake.last.method, fake.last.raw_path) == ("GET", "/ping")
    assert fake.signature_ok == [True]

    creds = {**CREDENTIALS, "aws_secret_access_key": "not-the-secret"}
    with pytest.raises(UpstreamError) as err:
        await provider.health(
            target(fake, creds, health_check={"path": "/ping"}), timeouts=TIMEOUTS
        )
    assert err.value.message == "GET /ping answered HTTP 403"
