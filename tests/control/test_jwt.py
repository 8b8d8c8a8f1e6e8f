"""JWT bearer auth: keys generated here, JWKS from a file and from a loopback HTTP server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import ValidationError

from modelplane.control.jwt import JwtAuth, JwtSettings, looks_like_jwt
from modelplane.control.keys import mint
from modelplane.errors import AuthenticationError, ModelplaneError
from modelplane.store.records import Account
from tests.helpers import until

ISSUER = "https://idp.example.test"
AUDIENCE = "modelplane"
TEAMS = {"research": "team-research-id", "ops": "team-ops-id"}


@dataclass
class Key:
    kid: str
    alg: str
    private: Any
    jwk: dict[str, Any]

    def sign(self, claims: dict[str, Any], alg: str | None = None, **header: Any) -> str:
        return jwt.encode(
            claims, self.private, algorithm=alg or self.alg, headers=header or {"kid": self.kid}
        )


def _key(kid: str, alg: str, private: Any, algorithm: Any, with_alg: bool = True) -> Key:
    jwk = algorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.update(kid=kid, use="sig")
    if with_alg:
        jwk["alg"] = alg
    return Key(kid, alg, private, jwk)


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    rsa_a = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_b = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p256 = ec.generate_private_key(ec.SECP256R1())
    return {
        "rsa": _key("rsa-1", "RS256", rsa_a, jwt.algorithms.RSAAlgorithm),
        # No "alg" in the JWK: the key may verify RS256 and PS256 alike.
        "pss": _key("rsa-2", "PS256", rsa_b, jwt.algorithms.RSAAlgorithm, with_alg=False),
        "ec": _key("ec-1", "ES256", p256, jwt.algorithms.ECAlgorithm),
        "ed": _key(
            "ed-1", "EdDSA", ed25519.Ed25519PrivateKey.generate(), jwt.algorithms.OKPAlgorithm
        ),
        "rotated": _key(
            "rsa-3", "RS256", rsa.generate_private_key(65537, 2048), jwt.algorithms.RSAAlgorithm
        ),
        "outsider": _key(
            "rsa-1", "RS256", rsa.generate_private_key(65537, 2048), jwt.algorithms.RSAAlgorithm
        ),
    }


def jwks(*ks: Key) -> dict[str, Any]:
    return {"keys": [k.jwk for k in ks]}


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "exp": now + 600,
        "team": "research",
        "role": "member",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def settings(**over: Any) -> JwtSettings:
    return JwtSettings(**{"issuer": ISSUER, "audience": AUDIENCE, **over})


@pytest.fixture
async def auth(tmp_path: Path, keys: dict[str, Key]) -> AsyncIterator[JwtAuth]:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(keys["rsa"], keys["pss"], keys["ec"], keys["ed"])))
    a = JwtAuth(settings(jwks_file=path), TEAMS.get)
    await a.start()
    yield a
    await a.close()


@dataclass
class JwksServer:
    """A stand-in for an identity provider's JWKS endpoint, on loopback."""

    url: str
    body: dict[str, Any]
    status: int = 200
    fetches: int = 0


@pytest.fixture
async def idp(keys: dict[str, Key]) -> AsyncIterator[JwksServer]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = JwksServer(f"http://127.0.0.1:{sock.getsockname()[1]}/jwks.json", jwks(keys["rsa"]))

    async def handler(_: web.Request) -> web.Response:
        server.fetches += 1
        return web.json_response(server.body, status=server.status)

    app = web.Application()
    app.router.add_get("/jwks.json", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    yield server
    await runner.cleanup()


def verifies(a: JwtAuth, token: str) -> bool:
    try:
        a.verify(token)
    except AuthenticationError:
        return False
    return True


def refused(a: JwtAuth, token: str, match: str) -> AuthenticationError:
    with pytest.raises(AuthenticationError, match=match) as info:
        a.verify(token)
    for part in token.split("."):
        assert not part or part not in info.value.message, "the message leaks the token"
    assert info.value.status == 401
    return info.value


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], body: dict[str, Any], secret: bytes | None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(body).encode())}"
    sig = (
        b"" if secret is None else hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{b64(sig)}"


@pytest.mark.parametrize("name", ["rsa", "pss", "ec", "ed"])
async def test_valid_token_becomes_a_caller(auth: JwtAuth, keys: dict[str, Key], name: str) -> None:
    token = keys[name].sign(claims(role="team_admin", scope="inference read openid"))
    caller = auth.verify(token)
    assert caller.subject == f"jwt:{ISSUER}#alice"
    assert caller.role == "team_admin"
    assert caller.team_id == "team-research-id"
    assert caller.scopes == frozenset({"inference", "read"})
    assert caller.key_id is None


async def test_claims_mapping_defaults_and_list_scopes(auth: JwtAuth, keys: dict[str, Key]) -> None:
    caller = auth.verify(keys["rsa"].sign(claims(role=None, team="ops", scope=["write", "x"])))
    assert (caller.role, caller.team_id, caller.scopes) == (
        "member",
        "team-ops-id",
        frozenset({"write"}),
    )
    no_scope = auth.verify(keys["rsa"].sign(claims()))
    assert no_scope.scopes == frozenset() and no_scope.allows("inference")
    admin = auth.verify(keys["rsa"].sign(claims(role="admin", team=None)))
    assert admin.is_admin and admin.team_id is None


async def test_custom_claim_names(tmp_path: Path, keys: dict[str, Key]) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(keys["rsa"])))
    s = settings(
        jwks_file=path, audience=None, team_claim="grp", role_claim="mp_role", default_role="viewer"
    )
    a = JwtAuth(s, TEAMS.get)
    await a.start()
    try:
        caller = a.verify(keys["rsa"].sign(claims(aud=None, role=None, team=None, grp="ops")))
        assert (caller.role, caller.team_id) == ("viewer", "team-ops-id")
        other_aud = a.verify(
            keys["rsa"].sign(claims(aud="someone-else", team=None, grp="ops", mp_role="admin"))
        )
        assert other_aud.role == "admin"
        # Without a kid, the only key in the set is used.
        assert a.verify(keys["rsa"].sign(claims(aud=None, team=None, grp="ops"), typ="JWT"))
    finally:
        await a.close()


async def test_time_claims(auth: JwtAuth, keys: dict[str, Key]) -> None:
    now = int(time.time())
    k = keys["rsa"]
    refused(auth, k.sign(claims(exp=now - 3600)), "has expired")
    refused(auth, k.sign(claims(nbf=now + 3600)), "not valid yet")
    refused(auth, k.sign(claims(iat=now + 3600)), "not valid yet")
    refused(auth, k.sign(claims(exp=None)), "no 'exp' claim")
    # Within the 30 s leeway for clock skew.
    assert auth.verify(k.sign(claims(exp=now - 5, nbf=now + 5)))


async def test_issuer_audience_and_subject(auth: JwtAuth, keys: dict[str, Key]) -> None:
    k = keys["ec"]
    refused(auth, k.sign(claims(iss="https://evil.example.test")), f"not issued by '{ISSUER}'")
    refused(auth, k.sign(claims(iss=None)), "no 'iss' claim")
    refused(auth, k.sign(claims(aud="another-service")), f"not meant for audience '{AUDIENCE}'")
    refused(auth, k.sign(claims(aud=None)), "no 'aud' claim")
    refused(auth, k.sign(claims(sub=None)), "no 'sub' claim")
    refused(auth, k.sign(claims(sub="")), "empty 'sub' claim")


async def test_tampered_and_foreign_signatures(auth: JwtAuth, keys: dict[str, Key]) -> None:
    header, _, sig = keys["rsa"].sign(claims()).split(".")
    escalated = b64(json.dumps(claims(role="admin")).encode())
    refused(auth, f"{header}.{escalated}.{sig}", "signature does not verify")
    # Signed by a key outside the JWKS that claims a listed key id.
    refused(auth, keys["outsider"].sign(claims()), "signature does not verify")
    refused(auth, "eyJhbGciOi.e30.c2ln", "not a well-formed JWT")


async def test_alg_none_and_hmac_with_the_public_key_are_refused(
    auth: JwtAuth, keys: dict[str, Key]
) -> None:
    refused(auth, forge({"alg": "none", "kid": "rsa-1"}, claims(), None), "algorithm 'none'")
    pem = (
        keys["rsa"]
        .private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for secret in (pem, json.dumps(keys["rsa"].jwk).encode(), keys["rsa"].jwk["n"].encode()):
        refused(
            auth, forge({"alg": "HS256", "kid": "rsa-1"}, claims(), secret), "algorithm 'HS256'"
        )
    # An accepted algorithm, but not the one the key is for.
    refused(auth, keys["pss"].sign(claims(), alg="PS256", kid="ec-1"), "cannot verify PS256")


async def test_role_team_and_scope_claims_are_checked(auth: JwtAuth, keys: dict[str, Key]) -> None:
    k = keys["rsa"]
    refused(auth, k.sign(claims(role="superuser")), "role 'superuser' in the token's 'role' claim")
    refused(auth, k.sign(claims(role=["admin"])), "is not a modelplane role")
    refused(
        auth,
        k.sign(claims(team="marketing")),
        "team 'marketing' in the token is not known to modelplane",
    )
    refused(auth, k.sign(claims(team=None)), "no 'team' claim")
    refused(auth, k.sign(claims(scope={"inference": True})), "'scope' claim must be")


def _user(name: str, role: str, team_id: str | None, **over: Any) -> Account:
    fields: dict[str, Any] = {
        "id": f"id-{name}",
        "kind": "user",
        "name": name,
        "email": f"{name}@example.test",
        "team_id": team_id,
        "role": role,
        "disabled_at": None,
        "created_at": datetime.now(UTC),
        "created_by": "test",
        **over,
    }
    return Account(**fields)


async def test_tokens_of_modelplane_users(tmp_path: Path, keys: dict[str, Key]) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(keys["rsa"])))
    users = {
        u.name: u
        for u in (
            _user("alice", "viewer", "team-ops-id"),
            _user("root", "admin", None),
            _user("mallory", "team_admin", "team-ops-id", disabled_at=datetime.now(UTC)),
        )
    }
    asked: list[tuple[str, str | None]] = []

    def user_for(subject: str, email: str | None) -> Account | None:
        asked.append((subject, email))
        by_email = {u.email: u for u in users.values()}
        return users.get(subject) or (by_email.get(email.lower()) if email else None)

    a = JwtAuth(settings(jwks_file=path), TEAMS.get, user_for)
    await a.start()
    try:
        k = keys["rsa"]
        # The user's role and team fill in for missing claims; the caller names the user.
        alice = a.verify(k.sign(claims(role=None, team=None)))
        assert (alice.role, alice.team_id, alice.account) == ("viewer", "team-ops-id", "user:alice")
        assert alice.actor == f"user:alice (jwt:{ISSUER}#alice)"
        # A team claim wins; a role claim never lifts the caller above the user's role.
        claimed = a.verify(k.sign(claims(role="member", team="research")))
        assert (claimed.role, claimed.team_id) == ("viewer", "team-research-id")
        root_as_member = a.verify(k.sign(claims(sub="root", role="member", team="research")))
        assert root_as_member.role == "member"
        root = a.verify(k.sign(claims(sub="root", role=None, team=None)))
        assert root.is_admin and root.team_id is None and root.account == "user:root"
        # Matched by email when the subject names no user.
        by_email = a.verify(k.sign(claims(sub="00u1x", email="ALICE@example.test", role=None)))
        assert by_email.account == "user:alice" and by_email.subject == f"jwt:{ISSUER}#00u1x"
        # A disabled user is refused, however it is named.
        refused(a, k.sign(claims(sub="mallory")), "user:mallory is disabled")
        refused(a, k.sign(claims(sub="x", email="mallory@example.test")), "is disabled")
        # Anyone else is mapped from the claims alone, as before.
        stranger = a.verify(k.sign(claims(sub="zed", role=None)))
        assert (stranger.role, stranger.account) == ("member", None)
        assert asked[-1] == ("zed", None)
    finally:
        await a.close()


async def test_unknown_key_id_is_refused(auth: JwtAuth, keys: dict[str, Key]) -> None:
    refused(auth, keys["rotated"].sign(claims()), "key id 'rsa-3' is not in the JWKS")
    listed_kid = forge({"alg": "RS256", "kid": ["rsa-1"]}, claims(), b"")
    refused(auth, listed_kid, "Key ID header parameter must be a string")


async def test_jwks_from_url_and_key_rotation(idp: JwksServer, keys: dict[str, Key]) -> None:
    a = JwtAuth(settings(jwks_url=idp.url), TEAMS.get)
    await a.start()
    try:
        assert a.verify(keys["rsa"].sign(claims())).team_id == "team-research-id"
        assert idp.fetches == 1
        idp.body = jwks(keys["rsa"], keys["rotated"])
        new = keys["rotated"].sign(claims())
        refused(a, new, "retry shortly")
        assert a._refresher.woken, "an unknown key id wakes the refresh task"
        await until(lambda: verifies(a, new), "the rotated key after the triggered refresh")
        assert idp.fetches == 2
        # Request handlers may run in worker threads: the refresh is scheduled thread-safely.
        a._kid_refresh_at = -math.inf
        idp.body = jwks(keys["rotated"], keys["ec"])
        with pytest.raises(AuthenticationError, match="key id 'ec-1'"):
            await asyncio.to_thread(a.verify, keys["ec"].sign(claims()))
        await until(lambda: verifies(a, keys["ec"].sign(claims())), "a refresh from a thread")
        assert idp.fetches == 3
        # Another unknown key id within 30 s schedules no further fetch.
        refused(a, keys["rsa"].sign(claims(), kid="nope"), "key id 'nope'")
        assert not a._refresher.woken
    finally:
        await a.close()


async def test_periodic_refresh_keeps_the_last_keys_when_it_fails(
    idp: JwksServer, keys: dict[str, Key], caplog: pytest.LogCaptureFixture
) -> None:
    a = JwtAuth(settings(jwks_url=idp.url, jwks_refresh_s=0.02), TEAMS.get)
    await a.start()
    try:
        idp.status = 503
        await until(lambda: idp.fetches >= 3, "periodic refreshes")
        assert a.verify(keys["rsa"].sign(claims()))
        assert "answered HTTP 503" in caplog.text
        idp.status, idp.body = 200, jwks(keys["ec"])
        await until(lambda: verifies(a, keys["ec"].sign(claims())), "the new key set")
    finally:
        await a.close()


async def test_unusable_jwks_entries_are_skipped(tmp_path: Path, keys: dict[str, Key]) -> None:
    junk: list[Any] = [
        "not a key",
        {"kty": "RSA", "kid": "no-modulus"},
        {**keys["ec"].jwk, "kid": ["listed"]},
        {**keys["ec"].jwk, "use": "enc"},
        {**keys["ec"].jwk, "alg": ["ES256"]},
        {"kty": "oct", "k": b64(b"x" * 32), "kid": "shared-secret", "alg": "HS256"},
    ]
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [*junk, keys["rsa"].jwk]}))
    a = JwtAuth(settings(jwks_file=path), TEAMS.get)
    await a.start()
    try:
        assert a.verify(keys["rsa"].sign(claims()))
        refused(a, keys["ec"].sign(claims()), "key id 'ec-1' is not in the JWKS")
        hs = forge({"alg": "HS256", "kid": "shared-secret"}, claims(), b"x" * 32)
        refused(a, hs, "algorithm 'HS256' is not accepted")
    finally:
        await a.close()


async def test_start_fails_clearly(tmp_path: Path, idp: JwksServer, keys: dict[str, Key]) -> None:
    cases: list[tuple[JwtSettings, str]] = [
        (settings(jwks_file=tmp_path / "missing.json"), "cannot read the JWKS file"),
        (settings(jwks_url=idp.url.replace("jwks.json", "nope")), "answered HTTP 404"),
        (settings(jwks_url=idp.url, algorithms=["ES256"]), "no usable key for ES256"),
    ]
    (tmp_path / "bad.json").write_text("{")
    cases.append((settings(jwks_file=tmp_path / "bad.json"), "not valid JSON"))
    secret = {"keys": [{"kty": "oct", "k": b64(b"x" * 32), "kid": "s"}]}
    (tmp_path / "oct.json").write_text(json.dumps(secret))
    cases.append((settings(jwks_file=tmp_path / "oct.json", algorithms=["RS256"]), "no usable key"))
    for s, message in cases:
        a = JwtAuth(s, TEAMS.get)
        with pytest.raises(ModelplaneError, match=message):
            await a.start()


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"algorithms": ["none"]}, "'none' cannot be accepted"),
        ({"algorithms": ["RS256", "HS256"]}, "'HS256' cannot be accepted"),
        ({"algorithms": []}, "at least one"),
        ({"jwks_url": "http://idp.example.test/jwks.json"}, "must be https"),
        ({"jwks_url": "https://idp.example.test/jwks", "jwks_file": "/x.json"}, "exactly one"),
        ({}, "exactly one"),
        ({"jwks_file": "/x.json", "secret": "x"}, "Extra inputs"),
        ({"jwks_file": "/x.json", "default_role": "root"}, "default_role"),
    ],
)
def test_settings_refuse_unsafe_or_ambiguous_configs(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        JwtSettings(issuer=ISSUER, **over)


def test_looks_like_jwt(keys: dict[str, Key]) -> None:
    assert looks_like_jwt(keys["rsa"].sign(claims()))
    assert looks_like_jwt(forge({"alg": "none"}, claims(), None))
    for not_jwt in (mint(), mint(), "mp-abc.def.ghi!", "a.b", "", "a.b.c.d", "a..c"):
        assert not looks_like_jwt(not_jwt), not_jwt
