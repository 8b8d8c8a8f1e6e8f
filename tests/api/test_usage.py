"""``GET /api/usage``: totals per team, key, endpoint, route and day, as JSON and CSV,
each caller seeing only what its role allows."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.gateway.accounts import Key, chat_body, make_key, make_team
from tests.gateway.fakes import FakeUpstream
from tests.helpers import Server, eventually


class World:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.team_a, self.team_b = make_team(server), make_team(server)
        self.a1 = make_key(server, team=self.team_a)
        self.a2 = make_key(server, team=self.team_a)
        self.viewer = make_key(server, team=self.team_a, role="viewer")
        self.b1 = make_key(server, team=self.team_b)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("home")
    fake = FakeUpstream("up")
    server = Server(
        home, f"sqlite:///{home / 'modelplane.db'}", MODELPLANE_USAGE_FLUSH_INTERVAL_S="0.1"
    ).start()
    try:
        for name, price in (("up", 1000.0), ("other", 10_000.0)):
            resp = server.http.post(
                "/api/endpoints",
                json={
                    "name": name,
                    "provider": "openai",
                    "model": "m",
                    "options": {
                        "base_url": fake.base_url,
                        "price": {"input_per_1m": price, "output_per_1m": price},
                    },
                },
            )
            assert resp.status_code == 201, resp.text
        w = World(server)
        traffic: list[tuple[Key, str, str]] = [
            *[(w.a1, "up", "prompt=1 tokens=2")] * 3,
            *[(w.a2, "other", "prompt=2 tokens=2")] * 2,
            (w.a2, "other", "mode=bad_request"),
            *[(w.b1, "up", "prompt=5 tokens=5")] * 4,
        ]
        for key, model, words in traffic:
            with key.http(server) as http:
                http.post("/v1/chat/completions", json={**chat_body(words), "model": model})
        eventually(
            lambda: server.http.get("/api/usage").json()["total"]["requests"] == 10,
            timeout=10,
            what="the usage records",
        )
        yield w
    finally:
        server.close()
        fake.close()


def report(http: httpx.Client, **params: Any) -> dict[str, Any]:
    resp = http.get("/api/usage", params=params)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def test_admins_see_every_team_grouped_every_way(world: World) -> None:
    http = world.server.http
    by_team = {r["team"]: r for r in report(http, group_by="team")["data"]}
    assert set(by_team) == {world.team_a, world.team_b}
    a, b = by_team[world.team_a], by_team[world.team_b]
    assert (a["requests"], a["errors"], a["prompt_tokens"], a["completion_tokens"]) == (6, 1, 7, 10)
    assert (b["requests"], b["errors"], b["prompt_tokens"], b["completion_tokens"]) == (
        4,
        0,
        20,
        20,
    )
    assert a["cost_usd"] == pytest.approx(3 * 3 * 0.001 + 2 * 4 * 0.01)
    assert b["cost_usd"] == pytest.approx(4 * 10 * 0.001)
    assert a["avg_latency_ms"] > 0 and a["total_tokens"] == 17

    by_key = {r["key"]: r["requests"] for r in report(http, group_by="key")["data"]}
    assert by_key == {world.a1.name: 3, world.a2.name: 3, world.b1.name: 4}
    by_endpoint = {r["endpoint"]: r["requests"] for r in report(http, group_by="endpoint")["data"]}
    assert by_endpoint == {"up": 7, "other": 3}  # the 400 was other's own answer
    by_route = {r["route"]: r["requests"] for r in report(http, group_by="route")["data"]}
    assert by_route == {"up": 7, "other": 3}
    days = report(http, group_by="day")["data"]
    assert [d["day"] for d in days] == [datetime.now(UTC).strftime("%Y-%m-%d")]
    total = report(http)["total"]
    assert total["requests"] == days[0]["requests"] == 10
    only_b = report(http, group_by="key", team=world.team_b)
    assert [r["key"] for r in only_b["data"]] == [world.b1.name]
    assert only_b["total"]["requests"] == 4


def test_time_bounds(world: World) -> None:
    http = world.server.http
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    earlier = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert report(http, since=later)["total"]["requests"] == 0
    assert report(http, until=earlier)["total"]["requests"] == 0
    assert report(http, since=earlier, until=later)["total"]["requests"] == 10
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert report(http, since=today)["total"]["requests"] == 10


def test_team_members_see_their_own_team_only(world: World) -> None:
    for key in (world.a1, world.viewer):
        with key.http(world.server) as http:
            mine = report(http, group_by="team")
            assert [r["team"] for r in mine["data"]] == [world.team_a]
            assert mine["total"]["requests"] == 6
            keys = {r["key"] for r in report(http, group_by="key")["data"]}
            assert keys == {world.a1.name, world.a2.name}
            assert http.get("/api/usage", params={"team": world.team_b}).status_code == 404
    with world.b1.http(world.server) as http:
        assert report(http)["total"]["requests"] == 4


def test_csv_export(world: World) -> None:
    resp = world.server.http.get("/api/usage", params={"group_by": "team", "format": "csv"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert list(rows[0]) == [
        "team",
        "team_id",
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "cost_usd",
        "avg_latency_ms",
    ]
    as_json = {r["team"]: r for r in report(world.server.http, group_by="team")["data"]}
    for row in rows:
        assert int(row["requests"]) == as_json[row["team"]]["requests"]
        assert float(row["cost_usd"]) == pytest.approx(as_json[row["team"]]["cost_usd"])
    overall = world.server.http.get("/api/usage", params={"format": "csv"}).text.splitlines()
    assert overall[0].startswith("requests,") and overall[1].startswith("10,")


def test_bad_parameters_are_named(world: World) -> None:
    resp = world.server.http.get("/api/usage", params={"group_by": "colour"})
    assert resp.status_code == 400 and "group_by" in resp.json()["detail"]
    resp = world.server.http.get("/api/usage", params={"since": "yesterday"})
    assert resp.status_code == 400 and "since" in resp.json()["detail"]
