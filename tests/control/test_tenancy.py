"""Tenant isolation, as a matrix: for each resource type and each role, team A's key
cannot list, read, change, delete or call team B's private resources; shared ones work
as granted. Users and service accounts follow the same rules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.gateway.fakes import FakeUpstream
from tests.helpers import Server

ROLES = ("team_admin", "member", "viewer")
ACCOUNTS = {"users": "user", "service-accounts": "bot"}
"""Account kinds by path, and the suffix of each team's account of that kind."""


class Tenants:
    def __init__(self, server: Server, fake: FakeUpstream) -> None:
        self.server = server
        self.fake = fake
        self.keys: dict[tuple[str, str], str] = {}
        self.key_ids: dict[tuple[str, str], str] = {}

    def as_(self, team: str, role: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.base_url,
            headers={"authorization": f"Bearer {self.keys[team, role]}"},
            timeout=30,
        )


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    home = tmp_path_factory.mktemp("home")
    server = Server(home, f"sqlite:///{home / 'modelplane.db'}").start()
    fake = FakeUpstream("up")
    t = Tenants(server, fake)
    try:
        for team in ("team-a", "team-b", "team-c"):
            assert server.http.post("/api/teams", json={"name": team}).status_code == 201
            for role in ROLES:
                resp = server.http.post(
                    "/api/keys", json={"name": f"{team}-{role}", "role": role, "team": team}
                )
                assert resp.status_code == 201, resp.text
                t.keys[team, role] = resp.json()["key"]
                t.key_ids[team, role] = resp.json()["id"]
        # One user and one service account per team: A's made by an admin, B's by B's
        # team admin.
        for path, suffix in ACCOUNTS.items():
            resp = server.http.post(f"/api/{path}", json={"name": f"a-{suffix}", "team": "team-a"})
            assert resp.status_code == 201, resp.text
            with t.as_("team-b", "team_admin") as b:
                resp = b.post(f"/api/{path}", json={"name": f"b-{suffix}"})
                assert resp.status_code == 201, resp.text
                assert resp.json()["team"] == "team-b"
        # Team B's resources, made by its team admin: private, and shared with A.
        with t.as_("team-b", "team_admin") as b:
            for name, shared in (("b-private", []), ("b-shared", ["team-a"])):
                resp = b.post(
                    "/api/endpoints",
                    json={
                        "name": name,
                        "provider": "openai",
                        "model": "m",
                        "options": {"base_url": fake.base_url},
                        "shared_with": shared,
                    },
                )
                assert resp.status_code == 201, resp.text
                assert resp.json()["team"] == "team-b"
                resp = b.put(
                    f"/api/routes/{name}-route",
                    json={"targets": [{"endpoint": name}], "shared_with": shared},
                )
                assert resp.status_code == 201, resp.text
        yield t
    finally:
        fake.close()
        server.close()


def _call(client: httpx.Client, model: str) -> httpx.Response:
    return client.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "x"}]},
    )


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("kind", ["endpoints", "routes"])
def test_another_teams_private_resources_do_not_exist_for_you(
    tenants: Tenants, role: str, kind: str
) -> None:
    name = "b-private" if kind == "endpoints" else "b-private-route"
    with tenants.as_("team-a", role) as a:
        listed = a.get(f"/api/{kind}")
        assert listed.status_code == 200
        assert name not in {r["name"] for r in listed.json()["data"]}
        assert a.get(f"/api/{kind}/{name}").status_code == 404
        change: dict[str, Any] = (
            {"replicas": 2} if kind == "endpoints" else {"targets": [{"endpoint": "b-private"}]}
        )
        if kind == "endpoints":
            changed = a.patch(f"/api/{kind}/{name}", json=change)
        else:
            changed = a.put(f"/api/{kind}/{name}", json=change)
        # Members and viewers may not write at all (403). A team admin is told it does
        # not exist, or (route names are global) that the name is taken: never more.
        writer = role == "team_admin"
        assert changed.status_code in ((404, 409) if writer else (403,))
        assert "shared" not in changed.text and "targets" not in changed.text
        deleted = a.delete(f"/api/{kind}/{name}")
        assert deleted.status_code == (404 if writer else 403)
        called = _call(a, name)
        assert called.status_code == (403 if role == "viewer" else 404)
        models = a.get("/v1/models")
        if role != "viewer":
            assert name not in {m["id"] for m in models.json()["data"]}
    # Still there for its own team.
    with tenants.as_("team-b", "member") as b:
        assert b.get(f"/api/{kind}/{name}").status_code == 200
        assert _call(b, name).status_code == 200


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("kind", ["endpoints", "routes"])
def test_shared_resources_can_be_used_and_read_but_not_changed(
    tenants: Tenants, role: str, kind: str
) -> None:
    name = "b-shared" if kind == "endpoints" else "b-shared-route"
    with tenants.as_("team-a", role) as a:
        assert name in {r["name"] for r in a.get(f"/api/{kind}").json()["data"]}
        assert a.get(f"/api/{kind}/{name}").status_code == 200
        assert _call(a, name).status_code == (403 if role == "viewer" else 200)
        assert a.delete(f"/api/{kind}/{name}").status_code == 403
        if role == "team_admin":
            assert "only its" in a.delete(f"/api/{kind}/{name}").json()["detail"]
    # Shared with A only: C does not see it.
    with tenants.as_("team-c", "member") as c:
        assert c.get(f"/api/{kind}/{name}").status_code == 404
        assert _call(c, name).status_code == 404


@pytest.mark.parametrize("role", ROLES)
def test_keys_of_another_team_are_out_of_reach(tenants: Tenants, role: str) -> None:
    b_key = tenants.key_ids["team-b", "member"]
    with tenants.as_("team-a", role) as a:
        listed = a.get("/api/keys")
        if role == "team_admin":
            ids = {k["id"] for k in listed.json()["data"]}
            assert b_key not in ids and tenants.key_ids["team-a", "member"] in ids
            assert {k["team"] for k in listed.json()["data"]} == {"team-a"}
            assert a.delete(f"/api/keys/{b_key}").status_code == 404
            # A team admin mints keys for its own team only, never admin keys.
            other = a.post("/api/keys", json={"name": "x", "team": "team-b"})
            assert other.status_code == 403
            assert a.post("/api/keys", json={"name": "x", "role": "admin"}).status_code == 403
            own = a.post("/api/keys", json={"name": "bot", "scopes": ["inference"]})
            assert own.status_code == 201 and own.json()["team"] == "team-a"
        else:
            assert listed.status_code == 403
            assert a.delete(f"/api/keys/{b_key}").status_code == 403
            assert a.post("/api/keys", json={"name": "x"}).status_code == 403
    # B's key still works.
    with tenants.as_("team-b", "member") as b:
        assert _call(b, "b-private").status_code == 200


def test_members_and_viewers_cannot_create_resources(tenants: Tenants) -> None:
    for role in ("member", "viewer"):
        with tenants.as_("team-a", role) as a:
            made = a.post(
                "/api/endpoints",
                json={
                    "name": f"x-{role}",
                    "provider": "openai",
                    "model": "m",
                    "options": {"base_url": tenants.fake.base_url},
                },
            )
            assert made.status_code == 403
            assert a.post("/api/teams", json={"name": "mine"}).status_code == 403
            assert a.put("/api/secrets/x", json={"value": "v"}).status_code == 403


def test_teams_see_only_themselves_and_admins_see_all(tenants: Tenants) -> None:
    with tenants.as_("team-a", "member") as a:
        assert [t["name"] for t in a.get("/api/teams").json()["data"]] == ["team-a"]
    names = {t["name"] for t in tenants.server.http.get("/api/teams").json()["data"]}
    assert {"team-a", "team-b", "team-c"} <= names
    # Admins see and can change every team's resources.
    assert tenants.server.http.get("/api/endpoints/b-private").status_code == 200


def test_inference_only_keys_cannot_use_the_control_api(tenants: Tenants) -> None:
    with tenants.as_("team-a", "team_admin") as a:
        key = a.post("/api/keys", json={"name": "ci", "scopes": ["inference"]}).json()["key"]
    with httpx.Client(
        base_url=tenants.server.base_url, headers={"authorization": f"Bearer {key}"}
    ) as ci:
        assert _call(ci, "b-shared").status_code == 200
        assert ci.get("/api/endpoints").status_code == 403
        assert ci.post("/api/keys", json={"name": "y"}).status_code == 403


def test_a_team_admin_manages_its_own_endpoints(tenants: Tenants) -> None:
    with tenants.as_("team-a", "team_admin") as a:
        made = a.post(
            "/api/endpoints",
            json={
                "name": "a-own",
                "provider": "openai",
                "model": "m",
                "options": {"base_url": tenants.fake.base_url},
            },
        )
        assert made.status_code == 201 and made.json()["team"] == "team-a"
        assert made.json()["shared_with"] == []
        shared = a.patch("/api/endpoints/a-own", json={"shared_with": ["*"]})
        assert shared.status_code == 200 and shared.json()["shared_with"] == ["*"]
        assert a.delete("/api/endpoints/a-own").status_code == 204


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("kind", list(ACCOUNTS))
def test_another_teams_accounts_do_not_exist_for_you(
    tenants: Tenants, role: str, kind: str
) -> None:
    theirs, mine = f"b-{ACCOUNTS[kind]}", f"a-{ACCOUNTS[kind]}"
    writer = role == "team_admin"
    with tenants.as_("team-a", role) as a:
        listed = a.get(f"/api/{kind}")
        assert listed.status_code == 200
        assert mine in {x["name"] for x in listed.json()["data"]}
        assert {x["team"] for x in listed.json()["data"]} == {"team-a"}
        seen = a.get(f"/api/{kind}/{theirs}")
        missing = a.get(f"/api/{kind}/no-such-account")
        assert seen.status_code == missing.status_code == 404
        assert seen.json()["detail"] == missing.json()["detail"].replace("no-such-account", theirs)
        changed = a.patch(f"/api/{kind}/{theirs}", json={"disabled": True, "role": "viewer"})
        assert changed.status_code == (404 if writer else 403)
        assert "team-b" not in changed.text
        assert a.delete(f"/api/{kind}/{theirs}").status_code == (404 if writer else 403)
        if writer:
            # A key for another team's account: as unknown as a missing account.
            made = a.post("/api/keys", json={"name": "x", "account": theirs})
            nobody = a.post("/api/keys", json={"name": "x", "account": "no-such-account"})
            assert made.status_code == nobody.status_code == 400
            assert made.json()["detail"] == nobody.json()["detail"].replace(
                "no-such-account", theirs
            )
    # Untouched, for its own team.
    with tenants.as_("team-b", "viewer") as b:
        got = b.get(f"/api/{kind}/{theirs}")
        assert got.status_code == 200
        assert (got.json()["disabled"], got.json()["role"]) == (False, "member")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("kind", list(ACCOUNTS))
def test_own_teams_accounts_are_read_by_all_and_managed_by_team_admins(
    tenants: Tenants, role: str, kind: str
) -> None:
    mine = f"a-{ACCOUNTS[kind]}"
    other_kind = next(k for k in ACCOUNTS if k != kind)
    with tenants.as_("team-a", role) as a:
        got = a.get(f"/api/{kind}/{mine}")
        assert got.status_code == 200 and got.json()["team"] == "team-a"
        assert a.get(f"/api/{other_kind}/{mine}").status_code == 404  # the other kind
        name = f"a-{role.replace('_', '-')}-{ACCOUNTS[kind]}"
        if role != "team_admin":
            assert a.post(f"/api/{kind}", json={"name": name}).status_code == 403
            assert a.patch(f"/api/{kind}/{mine}", json={"disabled": True}).status_code == 403
            assert a.delete(f"/api/{kind}/{mine}").status_code == 403
            return
        made = a.post(f"/api/{kind}", json={"name": name, "role": "team_admin"})
        assert made.status_code == 201, made.text
        assert made.json()["team"] == "team-a"
        assert made.json()["created_by"] == f"key:{tenants.key_ids['team-a', 'team_admin']}"
        taken = a.post(f"/api/{kind}", json={"name": name})
        assert taken.status_code == 409
        assert taken.headers["content-type"] == "application/problem+json"
        # Never in another team, never admin.
        assert a.post(f"/api/{kind}", json={"name": "x1", "team": "team-b"}).status_code == 403
        assert a.post(f"/api/{kind}", json={"name": "x2", "role": "admin"}).status_code == 403
        assert a.patch(f"/api/{kind}/{name}", json={"role": "admin"}).status_code == 403
        changed = a.patch(f"/api/{kind}/{name}", json={"role": "viewer", "disabled": True})
        assert changed.status_code == 200, changed.text
        assert (changed.json()["role"], changed.json()["disabled"]) == ("viewer", True)
        assert changed.json()["disabled_at"] is not None
        assert a.delete(f"/api/{kind}/{name}").status_code == 204
        assert a.get(f"/api/{kind}/{name}").status_code == 404


def test_a_team_admin_cannot_change_an_admin_account_of_its_team(tenants: Tenants) -> None:
    made = tenants.server.http.post(
        "/api/users", json={"name": "a-boss", "team": "team-a", "role": "admin"}
    )
    assert made.status_code == 201, made.text
    with tenants.as_("team-a", "team_admin") as a:
        assert a.get("/api/users/a-boss").status_code == 200
        changed = a.patch("/api/users/a-boss", json={"disabled": True})
        assert changed.status_code == 403 and "admin" in changed.json()["detail"]
        assert a.delete("/api/users/a-boss").status_code == 403
    assert tenants.server.http.get("/api/users/a-boss").json()["disabled"] is False
