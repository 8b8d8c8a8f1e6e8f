"""A plugin package, installed like any other (``tests/plugins/modelplane-echo``),
serves through modelplane: its engine in replica processes the local runtime starts,
its provider in the gateway, both found by entry point only."""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import openai
import pytest

from tests.helpers import Server

PROMPT = "the quick brown fox"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not any(ep.name == "echo" for ep in entry_points(group="modelplane.engines")):
        why = "modelplane-echo is not installed: pip install -e tests/plugins/modelplane-echo"
        if os.environ.get("MODELPLANE_REQUIRE_SERVICES") == "1":  # CI: scripts/check installs it
            pytest.fail(why)
        pytest.skip(why)
    home: Path = tmp_path_factory.mktemp("home")
    srv = Server(home, f"sqlite:///{home / 'modelplane.db'}").start()
    try:
        yield srv
    finally:
        srv.close()


def test_the_plugins_are_listed_as_engines_and_providers(server: Server) -> None:
    resp = server.http.post("/api/endpoints", json={"name": "bad", "model": "m", "engine": "nope"})
    assert resp.status_code == 400
    assert "echo" in resp.json()["detail"] and "llamacpp" in resp.json()["detail"]
    resp = server.http.post("/api/endpoints", json={"name": "bad", "model": "m", "provider": "x"})
    assert resp.status_code == 400
    assert "echo" in resp.json()["detail"] and "openai" in resp.json()["detail"]


def test_an_engine_from_a_plugin_serves_through_the_gateway(server: Server) -> None:
    resp = server.http.post(
        "/api/endpoints", json={"name": "echo-engine", "engine": "echo", "model": "echo-1"}
    )
    assert resp.status_code == 201, resp.text
    server.wait_ready("echo-engine", 1)
    client = server.openai()

    answer = client.chat.completions.create(
        model="echo-engine", messages=[{"role": "user", "content": PROMPT}]
    )
    assert answer.choices[0].message.content == PROMPT
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (4, 4)

    stream = client.chat.completions.create(
        model="echo-engine",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "the quick"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 2


def test_an_engine_plugin_checks_its_options(server: Server) -> None:
    resp = server.http.post(
        "/api/endpoints",
        json={"name": "echo-bad", "engine": "echo", "model": "echo-1", "options": {"n_ctx": 1}},
    )
    assert resp.status_code == 400
    assert resp.json()["detail"] == "options.n_ctx: the echo engine takes no options"


def test_a_provider_from_a_plugin_serves_through_the_gateway(server: Server) -> None:
    resp = server.http.post(
        "/api/endpoints", json={"name": "echo-provider", "provider": "echo", "model": "echo-up"}
    )
    assert resp.status_code == 201, resp.text
    client = server.openai()
    messages = [
        {"role": "system", "content": "repeat after me"},
        {"role": "user", "content": PROMPT},
    ]

    answer = client.chat.completions.create(model="echo-provider", messages=messages)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == PROMPT
    assert answer.model == "echo-up", "the provider was sent the upstream's model name"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (7, 4)

    stream = client.chat.completions.create(
        model="echo-provider",
        messages=messages,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == PROMPT
    usage = chunks[-1].usage
    assert usage is not None and usage.total_tokens == 11

    # Embeddings are not among the plugin's kinds: a clear 400, not a 500.
    with pytest.raises(openai.BadRequestError, match="does not serve embeddings"):
        client.embeddings.create(model="echo-provider", input="x")
