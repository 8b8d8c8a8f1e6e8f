"""Translated providers behind the gateway: the openai SDK talks to modelplane, which
talks to local fakes of Anthropic and Ollama (recorded wire shapes, tests/providers)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import ADMIN_KEY, Server
from tests.providers.fakes import FakeAnthropic, FakeOllama


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home")
    srv = Server(home, f"sqlite:///{home / 'modelplane.db'}").start()
    resp = srv.http.put("/api/secrets/anthropic", json={"value": FakeAnthropic.API_KEY})
    assert resp.status_code in (201, 204)
    yield srv
    srv.close()


@pytest.fixture
async def upstreams(server: Server) -> AsyncIterator[tuple[FakeAnthropic, FakeOllama]]:
    anthropic, ollama = FakeAnthropic(), FakeOllama()
    await anthropic.start()
    await ollama.start()
    specs: list[dict[str, Any]] = [
        {
            "name": "claude",
            "provider": "anthropic",
            "model": "claude-sonnet-4-5",
            "options": {"base_url": anthropic.url, "credentials": {"api_key": "secret:anthropic"}},
        },
        {
            "name": "llama",
            "provider": "ollama",
            "model": "llama3.2",
            "options": {"base_url": ollama.url},
        },
    ]
    async with _admin(server) as http:
        for spec in specs:
            assert (await http.post("/api/endpoints", json=spec)).status_code == 201
        yield anthropic, ollama
        await http.delete("/api/routes/assistant")
        for spec in specs:
            await http.delete(f"/api/endpoints/{spec['name']}")
    await anthropic.close()
    await ollama.close()


def _admin(server: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.base_url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    )


def _client(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key=ADMIN_KEY, max_retries=0)


QUESTION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital?"}]


async def test_anthropic_through_the_gateway(
    server: Server, upstreams: tuple[FakeAnthropic, FakeOllama]
) -> None:
    anthropic, _ = upstreams
    async with _client(server) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="claude", messages=QUESTION, max_tokens=50
        )
        answer = raw.parse()
        assert raw.headers["x-modelplane-target"] == "claude"
        assert answer.choices[0].message.content == "Paris is the capital of France."
        assert answer.usage is not None and answer.usage.total_tokens > 0
        sent = anthropic.last
        assert sent.headers["x-api-key"] == FakeAnthropic.API_KEY
        assert sent.json["system"] == "Be brief." and sent.json["model"] == "claude-sonnet-4-5"

        stream = await client.chat.completions.create(
            model="claude", messages=QUESTION, stream=True, max_tokens=50
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "Paris is the capital of France."


async def test_provider_errors_fall_back_across_providers(
    server: Server, upstreams: tuple[FakeAnthropic, FakeOllama]
) -> None:
    anthropic, ollama = upstreams
    async with _admin(server) as http:
        resp = await http.put(
            "/api/routes/assistant",
            json={
                "targets": [{"endpoint": "claude"}],
                "fallbacks": ["llama"],
                "retries": {"attempts": 0},
            },
        )
        assert resp.status_code == 201, resp.text
    async with _client(server) as client:
        for scenario in ("overloaded", "rate_limited", "too_long"):
            anthropic.scenario = scenario
            raw = await client.chat.completions.with_raw_response.create(
                model="assistant", messages=QUESTION
            )
            assert raw.headers["x-modelplane-target"] == "llama", scenario
            assert raw.parse().choices[0].message.content == "Paris is the capital of France."
        # A stream whose first event is Anthropic's "overloaded" falls back too.
        anthropic.scenario = "error_first"
        stream = await client.chat.completions.with_raw_response.create(
            model="assistant", messages=QUESTION, stream=True
        )
        assert stream.headers["x-modelplane-target"] == "llama"
    assert ollama.received


async def test_anthropic_errors_reach_the_client_in_openai_shape(
    server: Server, upstreams: tuple[FakeAnthropic, FakeOllama]
) -> None:
    anthropic, _ = upstreams
    anthropic.scenario = "rate_limited"
    async with _client(server) as client:
        with pytest.raises(openai.RateLimitError) as err:
            await client.chat.completions.create(model="claude", messages=QUESTION)
    assert err.value.response.headers["retry-after"] == "17"
    assert FakeAnthropic.API_KEY not in err.value.response.text


async def test_ollama_models_and_pull(
    server: Server, upstreams: tuple[FakeAnthropic, FakeOllama]
) -> None:
    _, ollama = upstreams
    async with _admin(server) as http:
        models = (await http.get("/api/endpoints/llama/upstream-models")).json()["data"]
        assert "llama3.2:latest" in models or "llama3.2" in models
        resp = await http.post("/api/endpoints/llama/pull", json={"model": "llama3.2"})
        assert resp.status_code == 200
        assert resp.text.strip().splitlines()[-1] == '{"status": "success"}'
        ollama.scenario = "pull_fails"
        failed = await http.post("/api/endpoints/llama/pull", json={"model": "nope"})
        # Like Ollama itself: progress started, so the failure is the last line.
        assert failed.status_code == 200
        last = failed.text.strip().splitlines()[-1]
        assert '"error"' in last and "file does not exist" in last
        not_ollama = await http.post("/api/endpoints/claude/pull", json={"model": "x"})
        assert not_ollama.status_code == 400
    async with _client(server) as client:
        out = await client.embeddings.create(model="llama", input=["a", "b"])
        assert len(out.data) == 2
