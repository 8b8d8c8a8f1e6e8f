"""Auth v1: the first admin key, keys stored hashed, create / revoke, roles, expiry."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest

from tests.helpers import ADMIN_KEY, Server, eventually


def test_first_start_mints_an_admin_key_file_readable_only_by_its_owner(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    server = Server(home, f"sqlite:///{home / 'mp.db'}", MODELPLANE_ADMIN_KEY="").start()
    try:
        key_file = home / "admin.key"
        key = key_file.read_text().strip()
        assert key.startswith("mp-") and len(key) >= 43
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        r = httpx.get(server.base_url + "/api/keys", headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200
        assert [k["role"] for k in r.json()["data"]] == ["admin"]
        assert key not in r.text
        # Stored hashed: the secret appears nowhere in the database files.
        for f in home.glob("mp.db*"):
            assert key.encode() not in f.read_bytes()
        # Printed once: a restart does not mint another one.
        server.close()
        server = Server(home, f"sqlite:///{home / 'mp.db'}", MODELPLANE_ADMIN_KEY="").start()
        assert key_file.read_text().strip() == key
        log = (home / "server.log").read_text()
        assert "admin.key" in log, "the log says where the first admin key is"
        assert key not in log, "the key itself never goes to the log"
    finally:
        server.close()


def test_created_key_works_and_revoked_key_stops_working(shared_server: Server) -> None:
    resp = shared_server.http.post("/api/keys", json={"name": "team-a"})
    assert resp.status_code == 201
    created = resp.json()
    secret = created["key"]
    assert created["role"] == "member" and secret.startswith("mp-")
    assert created["prefix"] == secret[:10]
    client = shared_server.openai(key=secret)
    assert created["last_used_at"] is None
    assert [m.id for m in client.models.list()]

    def last_used() -> str | None:
        keys = shared_server.http.get("/api/keys").json()["data"]
        value: str | None = next(k for k in keys if k["id"] == created["id"])["last_used_at"]
        return value

    # Recorded off the request path, in batches.
    eventually(last_used, timeout=10, what="last_used_at to be recorded")
    listed = shared_server.http.get("/api/keys").json()["data"]
    assert secret not in str(listed)
    assert any(k["id"] == created["id"] for k in listed)

    assert shared_server.http.delete(f"/api/keys/{created['id']}").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_revoking_an_unknown_key_is_404_problem_json(shared_server: Server) -> None:
    resp = shared_server.http.delete("/api/keys/does-not-exist")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["status"] == 404


def test_member_keys_cannot_change_the_control_plane(shared_server: Server) -> None:
    secret = shared_server.http.post("/api/keys", json={"name": "m"}).json()["key"]
    h = {"authorization": f"Bearer {secret}"}
    base = shared_server.base_url
    assert httpx.get(base + "/api/endpoints", headers=h).status_code == 200
    r = httpx.post(base + "/api/endpoints", headers=h, json={"name": "x", "model": "smollm2"})
    assert r.status_code == 403
    assert httpx.post(base + "/api/keys", headers=h, json={"name": "y"}).status_code == 403
    assert httpx.delete(base + "/api/endpoints/smollm2", headers=h).status_code == 403
    assert shared_server.endpoint("smollm2")["replicas"] == 1


def test_expired_key_is_refused(shared_server: Server) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=2)
    r = shared_server.http.post("/api/keys", json={"name": "short", "expires_at": soon.isoformat()})
    assert r.status_code == 201
    h = {"authorization": f"Bearer {r.json()['key']}"}
    url = shared_server.base_url + "/v1/models"
    assert httpx.get(url, headers=h).status_code == 200
    eventually(
        lambda: httpx.get(url, headers=h).status_code == 401, timeout=10, what="the key to expire"
    )
    assert "expired" in httpx.get(url, headers=h).json()["error"]["message"]


def test_key_expiring_in_the_past_is_refused(shared_server: Server) -> None:
    r = shared_server.http.post(
        "/api/keys", json={"name": "old", "expires_at": "2020-01-01T00:00:00Z"}
    )
    assert r.status_code == 400
    assert r.json()["param"] == "expires_at"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/api/keys", {"name": "x", "role": "emperor"}, "role"),
        ("/api/keys", {"name": "x", "colour": "red"}, "colour"),
        ("/api/endpoints", {"name": "Bad Name!", "model": "smollm2"}, "name"),
        ("/api/endpoints", {"name": "ok", "model": "smollm2", "engine": "warp"}, "engine"),
        ("/api/endpoints", {"name": "ok", "model": "smollm2", "replicas": -1}, "replicas"),
        ("/api/endpoints", {"name": "ok"}, "model"),
    ],
)
def test_control_api_rejects_bad_input_with_problem_json(
    shared_server: Server, path: str, body: dict[str, object], param: str
) -> None:
    r = shared_server.http.post(path, json=body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["param"] == param
    names = [e["name"] for e in shared_server.http.get("/api/endpoints").json()["data"]]
    assert "ok" not in names


def test_duplicate_endpoint_is_409(shared_server: Server) -> None:
    r = shared_server.http.post("/api/endpoints", json={"name": "smollm2", "model": "smollm2"})
    assert r.status_code == 409
    assert "already exists" in r.json()["detail"]


def test_control_api_needs_a_key(shared_server: Server) -> None:
    r = httpx.get(shared_server.base_url + "/api/endpoints")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert ADMIN_KEY not in r.text


def test_malformed_json_and_wrong_methods_are_clear(shared_server: Server) -> None:
    r = shared_server.http.post(
        "/api/endpoints", content=b"{bad", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    r = shared_server.http.get("/v1/chat/completions")
    assert r.status_code == 405
    assert "POST" in r.json()["error"]["message"]
    r = shared_server.http.get("/api/nothing-here")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_bad_options_on_update_change_nothing(shared_server: Server) -> None:
    before = shared_server.endpoint("smollm2")
    r = shared_server.http.patch("/api/endpoints/smollm2", json={"options": {"top_p": 7}})
    assert r.status_code == 400 and "top_p" in r.json()["detail"]
    after = shared_server.endpoint("smollm2")
    assert after["generation"] == before["generation"]
    assert after["options"] == before["options"]


def test_rotating_a_key_replaces_its_secret_and_keeps_the_key(shared_server: Server) -> None:
    made = shared_server.http.post("/api/keys", json={"name": "rotating"}).json()
    old = made["key"]
    assert shared_server.openai(old).models.list() is not None
    rotated = shared_server.http.post(f"/api/keys/{made['id']}/rotate")
    assert rotated.status_code == 200
    new = rotated.json()["key"]
    assert new != old and rotated.json()["id"] == made["id"]
    assert rotated.json()["prefix"] == new[:10]
    assert shared_server.openai(new).models.list() is not None
    with pytest.raises(openai.AuthenticationError):
        shared_server.openai(old).models.list()
    events = shared_server.http.get("/api/audit", params={"action": "key.rotate"}).json()
    assert old not in str(events) and new not in str(events)
    assert shared_server.http.post("/api/keys/nope/rotate").status_code == 404
    shared_server.http.delete(f"/api/keys/{made['id']}")
    assert shared_server.http.post(f"/api/keys/{made['id']}/rotate").status_code == 400
