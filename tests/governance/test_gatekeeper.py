"""Rate limits, budgets and usage records end to end: a real server (SQLite, in-memory
counters), a fake OpenAI upstream, the openai SDK and httpx as clients."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from tests.gateway.accounts import Key, chat_body, make_key, make_team, usage_records
from tests.gateway.fakes import FakeUpstream
from tests.helpers import Server, eventually

PRICE = {"input_per_1m": 1000.0, "output_per_1m": 2000.0}
"""$0.001 per prompt token, $0.002 per completion token: budgets in cents."""
RESET = re.compile(r"^(\d+ms|(\d+m)?\d+s)$")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    up = FakeUpstream("up")
    yield up
    up.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home")
    srv = Server(
        home, f"sqlite:///{home / 'modelplane.db'}", MODELPLANE_USAGE_FLUSH_INTERVAL_S="0.1"
    ).start()
    try:
        for name, base_url, options in (
            ("up", fake.base_url, {"price": PRICE}),
            ("capped", fake.base_url, {"limits": {"rpm": 2}}),
            ("dead", "http://127.0.0.1:9/v1", {}),
        ):
            srv.add_external(name, base_url, **options)
        yield srv
    finally:
        srv.close()


@pytest.fixture(autouse=True)
def _reset(fake: FakeUpstream) -> Iterator[None]:
    yield from fake.each_test()


def sdk(server: Server, key: Key) -> openai.OpenAI:
    return server.openai(key.secret)


def limit_headers(resp: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in resp.headers.items() if k.startswith("x-ratelimit-")}


def test_requests_per_minute_answer_429_with_retry_after_and_headers(server: Server) -> None:
    key = make_key(server, limits={"rpm": 3})
    client = sdk(server, key)
    for left in (2, 1, 0):
        raw = client.chat.completions.with_raw_response.create(**chat_body())
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(left)
        assert RESET.match(raw.headers["x-ratelimit-reset-requests"])
        assert raw.parse().choices[0].message.content == "hello from up"
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(**chat_body())
    err = refused.value
    assert err.code == "rate_limit_exceeded"
    assert f"key '{key.name}'" in err.message and "3 requests per minute" in err.message
    headers = err.response.headers
    assert int(headers["retry-after"]) >= 1
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert RESET.match(headers["x-ratelimit-reset-requests"])


def test_every_answer_carries_the_headers_where_a_limit_applies(
    server: Server, fake: FakeUpstream
) -> None:
    key = make_key(server, limits={"rpm": 100, "tpm": 100_000})
    with key.http(server) as http:
        answers = {
            "ok": http.post("/v1/chat/completions", json=chat_body()),
            "stream": http.post("/v1/chat/completions", json=chat_body(stream=True)),
            "upstream 400": http.post("/v1/chat/completions", json=chat_body("mode=bad_request")),
            "upstream 500": http.post("/v1/chat/completions", json=chat_body("mode=500")),
            "unreachable": http.post("/v1/chat/completions", json={**chat_body(), "model": "dead"}),
        }
    statuses = {what: r.status_code for what, r in answers.items()}
    assert statuses == {
        "ok": 200,
        "stream": 200,
        "upstream 400": 400,
        "upstream 500": 500,
        "unreachable": 502,
    }
    for what, resp in answers.items():
        headers = limit_headers(resp)
        assert headers["x-ratelimit-limit-requests"] == "100", what
        assert headers["x-ratelimit-limit-tokens"] == "100000", what
        assert int(headers["x-ratelimit-remaining-tokens"]) < 100_000, what
        assert RESET.match(headers["x-ratelimit-reset-tokens"]), what
    # A key without limits (on an endpoint without any) pays for none of it.
    free = make_key(server)
    with free.http(server) as http:
        resp = http.post("/v1/chat/completions", json=chat_body())
    assert resp.status_code == 200 and limit_headers(resp) == {}


def test_the_tightest_limit_decides(server: Server) -> None:
    team = make_team(server, limits={"rpm": 2})
    key = make_key(server, team=team, limits={"rpm": 10})
    client = sdk(server, key)
    for left in (1, 0):
        raw = client.chat.completions.with_raw_response.create(**chat_body())
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(left)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(**chat_body())
    assert f"team '{team}'" in refused.value.message
    # An endpoint's own limit binds every caller together.
    one, two = make_key(server), make_key(server)
    assert sdk(server, one).chat.completions.create(**{**chat_body(), "model": "capped"})
    assert sdk(server, two).chat.completions.create(**{**chat_body(), "model": "capped"})
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(server, one).chat.completions.create(**{**chat_body(), "model": "capped"})
    assert "endpoint 'capped'" in refused.value.message


def test_concurrency_limit_holds_slots_until_answers_and_streams_end(
    server: Server, fake: FakeUpstream
) -> None:
    key = make_key(server, limits={"concurrency": 2})
    client = sdk(server, key)
    with ThreadPoolExecutor(2) as pool:
        held = [
            pool.submit(client.chat.completions.create, **chat_body("mode=gate")) for _ in range(2)
        ]
        eventually(lambda: len(fake.calls) == 2, timeout=10, what="two requests upstream")
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(**chat_body())
        assert "2 requests in flight" in refused.value.message
        assert refused.value.response.headers["retry-after"] == "1"
        fake.gate.set()
        assert all(f.result(timeout=10).choices for f in held)
    assert client.chat.completions.create(**chat_body())

    fake.reset()
    one = make_key(server, limits={"concurrency": 1})
    client = sdk(server, one)
    stream = client.chat.completions.create(**chat_body("mode=gate_stream", stream=True))
    first = next(iter(stream))  # the stream has started and holds its slot
    assert first.choices[0].delta.content == "hello from up"
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**chat_body())
    fake.gate.set()
    assert [c for c in stream]  # the rest of it, to the end
    assert eventually(
        lambda: _succeeds(client), timeout=5, what="the slot given back at the stream's end"
    )


def _succeeds(client: openai.OpenAI) -> bool:
    try:
        client.chat.completions.create(**chat_body())
    except openai.RateLimitError:
        return False
    return True


def test_token_estimates_are_settled_with_the_real_usage(server: Server) -> None:
    # Each request is charged ~170 tokens when admitted (its bytes / 4, plus max_tokens
    # 150) but uses 10: what it did not use comes back, so more than one fits in 200.
    key = make_key(server, limits={"tpm": 200})
    client = sdk(server, key)
    body = chat_body("prompt=5 tokens=5", max_tokens=150)
    first = client.chat.completions.with_raw_response.create(**body)
    estimate = 200 - int(first.headers["x-ratelimit-remaining-tokens"])
    assert 150 < estimate < 200
    served = 1
    for _ in range(10):
        try:
            client.chat.completions.create(**body)
        except openai.RateLimitError as exc:
            assert "200 tokens per minute" in exc.message
            break
        served += 1
    # Without settling, one request would have fit; settled requests count 10 each.
    assert served == 1 + (200 - estimate) // 10

    # The other way: a request that used more than it was charged is charged the
    # rest, and the next one, however small, finds no room left.
    key = make_key(server, limits={"tpm": 200})
    client = sdk(server, key)
    raw = client.chat.completions.with_raw_response.create(**chat_body("tokens=500"))
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) > 150  # only the estimate
    assert raw.parse().usage.completion_tokens == 500
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(**chat_body("x"))
    assert "tokens per minute" in refused.value.message
    # A failed request gives its whole estimate back.
    key = make_key(server, limits={"tpm": 200})
    client = sdk(server, key)
    for _ in range(3):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(**chat_body("mode=bad_request", max_tokens=150))


def test_a_request_too_big_for_the_limit_is_told_so(server: Server) -> None:
    key = make_key(server, limits={"tpm": 50})
    with pytest.raises(openai.RateLimitError) as refused:
        sdk(server, key).chat.completions.create(**chat_body(max_tokens=1000))
    assert "exceed the 50 tokens per minute" in refused.value.message


def _budget(server: Server, scope: str, ref: str) -> dict[str, Any]:
    resp = server.http.get(f"/api/budgets/{scope}/{ref}")
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def test_budgets_report_the_soft_threshold_and_stop_at_the_hard_one(server: Server) -> None:
    team = make_team(server)
    key = make_key(server, team=team)
    other = make_key(server, team=make_team(server))
    resp = server.http.put(
        f"/api/budgets/team/{team}", json={"period": "day", "soft_usd": 0.02, "hard_usd": 0.05}
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["spent_usd"] == 0 and not resp.json()["soft_exceeded"]
    client = sdk(server, key)
    costly = chat_body("prompt=5 tokens=10")  # 5 * $0.001 + 10 * $0.002 = $0.025
    client.chat.completions.create(**costly)

    def spent(expected: float) -> dict[str, Any] | None:
        view = _budget(server, "team", team)
        return view if view["spent_usd"] == pytest.approx(expected) else None

    view = eventually(lambda: spent(0.025), timeout=5, what="the spend to be counted")
    assert view["soft_exceeded"] and not view["hard_exceeded"]
    assert view["period"] == "day" and view["resets_at"].endswith("T00:00:00+00:00")
    client.chat.completions.create(**costly)
    view = eventually(lambda: spent(0.05), timeout=5, what="the spend to reach the hard stop")
    assert view["hard_exceeded"]

    def refused() -> openai.RateLimitError | None:
        try:
            client.chat.completions.create(**chat_body())
        except openai.RateLimitError as exc:
            return exc
        return None

    err = eventually(refused, timeout=5, what="the hard stop")
    assert err.code == "insufficient_quota"
    assert re.match(
        rf"team '{team}' has spent \$0\.05 of its \$0\.05 daily budget; requests are refused "
        r"until \d{4}-\d\d-\d\d 00:00 UTC \(ask an admin to raise it\)$",
        err.body["message"],  # type: ignore[index]
    ), err.message
    assert err.response.headers["x-should-retry"] == "false"
    # Other teams are not affected; raising the budget lets the team through at once.
    assert sdk(server, other).chat.completions.create(**chat_body())
    resp = server.http.put(f"/api/budgets/team/{team}", json={"period": "day", "hard_usd": 1})
    assert resp.status_code == 200 and not resp.json()["hard_exceeded"]
    assert client.chat.completions.create(**chat_body())
    # A key's own budget stops that key only.
    mate = make_key(server, team=team)
    resp = server.http.put(f"/api/budgets/key/{key.id}", json={"hard_usd": 0.001})
    assert resp.status_code == 201 and resp.json()["key"]["name"] == key.name
    eventually(refused, timeout=5, what="the key's hard stop")
    assert sdk(server, mate).chat.completions.create(**chat_body())
    assert server.http.delete(f"/api/budgets/key/{key.id}").status_code == 204
    assert client.chat.completions.create(**chat_body())
    log = (server.home / "server.log").read_text()
    assert re.search(rf"team '{team}' has spent \$0\.0\d, past the soft threshold \(\$0\.02\)", log)


def test_who_may_set_limits_and_budgets(server: Server) -> None:
    team, elsewhere = make_team(server), make_team(server)
    boss = make_key(server, team=team, role="team_admin")
    member = make_key(server, team=team)
    stranger = make_key(server, team=elsewhere, role="team_admin")
    with boss.http(server) as http:
        # A team admin divides the team's allowance among its keys…
        resp = http.patch(f"/api/keys/{member.id}", json={"limits": {"rpm": 5}})
        assert resp.status_code == 200 and resp.json()["limits"] == {"rpm": 5}
        assert http.put(f"/api/budgets/key/{member.id}", json={"hard_usd": 1}).status_code == 201
        # …but cannot raise the team's own ceiling.
        assert http.patch(f"/api/teams/{team}", json={"limits": {"rpm": 5}}).status_code == 403
        assert http.put(f"/api/budgets/team/{team}", json={"hard_usd": 9}).status_code == 403
        assert http.patch(f"/api/teams/{elsewhere}", json={"limits": {}}).status_code == 404
    with member.http(server) as http:
        assert http.patch(f"/api/keys/{member.id}", json={"limits": None}).status_code in (
            403,
            404,
        )
    with stranger.http(server) as http:  # another team's key does not exist for them
        assert http.patch(f"/api/keys/{member.id}", json={"limits": None}).status_code == 404
        assert http.get(f"/api/budgets/key/{member.id}").status_code == 404
        assert http.get("/api/budgets").json()["data"] == []
    assert server.http.put(f"/api/budgets/team/{team}", json={"hard_usd": 9}).status_code == 201
    with member.http(server) as http:  # members see their team's budget, not its keys'
        seen = http.get("/api/budgets").json()["data"]
        assert [(b["scope"], b["team"]) for b in seen] == [("team", team)]
    bad = server.http.put(f"/api/budgets/team/{team}", json={"soft_usd": 5, "hard_usd": 1})
    assert bad.status_code == 400 and "soft_usd" in bad.text
    bad = server.http.patch(f"/api/keys/{member.id}", json={"limits": {"rpm": 0}})
    assert bad.status_code == 400
    bad = server.http.post(
        "/api/endpoints",
        json={"name": "x", "provider": "openai", "model": "m", "options": {"price": {"in": 1}}},
    )
    assert bad.status_code == 400 and "price" in bad.text
    # Removing limits: null.
    resp = server.http.patch(f"/api/keys/{member.id}", json={"limits": None})
    assert resp.status_code == 200 and resp.json()["limits"] is None


def test_streams_are_recorded_with_their_usage_or_an_estimate(
    server: Server, fake: FakeUpstream
) -> None:
    key = make_key(server)
    client = sdk(server, key)
    with_usage = client.chat.completions.with_raw_response.create(
        **chat_body("prompt=4 tokens=7", stream=True, stream_options={"include_usage": True})
    )
    chunks = list(with_usage.parse())
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    without = client.chat.completions.with_raw_response.create(**chat_body("tokens=7", stream=True))
    assert all(c.usage is None for c in without.parse())
    broken = client.chat.completions.with_raw_response.create(
        **chat_body("mode=break_stream", stream=True)
    )
    with pytest.raises(openai.APIError, match="failed in the middle"):
        list(broken.parse())
    ids = {
        "with usage": with_usage.headers["x-request-id"],
        "without": without.headers["x-request-id"],
        "broken": broken.headers["x-request-id"],
    }

    def records() -> dict[str, Any] | None:
        mine = {r.request_id: r for r in usage_records(server.database_url)}
        found = {what: mine.get(rid) for what, rid in ids.items()}
        return found if all(found.values()) else None

    found = eventually(records, timeout=10, what="three usage records")
    exact = found["with usage"]
    assert (exact.prompt_tokens, exact.completion_tokens, exact.estimated) == (4, 7, False)
    assert exact.cost_usd == pytest.approx(4 * 0.001 + 7 * 0.002)
    assert exact.endpoint == "up" and exact.route == "up" and exact.status == 200
    assert exact.key_id == key.id and exact.latency_ms > 0
    guessed = found["without"]
    assert guessed.estimated and guessed.completion_tokens == 7 and guessed.status == 200
    assert found["broken"].status == 502 and found["broken"].estimated


def test_many_requests_at_once_are_each_recorded_once(server: Server) -> None:
    key = make_key(server)
    client = sdk(server, key)
    seen: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        raw = client.chat.completions.with_raw_response.create(**chat_body(f"tokens={i}"))
        with lock:
            seen.append(raw.headers["x-request-id"])

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(1, 101)))

    def mine() -> list[Any] | None:
        got = [r for r in usage_records(server.database_url) if r.key_id == key.id]
        return got if len(got) >= 100 else None

    got = eventually(mine, timeout=10, what="100 usage records")
    assert sorted(r.request_id for r in got) == sorted(seen)
    assert sum(r.completion_tokens for r in got) == sum(range(1, 101))
