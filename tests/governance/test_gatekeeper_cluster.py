"""Two server processes behind one Redis and one PostgreSQL database: rate limits and
budgets hold across both."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.gateway.accounts import Key, chat_body, make_key, make_team
from tests.gateway.fakes import FakeUpstream
from tests.helpers import Server, eventually

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def fake() -> Iterator[FakeUpstream]:
    up = FakeUpstream("up")
    yield up
    up.close()


@pytest.fixture
def pair(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    fake: FakeUpstream,
) -> Iterator[tuple[Server, Server]]:
    env = {"MODELPLANE_REDIS_URL": redis_url, "MODELPLANE_USAGE_FLUSH_INTERVAL_S": "0.1"}
    env |= getattr(request, "param", {})
    servers: list[Server] = []
    try:
        for name in ("a", "b"):
            servers.append(Server(tmp_path / name, database_url, **env).start())
        a, b = servers
        resp = a.http.post(
            "/api/endpoints",
            json={
                "name": "up",
                "provider": "openai",
                "model": "m",
                "options": {
                    "base_url": fake.base_url,
                    "price": {"input_per_1m": 1000.0, "output_per_1m": 2000.0},
                },
            },
        )
        assert resp.status_code == 201, resp.text
        eventually(lambda: b.http.get("/api/endpoints/up").status_code == 200, timeout=10, what="b")
        yield a, b
    finally:
        for s in servers:
            s.close()


def _accepts(server: Server, key: Key) -> bool:
    """Whether the server's own key cache knows the key (listing models is not limited)."""
    try:
        server.openai(key.secret).models.list()
    except openai.AuthenticationError:
        return False
    return True


def test_a_60_rpm_key_gets_60_of_200_requests_spread_over_two_processes(
    pair: tuple[Server, Server],
) -> None:
    a, b = pair
    key = make_key(a, limits={"rpm": 60})
    # Minutes are the counters' windows: start with room to finish inside one, so the
    # previous minute's share cannot let a few more through.
    left = 60 - time.time() % 60
    if left < 15:
        time.sleep(left + 0.2)
    # Each process learns of the key, and then of its limit, from its own caches: wait
    # until both apply the limit. A probe that shows the limit was counted against it.
    probes = 0

    def limited(server: Server) -> bool:
        nonlocal probes
        if not _accepts(server, key):
            return False
        raw = server.openai(key.secret).chat.completions.with_raw_response.create(**chat_body())
        counted = raw.headers.get("x-ratelimit-limit-requests") == "60"
        probes += counted  # one that passed before the limit applied counted nowhere
        return counted

    for server in (a, b):
        eventually(partial(limited, server), timeout=10, what="the limit to apply")
    clients = itertools.cycle([a.openai(key.secret), b.openai(key.secret)])
    jobs = [next(clients) for _ in range(200)]

    def one(client: openai.OpenAI) -> tuple[str, int]:
        try:
            raw = client.chat.completions.with_raw_response.create(**chat_body())
        except openai.RateLimitError as exc:
            assert exc.code == "rate_limit_exceeded"
            return str(client.base_url), 429
        return str(client.base_url), raw.status_code

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(one, jobs))
    by_status = Counter(status for _, status in outcomes)
    assert set(by_status) == {200, 429}
    assert 58 <= by_status[200] + probes <= 62, (by_status, probes)
    served_by = Counter(url for url, status in outcomes if status == 200)
    assert len(served_by) == 2, served_by  # both processes served some of them


def test_a_teams_hard_budget_stops_it_on_both_processes(pair: tuple[Server, Server]) -> None:
    a, b = pair
    team = make_team(a)
    key = make_key(a, team=team)
    resp = a.http.put(f"/api/budgets/team/{team}", json={"period": "month", "hard_usd": 0.05})
    assert resp.status_code == 201, resp.text
    eventually(lambda: b.http.get("/api/budgets").json()["data"], timeout=10, what="b to see it")
    eventually(lambda: _accepts(b, key), timeout=10, what="b to know the key")
    costly = chat_body("prompt=5 tokens=10")  # $0.025 each
    served = 0
    for server in itertools.islice(itertools.cycle([a, b]), 10):
        try:
            server.openai(key.secret).chat.completions.create(**costly)
        except openai.RateLimitError as exc:
            assert exc.code == "insufficient_quota"
            break
        served += 1
        time.sleep(0.5)  # what one process spent reaches the other within this
    assert served == 2

    def refused(server: Server) -> bool:
        try:
            server.openai(key.secret).chat.completions.create(**chat_body())
        except openai.RateLimitError as exc:
            return exc.code == "insufficient_quota" and f"team '{team}'" in exc.message
        return False

    for server in (a, b):
        assert eventually(partial(refused, server), timeout=5, what="the hard stop")

    # Both processes' records are in the one database, and the spend agrees with them.
    def report() -> dict[str, Any] | None:
        got: dict[str, Any] = a.http.get("/api/usage", params={"team": team}).json()
        return got if got["total"]["requests"] >= 4 else None

    total = eventually(report, timeout=10, what="the usage records")["total"]
    assert total["cost_usd"] == pytest.approx(0.05)
    assert total["errors"] == total["requests"] - 2
    budget = b.http.get(f"/api/budgets/team/{team}").json()
    assert budget["spent_usd"] == pytest.approx(0.05) and budget["hard_exceeded"]


# At the default refresh interval (the other tests poll five times faster).
@pytest.mark.parametrize("pair", [{"MODELPLANE_CACHE_REFRESH_INTERVAL_S": "1.0"}], indirect=True)
def test_a_revoked_key_is_refused_by_both_processes_within_two_seconds(
    pair: tuple[Server, Server],
) -> None:
    a, b = pair
    key = make_key(a)

    accepted = partial(_accepts, key=key)

    # The other process learns of a new key within its cache refresh.
    eventually(lambda: accepted(a) and accepted(b), timeout=10, what="the key everywhere")
    assert a.http.delete(f"/api/keys/{key.id}").status_code == 200
    revoked_at = time.monotonic()
    eventually(
        lambda: not accepted(a) and not accepted(b), timeout=5, interval=0.05, what="refusal"
    )
    assert time.monotonic() - revoked_at <= 2.0
