"""Users and service accounts: the control API, keys acting for an account (role clamped,
refused while the account is disabled, revoked with it), and audit events that name the
account. Against a real server on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import _pg_database
from tests.helpers import ADMIN_KEY, Server, eventually


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home")
    urls = (
        iter([f"sqlite:///{home / 'modelplane.db'}"])
        if request.param == "sqlite"
        else _pg_database()
    )
    for url in urls:
        srv = Server(home, url).start()
        try:
            yield srv
        finally:
            srv.close()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _team(server: Server) -> str:
    name = _name("team")
    assert server.http.post("/api/teams", json={"name": name}).status_code == 201
    return name


def _made(resp: httpx.Response) -> dict[str, Any]:
    assert resp.status_code == 201, resp.text
    data: dict[str, Any] = resp.json()
    return data


def _as(server: Server, secret: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url, headers={"authorization": f"Bearer {secret}"}, timeout=30
    )


def _events(server: Server, **params: Any) -> list[dict[str, Any]]:
    resp = server.http.get("/api/audit", params={"limit": 1000, **params})
    assert resp.status_code == 200, resp.text
    data: list[dict[str, Any]] = resp.json()["data"]
    return data


def test_users_and_service_accounts_through_the_control_api(server: Server) -> None:
    team = _team(server)
    alice, bot = _name("alice"), _name("bot")
    user = _made(
        server.http.post(
            "/api/users", json={"name": alice, "team": team, "email": " Alice@Example.TEST "}
        )
    )
    assert user["kind"] == "user" and user["email"] == "alice@example.test"
    assert (user["team"], user["role"], user["disabled"]) == (team, "member", False)
    assert user["created_by"].startswith("key:")
    service = _made(
        server.http.post(
            "/api/service-accounts", json={"name": bot, "team": team, "role": "viewer"}
        )
    )
    assert service["kind"] == "service" and "email" not in service
    assert server.http.get(f"/api/users/{alice}").json() == user
    assert alice in {u["name"] for u in server.http.get("/api/users").json()["data"]}
    assert bot not in {u["name"] for u in server.http.get("/api/users").json()["data"]}
    assert server.http.get(f"/api/service-accounts/{alice}").status_code == 404

    # One namespace for both kinds; emails are unique too.
    for path, body in (
        ("/api/users", {"name": alice, "team": team}),
        ("/api/service-accounts", {"name": alice, "team": team}),
        ("/api/users", {"name": _name("x"), "team": team, "email": "ALICE@example.test"}),
    ):
        taken = server.http.post(path, json=body)
        assert taken.status_code == 409, taken.text
        assert taken.headers["content-type"] == "application/problem+json"
    # Bad input: 400 problem+json naming the field.
    for path, body, param in (
        ("/api/users", {"name": "Not A Name", "team": team}, "name"),
        ("/api/users", {"name": "x", "team": team, "role": "root"}, "role"),
        ("/api/users", {"name": "x", "team": team, "email": "nope"}, "email"),
        ("/api/users", {"name": "x"}, "team"),
        ("/api/users", {"name": "x", "team": "no-such-team"}, "team"),
        ("/api/service-accounts", {"name": "x", "team": team, "email": "a@b.c"}, "email"),
    ):
        bad = server.http.post(path, json=body)
        assert bad.status_code == 400, (body, bad.text)
        assert bad.json()["param"] == param
    assert server.http.get("/api/users/x").status_code == 404
    assert (
        server.http.patch(f"/api/service-accounts/{bot}", json={"email": "a@b.c"}).status_code
        == 400
    )

    # A platform admin needs no team; it must keep the admin role then.
    root = _made(server.http.post("/api/users", json={"name": _name("root"), "role": "admin"}))
    assert root["team"] is None
    demoted = server.http.patch(f"/api/users/{root['name']}", json={"role": "member"})
    assert demoted.status_code == 400 and demoted.json()["param"] == "role"

    changed = server.http.patch(f"/api/users/{alice}", json={"email": None, "role": "viewer"})
    assert changed.status_code == 200
    assert (changed.json()["email"], changed.json()["role"]) == (None, "viewer")
    # A team with accounts cannot be deleted.
    kept = server.http.delete(f"/api/teams/{team}")
    assert kept.status_code == 409 and "accounts" in kept.json()["detail"]
    for path, name in (("users", alice), ("service-accounts", bot)):
        assert server.http.delete(f"/api/{path}/{name}").status_code == 204
        assert server.http.get(f"/api/{path}/{name}").status_code == 404
        assert server.http.delete(f"/api/{path}/{name}").status_code == 404
    assert server.http.delete(f"/api/teams/{team}").status_code == 204

    actions = [(e["action"], e["resource_name"]) for e in _events(server, action="user.*")]
    assert ("user.create", alice) in actions and ("user.update", alice) in actions
    assert ("user.delete", alice) in actions
    (update,) = [e for e in _events(server, action="user.update", resource_name=alice)]
    assert update["before"]["role"] == "member" and update["after"]["role"] == "viewer"
    assert [
        e["action"] for e in _events(server, resource_type="service_account", resource_name=bot)
    ] == [
        "service_account.delete",
        "service_account.create",
    ]


def test_a_keys_role_is_never_above_its_accounts(server: Server) -> None:
    team = _team(server)
    viewer_bot, member_bot = _name("viewer-bot"), _name("member-bot")
    for name, role in ((viewer_bot, "viewer"), (member_bot, "member")):
        _made(
            server.http.post(
                "/api/service-accounts", json={"name": name, "team": team, "role": role}
            )
        )
    # Clamped at creation: a "member" key of a viewer account is a viewer key.
    key = _made(server.http.post("/api/keys", json={"name": "k", "account": viewer_bot}))
    assert (key["role"], key["team"], key["account"]) == ("viewer", team, viewer_bot)
    listed = {k["id"]: k for k in server.http.get("/api/keys").json()["data"]}
    assert listed[key["id"]]["account"] == viewer_bot
    with _as(server, key["key"]) as c:
        assert c.get("/api/teams").status_code == 200
        assert c.get("/v1/models").status_code == 403
    # A key is in its account's team.
    other = _team(server)
    wrong = server.http.post("/api/keys", json={"name": "k", "account": member_bot, "team": other})
    assert wrong.status_code == 400 and wrong.json()["param"] == "team"

    # Clamped at authentication when the account's role is lowered later.
    key = _made(server.http.post("/api/keys", json={"name": "k", "account": member_bot}))
    assert key["role"] == "member"
    with _as(server, key["key"]) as c:
        assert c.get("/v1/models").status_code == 200
        lowered = server.http.patch(f"/api/service-accounts/{member_bot}", json={"role": "viewer"})
        assert lowered.status_code == 200
        # This process applied the change before answering (others: within a second).
        refused = c.get("/v1/models")
        assert refused.status_code == 403 and "viewer" in refused.json()["error"]["message"]

        def listed_roles() -> tuple[str, str]:
            k = {k["id"]: k for k in server.http.get("/api/keys").json()["data"]}[key["id"]]
            return k["role"], k["effective_role"]

        # The listing shows both: the key's own role, and what it can do now.
        eventually(lambda: listed_roles() == ("member", "viewer"), timeout=5, what="the view")
        server.http.patch(f"/api/service-accounts/{member_bot}", json={"role": "admin"})
        assert c.get("/v1/models").status_code == 200
        assert c.post("/api/teams", json={"name": _name("t")}).status_code == 403  # still member


def test_a_disabled_accounts_keys_are_refused_and_a_deleted_ones_revoked(server: Server) -> None:
    team = _team(server)
    bob = _name("bob")
    _made(server.http.post("/api/users", json={"name": bob, "team": team}))
    key = _made(server.http.post("/api/keys", json={"name": "laptop", "account": bob}))
    with _as(server, key["key"]) as c:
        assert c.get("/v1/models").status_code == 200
        assert server.http.patch(f"/api/users/{bob}", json={"disabled": True}).status_code == 200
        refused = c.get("/v1/models")
        assert refused.status_code == 401
        assert f"user:{bob}" in refused.json()["error"]["message"]
        assert "disabled" in refused.json()["error"]["message"]
        problem = c.get("/api/teams")
        assert problem.status_code == 401
        assert problem.headers["content-type"] == "application/problem+json"
        # No new keys for a disabled account.
        assert server.http.post("/api/keys", json={"name": "x", "account": bob}).status_code == 409
        assert server.http.patch(f"/api/users/{bob}", json={"disabled": False}).status_code == 200
        assert c.get("/v1/models").status_code == 200

        assert server.http.delete(f"/api/users/{bob}").status_code == 204
        gone = c.get("/v1/models")
        assert gone.status_code == 401 and "revoked" in gone.json()["error"]["message"]
    listed = {k["id"]: k for k in server.http.get("/api/keys").json()["data"]}
    assert listed[key["id"]]["revoked_at"] is not None
    assert listed[key["id"]]["account"] is None
    revoked = _events(server, action="key.revoke", resource_name=key["id"])
    assert len(revoked) == 1 and revoked[0]["after"]["revoked_at"] is not None
    assert key["key"] not in str(_events(server))


def test_audit_events_name_the_account_behind_the_key(server: Server) -> None:
    team = _team(server)
    carol = _name("carol")
    _made(server.http.post("/api/users", json={"name": carol, "team": team, "role": "team_admin"}))
    # Asked for admin by an admin, but clamped to carol's team_admin.
    key = _made(
        server.http.post("/api/keys", json={"name": "carol", "role": "admin", "account": carol})
    )
    assert key["role"] == "team_admin"
    actor = f"user:{carol} (key:{key['id']})"
    with _as(server, key["key"]) as c:
        bot = _made(c.post("/api/service-accounts", json={"name": _name("bot")}))
        assert bot["created_by"] == actor and bot["team"] == team
        assert (
            c.patch(f"/api/service-accounts/{bot['name']}", json={"disabled": True}).status_code
            == 200
        )
    mine = _events(server, actor=f"user:{carol}*")
    assert [e["action"] for e in mine] == ["service_account.update", "service_account.create"]
    assert {e["actor"] for e in mine} == {actor}
    assert _events(server, actor=actor) == mine
    assert _events(server, actor=f"user:{carol}") == []  # exact unless it ends in *
    assert key["key"] not in str(mine) and ADMIN_KEY not in str(_events(server))
