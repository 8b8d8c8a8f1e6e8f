"""Two server processes sharing PostgreSQL and Redis: disabling or deleting an account
stops its keys on both within two seconds, like revoking a key does."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import Server, eventually

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def pair(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[tuple[Server, Server]]:
    servers: list[Server] = []
    try:
        for name in ("a", "b"):
            # At the default refresh interval (the other tests poll five times faster).
            env = {"MODELPLANE_REDIS_URL": redis_url, "MODELPLANE_CACHE_REFRESH_INTERVAL_S": "1.0"}
            servers.append(Server(tmp_path / name, database_url, **env).start())
        yield servers[0], servers[1]
    finally:
        for s in servers:
            s.close()


def _accepts(server: Server, secret: str) -> bool:
    """Whether the server's own key cache lets the key in (listing models needs no
    endpoint and is not rate limited)."""
    resp = httpx.get(
        server.base_url + "/v1/models", headers={"authorization": f"Bearer {secret}"}, timeout=5
    )
    assert resp.status_code in (200, 401), resp.text
    return resp.status_code == 200


@pytest.mark.parametrize("change", ["disable", "delete"])
def test_an_accounts_keys_are_refused_by_both_processes_within_two_seconds(
    pair: tuple[Server, Server], change: str
) -> None:
    a, b = pair
    team, user = f"team-{uuid.uuid4().hex[:8]}", f"user-{uuid.uuid4().hex[:8]}"
    assert a.http.post("/api/teams", json={"name": team}).status_code == 201
    # The user is made through one process and its key through the other.
    assert a.http.post("/api/users", json={"name": user, "team": team}).status_code == 201
    made = b.http.post("/api/keys", json={"name": "laptop", "account": user})
    assert made.status_code == 201, made.text
    secret = made.json()["key"]
    eventually(
        lambda: _accepts(a, secret) and _accepts(b, secret), timeout=10, what="the key everywhere"
    )

    if change == "disable":
        assert a.http.patch(f"/api/users/{user}", json={"disabled": True}).status_code == 200
    else:
        assert a.http.delete(f"/api/users/{user}").status_code == 204
    changed_at = time.monotonic()
    eventually(
        lambda: not _accepts(a, secret) and not _accepts(b, secret),
        timeout=5,
        interval=0.05,
        what="refusal",
    )
    assert time.monotonic() - changed_at <= 2.0
