"""The audit log: every control-plane change is exactly one event (who, what, before →
after, the request's id), written in the change's own transaction, readable through
``GET /api/audit`` by admins, and by team admins for their own team; no event ever
holds a secret. Against a real server on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelplane.config import Settings
from modelplane.control.audit import REDACTED, AuditLog, scrub
from modelplane.control.keys import hash_key
from modelplane.control.teams import TeamService
from modelplane.errors import Conflict
from modelplane.identity import Caller
from modelplane.store.db import Database
from modelplane.store.repos import AuditRepo
from tests.helpers import ADMIN_KEY, Server

# Nothing listens there: provider endpoints are only stored, never called, in these tests.
UPSTREAM = "http://127.0.0.1:9/v1"
# Shaped like no token the log redaction knows, so only "never recorded" keeps it out.
SECRET_VALUES = ("plain-credential-value-one", "plain-credential-value-two")


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "home", database_url).start()
    try:
        yield srv
    finally:
        srv.close()


def call(
    server: Server, method: str, path: str, rid: str, key: str = ADMIN_KEY, **kw: Any
) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}", "x-request-id": rid}
    return server.http.request(method, path, headers=headers, **kw)


def audit(server: Server, key: str = ADMIN_KEY, **params: Any) -> httpx.Response:
    return server.http.get("/api/audit", params=params, headers={"authorization": f"Bearer {key}"})


def events(server: Server, key: str = ADMIN_KEY, **params: Any) -> list[dict[str, Any]]:
    resp = audit(server, key, limit=1000, **params)
    assert resp.status_code == 200, resp.text
    data: list[dict[str, Any]] = resp.json()["data"]
    return data


def endpoint(name: str) -> dict[str, Any]:
    return {"name": name, "provider": "openai", "model": "m", "options": {"base_url": UPSTREAM}}


def admin_subject(server: Server) -> str:
    keys = server.http.get("/api/keys").json()["data"]
    (admin,) = [k for k in keys if k["prefix"] == ADMIN_KEY[:10]]
    return f"key:{admin['id']}"


def test_every_change_is_one_event_with_actor_before_after_and_request_id(
    server: Server,
) -> None:
    ok: dict[str, httpx.Response] = {}

    def change(rid: str, method: str, path: str, status: int, **kw: Any) -> dict[str, Any]:
        resp = call(server, method, path, rid, **kw)
        assert resp.status_code == status, resp.text
        assert resp.headers["x-request-id"] == rid
        ok[rid] = resp
        return resp.json() if resp.content else {}

    team = change("r-team-create", "POST", "/api/teams", 201, json={"name": "red"})
    key = change(
        "r-key-create",
        "POST",
        "/api/keys",
        201,
        json={"name": "red-admin", "role": "team_admin", "team": "red"},
    )
    for n, value in enumerate(SECRET_VALUES):
        status = 201 if n == 0 else 204
        change(
            f"r-secret-put-{n}", "PUT", "/api/secrets/UPSTREAM_KEY", status, json={"value": value}
        )
    body = endpoint("ext")
    body["options"]["credentials"] = {"api_key": "secret:UPSTREAM_KEY"}
    change("r-endpoint-create", "POST", "/api/endpoints", 201, json=body)
    change("r-endpoint-update", "PATCH", "/api/endpoints/ext", 200, json={"model": "m2"})
    route = {"targets": [{"endpoint": "ext"}]}
    change("r-route-create", "PUT", "/api/routes/chat", 201, json=route)
    change("r-route-update", "PUT", "/api/routes/chat", 200, json={**route, "aliases": ["c"]})
    same = call(server, "PUT", "/api/routes/chat", "n-again", json={**route, "aliases": ["c"]})
    assert same.status_code == 200  # a write that changes nothing
    change("r-route-delete", "DELETE", "/api/routes/chat", 204)
    change("r-endpoint-delete", "DELETE", "/api/endpoints/ext", 204)
    change("r-key-revoke", "DELETE", f"/api/keys/{key['id']}", 200)
    change("r-secret-delete", "DELETE", "/api/secrets/UPSTREAM_KEY", 204)
    change("r-team-delete", "DELETE", "/api/teams/red", 204)

    # Changes that fail record nothing (nor did the write above that changed nothing).
    failed = {
        "f-options": ("POST", "/api/endpoints", {**endpoint("bad"), "options": {"base_url": 1}}),
        "f-engine": ("POST", "/api/endpoints", {"name": "bad", "engine": "nope", "model": "m"}),
        "f-key-role": ("POST", "/api/keys", {"name": "k", "role": "root"}),
        "f-team-name": ("POST", "/api/teams", {"name": "Not A Name"}),
        "f-route-target": ("PUT", "/api/routes/r", {"targets": [{"endpoint": "missing"}]}),
    }
    for rid, (method, path, payload) in failed.items():
        assert call(server, method, path, rid, json=payload).status_code in (400, 404, 422)
    assert call(server, "DELETE", "/api/secrets/UPSTREAM_KEY", "f-gone").status_code == 404

    every = events(server)
    by_rid: dict[str, list[dict[str, Any]]] = {}
    for e in every:
        by_rid.setdefault(e["request_id"], []).append(e)
    for rid in ok:
        assert len(by_rid.get(rid, [])) == 1, (rid, by_rid.get(rid))
    assert not by_rid.keys() & {*failed, "f-gone", "n-again"}

    def one(rid: str) -> dict[str, Any]:
        return by_rid[rid][0]

    me = admin_subject(server)
    for rid in ok:
        assert one(rid)["actor"] == me and one(rid)["actor_team_id"] is None

    e = one("r-team-create")
    assert (e["action"], e["resource_type"], e["resource_name"]) == ("team.create", "team", "red")
    assert e["before"] is None and e["after"]["id"] == team["id"] == e["team_id"]

    e = one("r-key-create")
    assert (e["action"], e["resource_type"], e["resource_name"]) == ("key.create", "key", key["id"])
    assert e["before"] is None and e["team_id"] == team["id"]
    assert e["after"]["prefix"] == key["prefix"] and e["after"]["role"] == "team_admin"
    e = one("r-key-revoke")
    assert e["action"] == "key.revoke" and e["before"]["revoked_at"] is None
    assert e["after"]["revoked_at"] is not None

    for n in range(len(SECRET_VALUES)):
        e = one(f"r-secret-put-{n}")
        assert (e["action"], e["resource_name"], e["team_id"]) == (
            "secret.put",
            "UPSTREAM_KEY",
            None,
        )
        assert e["before"] == (None if n == 0 else {"name": "UPSTREAM_KEY"})
        assert e["after"] == {"name": "UPSTREAM_KEY", "value_changed": True}
    e = one("r-secret-delete")
    assert e["action"] == "secret.delete" and e["after"] is None

    e = one("r-endpoint-create")
    assert (e["action"], e["resource_name"], e["before"]) == ("endpoint.create", "ext", None)
    # Credential references are kept: they name where a secret is, not what it is.
    assert e["after"]["options"]["credentials"] == {"api_key": "secret:UPSTREAM_KEY"}
    e = one("r-endpoint-update")
    assert e["action"] == "endpoint.update"
    assert (e["before"]["model"], e["after"]["model"]) == ("m", "m2")
    e = one("r-endpoint-delete")
    assert e["action"] == "endpoint.delete" and e["after"] is None
    assert e["before"]["model"] == "m2"

    e = one("r-route-create")
    assert (e["action"], e["resource_type"], e["before"]) == ("route.put", "route", None)
    assert e["after"]["targets"][0]["endpoint"] == "ext"
    e = one("r-route-update")
    assert e["before"]["aliases"] == [] and e["after"]["aliases"] == ["c"]
    e = one("r-route-delete")
    assert e["action"] == "route.delete" and e["after"] is None

    e = one("r-team-delete")
    assert e["action"] == "team.delete" and e["before"]["name"] == "red"

    # The first admin key was minted at start, by the server itself, outside any request.
    (boot,) = [e for e in every if e["actor"] == "system:bootstrap"]
    assert boot["action"] == "key.create" and boot["request_id"] is None

    blob = json.dumps(every)
    for secret in (
        ADMIN_KEY,
        key["key"],
        hash_key(key["key"]),
        hash_key(ADMIN_KEY),
        *SECRET_VALUES,
    ):
        assert secret not in blob


def test_filters_and_paging(server: Server) -> None:
    for name in ("a", "b", "c"):
        assert server.http.post("/api/endpoints", json=endpoint(name)).status_code == 201
    assert server.http.patch("/api/endpoints/b", json={"model": "m2"}).status_code == 200
    assert (
        server.http.put("/api/routes/r", json={"targets": [{"endpoint": "a"}]}).status_code == 201
    )
    assert server.http.post("/api/teams", json={"name": "t"}).status_code == 201

    every = events(server)
    assert [e["id"] for e in every] == sorted((e["id"] for e in every), reverse=True)
    assert [e["at"] for e in every] == sorted((e["at"] for e in every), reverse=True)

    def names(**params: Any) -> list[tuple[str, str]]:
        return [(e["action"], e["resource_name"]) for e in events(server, **params)]

    assert names(action="endpoint.create") == [
        ("endpoint.create", "c"),
        ("endpoint.create", "b"),
        ("endpoint.create", "a"),
    ]
    assert names(action="endpoint.*") == [
        ("endpoint.update", "b"),
        *names(action="endpoint.create"),
    ]
    assert names(resource_type="endpoint", resource_name="b") == [
        ("endpoint.update", "b"),
        ("endpoint.create", "b"),
    ]
    assert names(resource_type="route") == [("route.put", "r")]
    assert names(actor=admin_subject(server)) == [
        (e["action"], e["resource_name"]) for e in every if e["actor"] != "system:bootstrap"
    ]
    assert names(actor="key:nobody") == []

    # ``since`` includes its instant, ``until`` excludes it.
    pivot = next(e for e in every if e["action"] == "endpoint.update")
    since = names(since=pivot["at"])
    until = names(until=pivot["at"])
    assert ("endpoint.update", "b") in since and ("endpoint.update", "b") not in until
    assert len(since) + len(until) == len(every)

    # Pages of two, following the cursor, add up to the whole log.
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = audit(server, **params).json()
        assert len(page["data"]) <= 2
        seen += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == every

    for bad in ({"limit": 0}, {"limit": 1001}, {"since": "yesterday"}):
        assert audit(server, **bad).status_code in (400, 422), bad


def test_team_admins_see_their_team_only_and_others_none(server: Server) -> None:
    keys: dict[tuple[str, str], dict[str, Any]] = {}
    team_ids = {}
    for team in ("red", "blue"):
        team_ids[team] = server.http.post("/api/teams", json={"name": team}).json()["id"]
        for role in ("team_admin", "member", "viewer"):
            resp = server.http.post(
                "/api/keys", json={"name": f"{team}-{role}", "role": role, "team": team}
            )
            keys[team, role] = resp.json()
    for team in ("red", "blue"):
        resp = call(
            server,
            "POST",
            "/api/endpoints",
            f"{team}-ep",
            keys[team, "team_admin"]["key"],
            json=endpoint(f"{team}-ep"),
        )
        assert resp.status_code == 201, resp.text
    assert server.http.post("/api/endpoints", json=endpoint("platform")).status_code == 201
    assert server.http.put("/api/secrets/S", json={"value": "v"}).status_code == 201

    red = events(server, keys["red", "team_admin"]["key"])
    assert red and {e["team_id"] for e in red} == {team_ids["red"]}
    assert {(e["action"], e["resource_name"]) for e in red} == {
        ("team.create", "red"),
        *{("key.create", keys["red", role]["id"]) for role in ("team_admin", "member", "viewer")},
        ("endpoint.create", "red-ep"),
    }
    (made,) = [e for e in red if e["action"] == "endpoint.create"]
    assert made["actor"] == f"key:{keys['red', 'team_admin']['id']}"
    assert made["actor_team_id"] == team_ids["red"] and made["request_id"] == "red-ep"
    assert made["after"]["team"] == "red" and made["team"] == "red"
    # Filters narrow within what the caller may see, never beyond it.
    assert events(server, keys["red", "team_admin"]["key"], resource_name="blue-ep") == []
    assert len(events(server, resource_name="blue-ep")) == 1

    for role in ("member", "viewer"):
        assert audit(server, keys["red", role]["key"]).status_code == 403


def test_routes_from_modelplane_yaml_are_recorded_as_system_config(
    database_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "modelplane.yaml"
    config.write_text("routes:\n  chat:\n    targets: [{endpoint: a}]\n")
    home = tmp_path / "home"

    def serve() -> Server:
        return Server(home, database_url, MODELPLANE_CONFIG=str(config)).start()

    srv = serve()
    try:
        assert srv.http.post("/api/endpoints", json=endpoint("a")).status_code == 201
    finally:
        srv.close()
    for _ in range(2):  # applied once; the same file again changes nothing
        srv = serve()
        try:
            (put,) = events(srv, resource_type="route")
        finally:
            srv.close()
    assert (put["action"], put["actor"], put["request_id"]) == ("route.put", "system:config", None)
    assert put["before"] is None and put["after"]["source"] == "config"
    config.write_text("routes: {}\n")
    srv = serve()
    try:
        removed, _ = events(srv, resource_type="route")
    finally:
        srv.close()
    assert (removed["action"], removed["actor"]) == ("route.delete", "system:config")
    assert removed["before"]["name"] == "chat" and removed["after"] is None


async def test_a_change_and_its_event_commit_together(database_url: str) -> None:
    db = Database(Settings(database_url=database_url).sqlalchemy_url)
    await db.migrate()
    try:
        teams, log = TeamService(db), AuditRepo(db)
        admin = Caller("key:test", "admin")
        with pytest.raises(RuntimeError):
            async with db.transaction():
                await teams.repo.add("rolled-back")
                await AuditLog(db).record(admin, "team.create", "team", "rolled-back", None, {})
                raise RuntimeError("the change fails after both writes")
        assert await teams.repo.all() == [] and await log.find() == []
        # A duplicate fails inside the transaction: no team, and no event.
        await teams.create(admin, "kept")
        with pytest.raises(Conflict):
            await teams.create(admin, "kept")
        assert [t.name for t in await teams.repo.all()] == ["kept"]
        assert [(e.action, e.resource_name) for e in await log.find()] == [("team.create", "kept")]
    finally:
        await db.close()


def test_scrub_keeps_references_and_blanks_secrets() -> None:
    token = "mp-" + "a" * 40
    assert scrub(
        {
            "options": {
                "credentials": {"api_key": "env:OPENAI_API_KEY", "access_token": "ya29.real"},
                "api_key": "literal",
                "headers": {"Authorization": f"Bearer {token}", "x-note": f"key {token}"},
                "max_tokens": 5,
                "list": ["sk-" + "b" * 30, ("t", 1)],
            },
            "prefix": token[:10],
        }
    ) == {
        "options": {
            "credentials": {"api_key": "env:OPENAI_API_KEY", "access_token": REDACTED},
            "api_key": REDACTED,
            "headers": {"Authorization": REDACTED, "x-note": f"key {REDACTED}"},
            "max_tokens": 5,
            "list": [REDACTED, ["t", 1]],
        },
        "prefix": token[:10],
    }
