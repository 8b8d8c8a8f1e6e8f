"""JWTs from a configured issuer authenticate like API keys, end to end."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.helpers import Server

ISSUER = "https://idp.example.test"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, signing_key: rsa.RSAPrivateKey
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("jwt")
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key()))
    (tmp / "jwks.json").write_text(json.dumps({"keys": [{**public, "kid": "k1", "alg": "RS256"}]}))
    config = tmp / "modelplane.yaml"
    config.write_text(
        f"jwt:\n  issuer: {ISSUER}\n  audience: modelplane\n  jwks_file: {tmp / 'jwks.json'}\n"
    )
    srv = Server(tmp / "home", f"sqlite:///{tmp / 'db.sqlite'}", MODELPLANE_CONFIG=str(config))
    srv.start()
    assert srv.http.post("/api/teams", json={"name": "research"}).status_code == 201
    yield srv
    srv.close()


def _token(key: rsa.RSAPrivateKey, **over: object) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": "modelplane",
        "sub": "alice",
        "team": "research",
        "role": "team_admin",
        "iat": now,
        "exp": now + 300,
        **over,
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


def _get(server: Server, path: str, token: str) -> httpx.Response:
    return httpx.get(server.base_url + path, headers={"authorization": f"Bearer {token}"})


def test_a_valid_token_acts_for_its_team_and_role(
    server: Server, signing_key: rsa.RSAPrivateKey
) -> None:
    token = _token(signing_key)
    teams = _get(server, "/api/teams", token)
    assert teams.status_code == 200
    assert [t["name"] for t in teams.json()["data"]] == ["research"]
    made = httpx.post(
        server.base_url + "/api/keys",
        json={"name": "from-jwt"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert made.status_code == 201 and made.json()["team"] == "research"
    viewer = _token(signing_key, role="viewer")
    assert _get(server, "/v1/models", viewer).status_code == 403


def test_bad_tokens_are_refused_with_the_reason_and_never_echoed(
    server: Server, signing_key: rsa.RSAPrivateKey
) -> None:
    expired = _token(signing_key, exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)
    resp = _get(server, "/api/teams", expired)
    assert resp.status_code == 401 and "expired" in resp.json()["detail"]
    assert expired not in resp.text
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = _get(server, "/api/teams", _token(other))
    assert forged.status_code == 401
    wrong_team = _get(server, "/api/teams", _token(signing_key, team="nobody"))
    assert wrong_team.status_code == 401 and "nobody" in wrong_team.json()["detail"]
    assert expired not in (server.home / "server.log").read_text()


def test_a_token_acts_for_its_modelplane_user_and_a_disabled_one_is_refused(
    server: Server, signing_key: rsa.RSAPrivateKey
) -> None:
    made = server.http.post(
        "/api/users",
        json={"name": "dave", "team": "research", "role": "team_admin", "email": "d@ex.test"},
    )
    assert made.status_code == 201, made.text
    # No role or team claim: dave's own; by subject or by email.
    for n, token in enumerate(
        (
            _token(signing_key, sub="dave", role=None, team=None),
            _token(signing_key, sub="00u-dave", email="D@ex.test", role=None, team=None),
        )
    ):
        created = httpx.post(
            server.base_url + "/api/service-accounts",
            json={"name": f"dave-bot-{n}"},
            headers={"authorization": f"Bearer {token}"},
        )
        assert created.status_code == 201, created.text
        assert created.json()["team"] == "research"
        assert created.json()["created_by"].startswith(f"user:dave (jwt:{ISSUER}#")
    events = server.http.get("/api/audit", params={"actor": "user:dave*"}).json()["data"]
    assert len(events) == 2 and {e["action"] for e in events} == {"service_account.create"}

    assert server.http.patch("/api/users/dave", json={"disabled": True}).status_code == 200
    for token in (
        _token(signing_key, sub="dave"),
        _token(signing_key, sub="00u-dave", email="d@ex.test"),
    ):
        refused = _get(server, "/api/teams", token)
        assert refused.status_code == 401, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert "user:dave is disabled" in refused.json()["detail"]
        assert token not in refused.text
        v1 = _get(server, "/v1/models", token)
        assert v1.status_code == 401 and "disabled" in v1.json()["error"]["message"]
    # Someone the platform does not know is still mapped from the claims alone.
    assert _get(server, "/api/teams", _token(signing_key, sub="erin")).status_code == 200


def test_api_keys_still_work_beside_jwts(server: Server) -> None:
    assert server.http.get("/api/teams").status_code == 200


def test_jwts_without_an_issuer_get_a_clear_message(tmp_path: Path) -> None:
    srv = Server(tmp_path / "home", f"sqlite:///{tmp_path / 'db.sqlite'}").start()
    try:
        fake = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
        resp = _get(srv, "/api/teams", fake)
        assert resp.status_code == 401 and "does not accept JWTs" in resp.json()["detail"]
    finally:
        srv.close()
