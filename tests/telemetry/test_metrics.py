"""``/metrics`` after known traffic: a real server, fake OpenAI upstreams (on loopback),
exact counts read back from the Prometheus text."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from modelplane.telemetry.metrics import OTHER, Bounded
from tests.gateway.accounts import make_key, make_team
from tests.gateway.fakes import FakeUpstream
from tests.helpers import ADMIN_KEY, Server, eventually, free_port
from tests.telemetry.prom import delta, label_values, parse, scrape, total, value

PRICE = {"input_per_1m": 1000.0, "output_per_1m": 2000.0}


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    ups = {n: FakeUpstream(n) for n in ("a", "b", "c")}
    yield ups
    for u in ups.values():
        u.close()


def _endpoint(srv: Server, name: str, base_url: str, **options: Any) -> None:
    resp = srv.http.post(
        "/api/endpoints",
        json={
            "name": name,
            "provider": "openai",
            "model": f"upstream-{name}",
            "options": {"base_url": base_url, **options},
        },
    )
    assert resp.status_code == 201, resp.text


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, fakes: dict[str, FakeUpstream]
) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home")
    srv = Server(
        home, f"sqlite:///{home / 'modelplane.db'}", MODELPLANE_USAGE_FLUSH_INTERVAL_S="0.1"
    ).start()
    try:
        for name, fake in fakes.items():
            _endpoint(srv, name, fake.base_url)
        _endpoint(srv, "priced", fakes["a"].base_url, price=PRICE)
        _endpoint(srv, "dead", f"http://127.0.0.1:{free_port()}/v1")  # connection refused
        yield srv
    finally:
        srv.close()


@pytest.fixture(autouse=True)
def _reset(fakes: dict[str, FakeUpstream]) -> None:
    for f in fakes.values():
        f.reset()


def put_route(server: Server, name: str, **spec: Any) -> None:
    resp = server.http.put(f"/api/routes/{name}", json=spec)
    assert resp.status_code in (200, 201), resp.text


def chat(model: str, content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


def test_counters_and_histograms_after_known_traffic(server: Server) -> None:
    put_route(server, "exact", targets=[{"endpoint": "a"}])
    team = make_team(server)
    member = make_key(server, team=team)
    before = scrape(server.base_url)
    with httpx.Client(base_url=server.base_url, headers=server.http.headers, timeout=30) as http:
        for _ in range(5):
            assert http.post("/v1/chat/completions", json=chat("exact", "prompt=7 tokens=4"))
        usage = {"stream": True, "stream_options": {"include_usage": True}}
        for _ in range(3):
            resp = http.post(
                "/v1/chat/completions", json=chat("exact", "prompt=2 tokens=6", **usage)
            )
            assert resp.status_code == 200 and b'"completion_tokens": 6' in resp.content
        bad = http.post("/v1/chat/completions", json=chat("exact", "mode=bad_request"))
        assert bad.status_code == 400
        emb = http.post("/v1/embeddings", json={"model": "a", "input": "x"})
        assert emb.status_code == 200
        missing = http.post("/v1/chat/completions", json=chat("no-such-model"))
        assert missing.status_code == 404
    with member.http(server) as http:
        for _ in range(2):
            assert http.post("/v1/chat/completions", json=chat("exact")).status_code == 200
    after = scrape(server.base_url)

    def requests(**labels: str) -> float:
        return delta(before, after, "modelplane_requests_total", **labels)

    base = {"kind": "chat", "route": "exact", "endpoint": "a"}
    assert requests(**base, team="_none", status="200") == 8
    assert requests(**base, team="_none", status="400") == 1
    assert requests(**base, team=team, status="200") == 2
    assert requests(kind="embeddings", route="a", endpoint="a", team="_none", status="200") == 1
    assert requests(kind="chat", route=OTHER, endpoint="_none", team="_none", status="404") == 1
    assert "no-such-model" not in str(after)

    def count(name: str, **labels: str) -> float:
        return delta(before, after, name, **labels)

    assert count("modelplane_request_duration_seconds_count", kind="chat", endpoint="a") == 11
    assert count("modelplane_request_duration_seconds_count", kind="embeddings", endpoint="a") == 1
    assert count("modelplane_ttft_seconds_count", endpoint="a") == 3
    assert count("modelplane_time_per_output_token_seconds_count", endpoint="a") == 3
    for name in ("modelplane_request_duration_seconds", "modelplane_ttft_seconds"):
        labels = {"endpoint": "a", **({"kind": "chat"} if "duration" in name else {})}
        inf = value(after, f"{name}_bucket", **labels, le="+Inf")
        assert inf == value(after, f"{name}_count", **labels)
    tokens = "modelplane_tokens_total"
    # 5 * 7 + 3 * 2 + the embedding's 2 (the 400 has no usage); 2 * 3 for the team's.
    assert count(tokens, endpoint="a", team="_none", type="prompt") == 43
    assert count(tokens, endpoint="a", team="_none", type="completion") == 5 * 4 + 3 * 6
    assert count(tokens, endpoint="a", team=team, type="completion") == 2 * 3
    assert value(after, "modelplane_inflight_requests") == 0


def test_retries_fallbacks_upstream_errors_and_cache(
    server: Server, fakes: dict[str, FakeUpstream]
) -> None:
    put_route(
        server,
        "chain",
        targets=[{"endpoint": "a"}],
        fallbacks=["b"],
        retries={"attempts": 1, "backoff_s": 0.01},
    )
    put_route(server, "nowhere", targets=[{"endpoint": "dead"}], fallbacks=["c"])
    put_route(server, "cached", targets=[{"endpoint": "c"}], cache={"enabled": True})
    before = scrape(server.base_url)
    fakes["a"].mode = "500"
    with httpx.Client(base_url=server.base_url, headers=server.http.headers, timeout=30) as http:
        resp = http.post("/v1/chat/completions", json=chat("chain"))
        assert resp.status_code == 200 and resp.headers["x-modelplane-target"] == "b"
        resp = http.post("/v1/chat/completions", json=chat("nowhere"))
        assert resp.status_code == 200 and resp.headers["x-modelplane-target"] == "c"
        first = http.post("/v1/chat/completions", json=chat("cached", "remember me"))
        assert first.headers["x-modelplane-cache"] == "miss"
        hits = 0

        def hit() -> bool:
            nonlocal hits
            r = http.post("/v1/chat/completions", json=chat("cached", "remember me"))
            hits += r.headers["x-modelplane-cache"] == "hit"
            return r.headers["x-modelplane-cache"] == "hit"

        eventually(hit, timeout=10, what="a cache hit")
    after = scrape(server.base_url)
    assert len(fakes["a"].calls) == 2 and len(fakes["b"].calls) == 1
    assert delta(before, after, "modelplane_retries_total", endpoint="a") == 1
    assert delta(before, after, "modelplane_upstream_errors_total", endpoint="a", kind="5xx") == 2
    # "dead" refuses connections: retried twice by default, then c.
    assert delta(before, after, "modelplane_retries_total", endpoint="dead") == 2
    errors = "modelplane_upstream_errors_total"
    assert delta(before, after, errors, endpoint="dead", kind="connect") == 3
    assert delta(before, after, "modelplane_fallbacks_total", route="chain", endpoint="b") == 1
    assert delta(before, after, "modelplane_fallbacks_total", route="nowhere", endpoint="c") == 1
    cache = "modelplane_cache_requests_total"
    misses = len(fakes["c"].calls) - 1  # c answered "nowhere" once; every other call missed
    assert delta(before, after, cache, route="cached", result="miss") == misses
    assert delta(before, after, cache, route="cached", result="hit") == hits == 1
    requests = "modelplane_requests_total"
    ok = {"kind": "chat", "team": "_none", "status": "200"}
    assert delta(before, after, requests, route="chain", endpoint="b", **ok) == 1
    assert delta(before, after, requests, route="cached", endpoint="_none", **ok) == 1


def test_rate_limited_and_budget_refused_requests(server: Server) -> None:
    team = make_team(server)
    limited = make_key(server, team=team, limits={"rpm": 1})
    before = scrape(server.base_url)
    with limited.http(server) as http:
        assert http.post("/v1/chat/completions", json=chat("a")).status_code == 200
        assert http.post("/v1/chat/completions", json=chat("a")).status_code == 429
    spender_team = make_team(server)
    spender = make_key(server, team=spender_team)
    resp = server.http.put(f"/api/budgets/team/{spender_team}", json={"hard_usd": 0.01})
    assert resp.status_code == 201, resp.text
    resp = server.http.put(f"/api/budgets/key/{spender.id}", json={"hard_usd": 0.1})
    assert resp.status_code == 201, resp.text
    refused = 0
    with spender.http(server) as http:
        # 5 prompt + 10 completion tokens cost $0.025: the budget is spent at once.
        assert http.post("/v1/chat/completions", json=chat("priced", "prompt=5 tokens=10"))

        def refuses() -> bool:
            nonlocal refused
            r = http.post("/v1/chat/completions", json=chat("priced"))
            refused += r.status_code == 429
            return r.status_code == 429

        eventually(refuses, timeout=10, what="the hard stop")
    after = scrape(server.base_url)
    assert delta(before, after, "modelplane_rate_limited_total", route="a", team=team) == 1
    refusals = delta(
        before, after, "modelplane_budget_refused_total", route="priced", team=spender_team
    )
    assert refusals == refused == 1
    assert total(after, "modelplane_rate_limited_total", team=spender_team) == 0
    req = {"kind": "chat", "endpoint": "_none", "status": "429"}
    assert delta(before, after, "modelplane_requests_total", route="a", team=team, **req) == 1
    ratio = value(after, "modelplane_budget_used_ratio", scope="team", name=spender_team)
    assert ratio == pytest.approx(2.5)
    # Key budgets: the highest ratio among them, never the key itself.
    assert value(after, "modelplane_budget_used_ratio", scope="key", name="_max") == (
        pytest.approx(0.25)
    )
    assert spender.id not in httpx.get(server.base_url + "/metrics").text


def test_labels_stay_bounded_under_a_thousand_keys_and_users(server: Server) -> None:
    """1,000 keys in 250 teams, each with its own ``user`` and a model name of its own
    choosing: the label sets stay bounded, and no key, user or made-up name shows."""
    teams = [make_team(server) for _ in range(250)]
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda i: make_key(server, team=teams[i % 250]), range(1000)))

    http = httpx.Client(base_url=server.base_url, timeout=30)

    def call(i: int) -> tuple[int, int]:
        auth = {"authorization": f"Bearer {keys[i].secret}"}
        ok = http.post("/v1/chat/completions", json=chat("a", user=f"user-{i:04d}"), headers=auth)
        missing = http.post("/v1/chat/completions", json=chat(f"made-up-{i:04d}"), headers=auth)
        return ok.status_code, missing.status_code

    with http, ThreadPoolExecutor(4) as pool:
        assert set(pool.map(call, range(1000))) == {(200, 404)}
    text = httpx.get(server.base_url + "/metrics").text
    samples = parse(text)
    name = "modelplane_requests_total"
    seen_teams = label_values(samples, name, "team")
    assert len(seen_teams - {OTHER, "_none"}) == 200  # the cap; the other 50 are "_other"
    assert OTHER in seen_teams
    routes = label_values(samples, name, "route")
    assert len(routes) < 12 and not any(r.startswith("made-up") for r in routes)
    # Every team's 200s and 404s, plus what the other tests sent: a few hundred series.
    assert len([k for k in samples if k[0] == name]) < 500
    assert total(samples, name, route=OTHER, status="404") >= 1000
    for i in (0, 1, 499, 999):
        for secret in (keys[i].secret, keys[i].id, f"user-{i:04d}", f"made-up-{i:04d}"):
            assert secret not in text
    assert ADMIN_KEY not in text


def test_a_label_takes_at_most_its_cap_of_values() -> None:
    bounded = Bounded(cap=3)
    assert [bounded(f"e{i}") for i in range(5)] == ["e0", "e1", "e2", OTHER, OTHER]
    assert bounded("e1") == "e1" and bounded(None) == "_none"


def test_metrics_can_require_a_key_or_be_switched_off(tmp_path: Path) -> None:
    home = tmp_path / "locked"
    locked = Server(
        home, f"sqlite:///{home / 'm.db'}", MODELPLANE_METRICS_REQUIRE_KEY="true"
    ).start()
    try:
        assert httpx.get(locked.base_url + "/metrics").status_code == 401
        assert locked.http.get("/metrics").status_code == 200
    finally:
        locked.close()
    home = tmp_path / "off"
    off = Server(home, f"sqlite:///{home / 'm.db'}", MODELPLANE_METRICS_ENABLED="false").start()
    try:
        assert off.http.get("/metrics").status_code == 404
    finally:
        off.close()


def test_workers_add_up_to_one_set_of_numbers(
    tmp_path: Path, fakes: dict[str, FakeUpstream]
) -> None:
    """``MODELPLANE_WORKERS=2``: each worker counts in its own files (written out once a
    second), and ``/metrics`` of either adds them up."""
    home = tmp_path / "workers"
    srv = Server(home, f"sqlite:///{home / 'm.db'}", MODELPLANE_WORKERS="2").start()
    try:
        _endpoint(srv, "a", fakes["a"].base_url)
        files = home / "metrics"

        def per_worker() -> list[float]:
            counts = []
            for f in sorted(files.glob("counter_*.db")):
                merged = MultiProcessCollector.merge([str(f)], accumulate=True)
                counts.append(
                    sum(
                        s.value
                        for m in merged
                        for s in m.samples
                        if s.name == "modelplane_requests_total" and s.labels["route"] == "a"
                    )
                )
            return counts

        sent = 0

        def both_served() -> bool:
            nonlocal sent
            for _ in range(10):
                # A new connection each time, so that the kernel spreads them.
                resp = httpx.post(
                    srv.base_url + "/v1/chat/completions",
                    json=chat("a"),
                    headers={"authorization": f"Bearer {ADMIN_KEY}"},
                )
                # 404: a worker that has not seen the new endpoint yet (counted as _other).
                assert resp.status_code in (200, 404)
                sent += resp.status_code == 200
            return sum(c > 0 for c in per_worker()) >= 2

        eventually(both_served, timeout=60, what="requests on both workers")
        # Each worker writes its counts out at least once a second.
        eventually(lambda: sum(per_worker()) == sent, timeout=5, what="every worker's flush")
        for _ in range(4):  # whichever worker answers the scrape
            samples = scrape(srv.base_url)
            assert total(samples, "modelplane_requests_total", route="a") == sent
            assert total(samples, "modelplane_request_duration_seconds_count", endpoint="a") == sent
            assert value(samples, "modelplane_inflight_requests") == 0
    finally:
        srv.close()


def test_prompts_are_logged_only_where_an_endpoint_says_so(
    server: Server, fakes: dict[str, FakeUpstream]
) -> None:
    _endpoint(server, "chatty", fakes["b"].base_url, log_prompts=True)
    quiet, loud = f"quiet-{uuid.uuid4().hex}", f"loud-{uuid.uuid4().hex}"
    rid = f"rid-{uuid.uuid4().hex}"
    with httpx.Client(base_url=server.base_url, headers=server.http.headers, timeout=30) as http:
        http.post("/v1/chat/completions", json=chat("a", quiet))
        http.post("/v1/chat/completions", json=chat("chatty", loud), headers={"x-request-id": rid})
        streamed = http.post(
            "/v1/chat/completions", json=chat("chatty", loud + " tokens=2", stream=True)
        )
        assert streamed.status_code == 200
    bad = server.http.post(
        "/api/endpoints",
        json={"name": "x", "provider": "openai", "model": "m", "options": {"log_prompts": "yes"}},
    )
    assert bad.status_code == 400 and "log_prompts" in bad.text
    log = server.home / "server.log"

    def lines() -> list[dict[str, Any]]:
        out = []
        for line in log.read_text().splitlines():
            if '"modelplane.access"' in line:
                out.append(json.loads(line))
        return out

    mine = eventually(
        lambda: [e for e in lines() if e.get("endpoint") == "chatty"][-2:] or None,
        timeout=5,
        what="the access log lines",
    )
    assert quiet not in log.read_text()
    whole, stream = mine
    assert whole["request_id"] == rid and whole["status"] == 200
    assert whole["prompt"] == [{"role": "user", "content": loud}]
    assert whole["completion"] == "hello from b"
    assert stream["completion"] == "t0 t1 " and stream["ttft_ms"] > 0
    plain = [e for e in lines() if e.get("endpoint") == "a"][-1]
    assert "prompt" not in plain and "completion" not in plain
    assert set(plain) >= {"request_id", "team", "status", "latency_ms", "completion_tokens"}
