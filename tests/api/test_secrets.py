"""Provider credentials: from the encrypted store or the environment, never shown."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.gateway.fakes import FakeUpstream
from tests.helpers import Server

SECRET = "sk-live-0123456789-very-secret"


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    up = FakeUpstream("up")
    yield up
    up.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(
        tmp_path / "home",
        f"sqlite:///{tmp_path / 'modelplane.db'}",
        UPSTREAM_TOKEN="env-token-abc",
    ).start()
    yield srv
    srv.close()


def _endpoint(server: Server, fake: FakeUpstream, name: str, ref: str) -> int:
    return server.http.post(
        "/api/endpoints",
        json={
            "name": name,
            "provider": "openai",
            "model": "m",
            "options": {"base_url": fake.base_url, "credentials": {"api_key": ref}},
        },
    ).status_code


def test_secrets_are_encrypted_write_only_and_reach_the_upstream(
    server: Server, fake: FakeUpstream, tmp_path: Path
) -> None:
    assert server.http.put("/api/secrets/openai-key", json={"value": SECRET}).status_code == 201
    listed = server.http.get("/api/secrets")
    assert [s["name"] for s in listed.json()["data"]] == ["openai-key"]
    assert SECRET not in listed.text
    assert _endpoint(server, fake, "vault", "secret:openai-key") == 201
    assert SECRET not in server.http.get("/api/endpoints/vault").text

    server.openai().chat.completions.create(
        model="vault", messages=[{"role": "user", "content": "hi"}]
    )
    assert fake.headers[-1]["authorization"] == f"Bearer {SECRET}"

    # Rotation applies without a restart.
    assert server.http.put("/api/secrets/openai-key", json={"value": "rotated"}).status_code == 204
    server.openai().chat.completions.create(
        model="vault", messages=[{"role": "user", "content": "hi"}]
    )
    assert fake.headers[-1]["authorization"] == "Bearer rotated"

    rows = sqlite3.connect(tmp_path / "modelplane.db").execute("SELECT ciphertext FROM secrets")
    stored = rows.fetchone()[0]
    assert "rotated" not in stored and SECRET not in stored
    assert SECRET not in (server.home / "server.log").read_text()


def test_environment_credentials(server: Server, fake: FakeUpstream) -> None:
    assert _endpoint(server, fake, "envy", "env:UPSTREAM_TOKEN") == 201
    server.openai().chat.completions.create(
        model="envy", messages=[{"role": "user", "content": "hi"}]
    )
    assert fake.headers[-1]["authorization"] == "Bearer env-token-abc"


def test_missing_credentials_say_what_is_missing(server: Server, fake: FakeUpstream) -> None:
    assert _endpoint(server, fake, "nokey", "secret:absent") == 201
    with pytest.raises(openai.APIStatusError) as err:
        server.openai().chat.completions.create(
            model="nokey", messages=[{"role": "user", "content": "hi"}]
        )
    assert err.value.status_code == 502
    assert "secret 'absent'" in str(err.value)
    assert not fake.calls


def test_secrets_are_never_accepted_inline(server: Server, fake: FakeUpstream) -> None:
    resp = server.http.post(
        "/api/endpoints",
        json={
            "name": "inline",
            "provider": "openai",
            "model": "m",
            "options": {"base_url": fake.base_url, "credentials": {"api_key": SECRET}},
        },
    )
    assert resp.status_code == 400
    assert SECRET not in resp.text
    assert "env:VARIABLE" in resp.json()["detail"]


def test_secret_api_needs_admin_and_validates(server: Server) -> None:
    member = server.http.post("/api/keys", json={"name": "m"}).json()["key"]
    denied = server.http.put(
        "/api/secrets/x", json={"value": "v"}, headers={"authorization": f"Bearer {member}"}
    )
    assert denied.status_code == 403
    assert server.http.put("/api/secrets/bad name", json={"value": "v"}).status_code == 400
    assert server.http.put("/api/secrets/x", json={"value": ""}).status_code == 400
    assert server.http.delete("/api/secrets/missing").status_code == 404
