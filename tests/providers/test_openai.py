"""The OpenAI-compatible pass-through provider against a real third-party server:
llama-cpp-python's ``llama_cpp.server`` running the bundled SmolLM2 model (behind a fake
Azure door for the Azure variant)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from modelplane.engines.llamacpp.weights import resolve_source
from modelplane.providers.base import Call, Kind, Target
from modelplane.providers.openai import OpenAIProvider
from tests.helpers import eventually, free_port
from tests.providers.fakes import FakeAzureFront
from tests.providers.helpers import TIMEOUTS, body_of, completion, error, read_stream
from tests.providers.helpers import make_call as _make_call

KEY = "llama-server-test-key"
PROVIDER = OpenAIProvider()


def make_call(body: dict[str, object], model: str, kind: Kind = "chat") -> Call:
    # A request id as the gateway mints it: llama_cpp.server answers an empty 400 to an
    # x-request-id that is not a UUID.
    return _make_call(body, model, kind, uuid.uuid4().hex)


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` with the bundled model, an API key and a 512-token
    context, for the whole module."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    args = [
        sys.executable,
        "-m",
        "tests.providers.llama_server",  # llama_cpp.server, without AMX buffers
        "--model",
        str(resolve_source("smollm2")),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "512",
        "--api_key",
        KEY,
    ]
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"llama_cpp.server exited: {_tail(log_path)}")
            return httpx.get(
                url + "/v1/models", headers={"authorization": f"Bearer {KEY}"}
            ).is_success

        eventually(ready, timeout=90, what="llama_cpp.server to answer /v1/models")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


@pytest.fixture
async def azure(llama_server: str) -> AsyncIterator[FakeAzureFront]:
    front = FakeAzureFront(llama_server, KEY)
    await front.start()
    yield front
    await front.close()


def question(**extra: object) -> dict[str, object]:
    return {
        "model": "my-alias",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 4,
        "temperature": 0,
        **extra,
    }


def target(url: str, key: str = KEY) -> Target:
    return Target(url + "/v1", {}, {"api_key": key})


async def test_chat_answer_with_the_upstream_model_name(llama_server: str) -> None:
    reply = await PROVIDER.send(
        target(llama_server), make_call(question(), "smollm2"), timeouts=TIMEOUTS
    )
    answer = completion(reply)
    # llama_cpp.server echoes the model it was asked for: the upstream's name went out.
    assert answer.model == "smollm2"
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens <= 4


async def test_body_passes_untouched_when_names_agree(llama_server: str) -> None:
    call = make_call(question(model="smollm2"), "smollm2")
    reply = await PROVIDER.send(target(llama_server), call, timeouts=TIMEOUTS)
    assert completion(reply).model == "smollm2"


async def test_stream_passes_through(llama_server: str) -> None:
    body = question(stream=True, stream_options={"include_usage": True})
    reply = await PROVIDER.send(target(llama_server), make_call(body, "smollm2"), timeouts=TIMEOUTS)
    streamed = await read_stream(reply)
    assert streamed.text
    assert streamed.finish in ("stop", "length")
    assert streamed.done and streamed.error is None


async def test_wrong_key_is_a_401_envelope(llama_server: str) -> None:
    reply = await PROVIDER.send(
        target(llama_server, "wrong-key"), make_call(question(), "smollm2"), timeouts=TIMEOUTS
    )
    assert reply.status == 401
    err = error(reply)  # llama_cpp.server answers {"detail": ...}; the client gets OpenAI's shape
    assert (err["message"], err["type"]) == ("Invalid API key", "authentication_error")
    assert b"wrong-key" not in (reply.body or b"")


async def test_prompt_longer_than_the_context_is_context_length_exceeded(llama_server: str) -> None:
    long = question(messages=[{"role": "user", "content": "hello world " * 400}])
    reply = await PROVIDER.send(target(llama_server), make_call(long, "smollm2"), timeouts=TIMEOUTS)
    assert reply.status == 400
    err = error(reply)
    assert err["code"] == "context_length_exceeded"
    assert "maximum context length is 512 tokens" in err["message"]


async def test_upstream_server_error_keeps_its_status(llama_server: str) -> None:
    call = make_call({"model": "smollm2", "input": "hi"}, "smollm2", kind="embeddings")
    reply = await PROVIDER.send(target(llama_server), call, timeouts=TIMEOUTS)
    assert reply.status == 500
    assert "embedding=True" in error(reply)["message"]


# llama_cpp.server (starlette-context) answers an empty 400 to an x-request-id that is
# not a UUID: OpenAIProvider forwards only UUIDs.
async def test_models(llama_server: str) -> None:
    assert await PROVIDER.models(target(llama_server), timeouts=TIMEOUTS) == ["smollm2"]


async def test_models_with_a_wrong_key_is_empty(llama_server: str) -> None:
    assert await PROVIDER.models(target(llama_server, "wrong-key"), timeouts=TIMEOUTS) == []


async def test_client_chosen_request_id(llama_server: str) -> None:
    call = _make_call(question(), "smollm2", request_id="checkout-service-1234")
    assert (await PROVIDER.send(target(llama_server), call, timeouts=TIMEOUTS)).status == 200


async def test_closed_provider_opens_new_connections(llama_server: str) -> None:
    provider = OpenAIProvider()
    for _ in range(2):
        reply = await provider.send(
            target(llama_server), make_call(question(), "smollm2"), timeouts=TIMEOUTS
        )
        assert completion(reply).choices
        await provider.close()


async def test_unreachable_upstream_raises_for_the_gateway() -> None:
    where = Target(f"http://127.0.0.1:{free_port()}/v1", {}, {"api_key": KEY})
    with pytest.raises(ConnectionError):  # an OSError, as the gateway expects
        await PROVIDER.send(where, make_call(question(), "smollm2"), timeouts=TIMEOUTS)


def azure_target(front: FakeAzureFront, key: str = FakeAzureFront.API_KEY) -> Target:
    options = {"api_key_header": "api-key", "query": {"api-version": "2024-10-21"}}
    return Target(front.url + "/openai/deployments/smollm2", options, {"api_key": key})


async def test_azure_key_header_and_api_version(azure: FakeAzureFront) -> None:
    reply = await PROVIDER.send(
        azure_target(azure), make_call(question(), "smollm2"), timeouts=TIMEOUTS
    )
    assert completion(reply).choices[0].message.content
    sent = azure.last
    assert sent.raw_path == "/openai/deployments/smollm2/chat/completions?api-version=2024-10-21"
    assert sent.headers["api-key"] == FakeAzureFront.API_KEY
    assert "authorization" not in sent.headers


async def test_azure_wrong_key(azure: FakeAzureFront) -> None:
    reply = await PROVIDER.send(
        azure_target(azure, "not-the-key"), make_call(question(), "smollm2"), timeouts=TIMEOUTS
    )
    assert reply.status == 401
    err = body_of(reply)["error"]  # Azure's own envelope, passed through
    assert err["message"].startswith("Access denied due to invalid subscription key")
    assert FakeAzureFront.API_KEY not in str(err)


async def test_stream_broken_midway_ends_with_an_error_event(azure: FakeAzureFront) -> None:
    azure.scenario = "cut"
    body = question(stream=True)
    streamed = await read_stream(
        await PROVIDER.send(azure_target(azure), make_call(body, "smollm2"), timeouts=TIMEOUTS)
    )
    assert len(streamed.chunks) == 1
    assert streamed.error is not None and streamed.error["code"] == "upstream_error"
    assert not streamed.done
