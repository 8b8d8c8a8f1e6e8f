"""Routes end to end: a real server, scriptable fake upstreams, the openai SDK."""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.gateway.fakes import FakeUpstream
from tests.helpers import ADMIN_KEY, Server, free_port

NAMES = ("a", "b", "c")


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    ups = {n: FakeUpstream(n) for n in NAMES}
    yield ups
    for u in ups.values():
        u.close()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, fakes: dict[str, FakeUpstream]
) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home")
    srv = Server(home, f"sqlite:///{home / 'modelplane.db'}").start()
    try:
        for name, fake in fakes.items():
            resp = srv.http.post(
                "/api/endpoints",
                json={
                    "name": name,
                    "provider": "openai",
                    "model": f"upstream-{name}",
                    "options": {"base_url": fake.base_url},
                },
            )
            assert resp.status_code == 201, resp.text
        yield srv
    finally:
        srv.close()


@pytest.fixture(autouse=True)
def _reset(fakes: dict[str, FakeUpstream], server: Server) -> Iterator[None]:
    for f in fakes.values():
        f.reset()
    yield
    for f in fakes.values():
        f.gate.set()
    for route in server.http.get("/api/routes").json()["data"]:
        server.http.delete(f"/api/routes/{route['name']}")


def put_route(server: Server, name: str, **spec: Any) -> dict[str, Any]:
    resp = server.http.put(f"/api/routes/{name}", json=spec)
    assert resp.status_code in (200, 201), resp.text
    data: dict[str, Any] = resp.json()
    return data


def chat(server: Server, model: str, **kw: Any) -> Any:
    return server.openai().chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}], **kw
    )


def test_endpoint_names_are_implicit_routes(server: Server, fakes: dict[str, FakeUpstream]) -> None:
    raw = chat(server, "b")
    assert raw.headers["x-modelplane-target"] == "b"
    assert raw.parse().choices[0].message.content == "hello from b"
    # The upstream got its own name for the model.
    assert fakes["b"].calls[-1]["model"] == "upstream-b"


def test_weights_hold_within_five_percent(server: Server) -> None:
    put_route(
        server,
        "split",
        targets=[{"endpoint": "a", "weight": 3}, {"endpoint": "b", "weight": 1}],
    )
    counts: collections.Counter[str] = collections.Counter()
    with httpx.Client(base_url=server.base_url, headers=server.http.headers) as http:
        for _ in range(2000):
            resp = http.post(
                "/v1/chat/completions",
                json={"model": "split", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert resp.status_code == 200
            counts[resp.headers["x-modelplane-target"]] += 1
    assert set(counts) == {"a", "b"}
    assert abs(counts["a"] / 2000 - 0.75) <= 0.05, counts
    assert abs(counts["b"] / 2000 - 0.25) <= 0.05, counts


def test_sticky_per_key_and_per_user(server: Server) -> None:
    put_route(
        server,
        "sticky",
        targets=[{"endpoint": "a"}, {"endpoint": "b"}, {"endpoint": "c"}],
        sticky="user",
    )
    seen: dict[str, set[str]] = collections.defaultdict(set)
    for i in range(60):
        user = f"user-{i % 12}"
        seen[user].add(chat(server, "sticky", user=user).headers["x-modelplane-target"])
    assert all(len(targets) == 1 for targets in seen.values()), seen
    # Twelve users spread over more than one target.
    assert len(set().union(*seen.values())) > 1

    put_route(server, "by-key", targets=[{"endpoint": "a"}, {"endpoint": "b"}], sticky="key")
    keys = []
    for i in range(6):
        resp = server.http.post("/api/keys", json={"name": f"sticky-{i}"})
        keys.append(resp.json()["key"])
    for key in keys:
        client = server.openai(key)
        got = {
            client.chat.completions.with_raw_response.create(
                model="by-key", messages=[{"role": "user", "content": "hi"}]
            ).headers["x-modelplane-target"]
            for _ in range(5)
        }
        assert len(got) == 1


@pytest.mark.parametrize("failure", ["connect", "500", "429", "timeout", "context"])
def test_fallbacks_are_taken_in_order(
    server: Server, fakes: dict[str, FakeUpstream], failure: str
) -> None:
    dead = free_port()  # nothing listens here: connection refused
    resp = server.http.post(
        "/api/endpoints",
        json={
            "name": "dead",
            "provider": "openai",
            "model": "x",
            "options": {"base_url": f"http://127.0.0.1:{dead}/v1"},
        },
    )
    assert resp.status_code in (201, 409)
    primary = "dead" if failure == "connect" else "a"
    mode = {"500": "500", "429": "429", "timeout": "hang", "context": "context"}.get(failure)
    if mode:
        fakes["a"].mode = mode
    fakes["b"].mode = "500" if failure != "context" else "context"
    put_route(
        server,
        "chain",
        targets=[{"endpoint": primary}],
        fallbacks=["b", "c"],
        retries={"attempts": 1, "backoff_s": 0.01},
        timeouts={"ttft_s": 0.5},
    )
    raw = chat(server, "chain")
    assert raw.headers["x-modelplane-target"] == "c"
    assert raw.parse().choices[0].message.content == "hello from c"
    # Retried once on each failing target (not for context length), then moved on.
    tries = 1 if failure == "context" else 2
    if primary == "a":
        assert len(fakes["a"].calls) == tries
    assert len(fakes["b"].calls) == (1 if failure == "context" else 2)
    assert len(fakes["c"].calls) == 1


def test_client_errors_are_not_retried_or_fallen_back(
    server: Server, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["a"].mode = "bad_request"
    put_route(server, "strict", targets=[{"endpoint": "a"}], fallbacks=["b"])
    with pytest.raises(openai.BadRequestError) as err:
        chat(server, "strict")
    assert "temperature must be at most 2" in str(err.value)
    assert len(fakes["a"].calls) == 1 and not fakes["b"].calls


def test_retries_back_off_and_succeed_on_the_same_target(
    server: Server, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["a"].script.extend(["500", "503"])
    put_route(
        server,
        "flaky",
        targets=[{"endpoint": "a"}],
        fallbacks=["b"],
        retries={"attempts": 2, "backoff_s": 0.01},
    )
    raw = chat(server, "flaky")
    assert raw.headers["x-modelplane-target"] == "a"
    assert len(fakes["a"].calls) == 3 and not fakes["b"].calls


def test_when_every_target_fails_the_last_error_is_returned(
    server: Server, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["a"].mode = "429"
    fakes["b"].mode = "429"
    put_route(
        server, "limited", targets=[{"endpoint": "a"}], fallbacks=["b"], retries={"attempts": 0}
    )
    with pytest.raises(openai.RateLimitError):
        chat(server, "limited")
    assert len(fakes["a"].calls) == 1 and len(fakes["b"].calls) == 1


def test_no_retry_after_the_first_streamed_byte(
    server: Server, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["a"].mode = "break_stream"
    put_route(server, "streamy", targets=[{"endpoint": "a"}], fallbacks=["b"])
    stream = server.openai().chat.completions.create(
        model="streamy", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = []
    with pytest.raises(openai.APIError) as err:
        for part in stream:
            text.append(part.choices[0].delta.content or "")
    assert "".join(text) == "hello from a"
    assert "middle of the answer" in str(err.value)
    assert len(fakes["a"].calls) == 1 and not fakes["b"].calls


def test_a_stream_past_its_total_timeout_ends_with_an_error_event(
    server: Server, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["a"].mode = "gate_stream"  # one chunk, then nothing until the gate opens
    put_route(server, "slowstream", targets=[{"endpoint": "a"}], timeouts={"total_s": 1})
    started = time.monotonic()
    with server.http.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "slowstream",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        },
    ) as resp:
        assert resp.status_code == 200
        events = [line for line in resp.iter_lines() if line]
    assert 0.9 < time.monotonic() - started < 10
    assert json.loads(events[0][6:])["choices"][0]["delta"]["content"] == "hello from a"
    error = json.loads(events[-1][6:])["error"]
    assert error["code"] == "upstream_timeout"
    assert "within 1 s (timeouts.total_s)" in error["message"]
    # The replica's slot was given back: the next request goes through.
    fakes["a"].gate.set()
    fakes["a"].mode = "ok"
    assert chat(server, "slowstream").headers["x-modelplane-target"] == "a"


def test_streams_pass_through_with_the_target_header(
    server: Server, fakes: dict[str, FakeUpstream]
) -> None:
    put_route(server, "s", targets=[{"endpoint": "c"}])
    with server.openai().chat.completions.with_streaming_response.create(
        model="s", messages=[{"role": "user", "content": "hi"}], stream=True
    ) as resp:
        assert resp.headers["x-modelplane-target"] == "c"
        parts = [p.choices[0].delta.content for p in resp.parse() if p.choices]
    assert parts[0] == "hello from c"


def test_aliases_and_models_listing(server: Server) -> None:
    put_route(server, "main", targets=[{"endpoint": "b"}], aliases=["gpt-4o-mini"])
    assert chat(server, "gpt-4o-mini").headers["x-modelplane-target"] == "b"
    ids = {m.id for m in server.openai().models.list()}
    assert {"a", "b", "c", "main", "gpt-4o-mini"} <= ids


def test_route_api_validates_and_round_trips(server: Server) -> None:
    bad = server.http.put("/api/routes/r", json={"targets": [{"endpoint": "nope"}]})
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert "nope" in bad.json()["detail"]
    bad = server.http.put("/api/routes/r", json={"targets": [{"endpoint": "a", "weight": -1}]})
    assert bad.status_code == 400 and "weight" in bad.json()["detail"]
    bad = server.http.put("/api/routes/r", json={"targets": [], "extra": 1})
    assert bad.status_code == 400
    created = server.http.put("/api/routes/r", json={"targets": [{"endpoint": "a"}]})
    assert created.status_code == 201
    same = server.http.put(
        "/api/routes/r", json={"targets": [{"endpoint": "a"}], "fallbacks": ["b"]}
    )
    assert same.status_code == 200 and same.json()["fallbacks"] == ["b"]
    got = server.http.get("/api/routes/r").json()
    assert got["targets"] == [{"endpoint": "a", "weight": 1.0}]
    assert got["source"] == "api"
    # An endpoint a route uses cannot be deleted from under it.
    busy = server.http.delete("/api/endpoints/b")
    assert busy.status_code == 409 and "route(s) r;" in busy.json()["detail"]
    assert server.http.delete("/api/routes/r").status_code == 204
    assert server.http.get("/api/routes/r").status_code == 404
    member = server.http.post("/api/keys", json={"name": "m"}).json()["key"]
    denied = httpx.put(
        server.base_url + "/api/routes/x",
        json={"targets": [{"endpoint": "a"}]},
        headers={"authorization": f"Bearer {member}"},
    )
    assert denied.status_code == 403


def test_wait_queue_bounds_waiting_and_answers_503(
    server: Server, fakes: dict[str, FakeUpstream]
) -> None:
    resp = server.http.patch(
        "/api/endpoints/c",
        json={
            "options": {
                "base_url": fakes["c"].base_url,
                "queue": {"max_concurrency": 1, "max_waiting": 1},
            }
        },
    )
    assert resp.status_code == 200, resp.text
    try:
        fakes["c"].mode = "gate"
        results: dict[int, httpx.Response] = {}

        def send(i: int) -> None:
            results[i] = httpx.post(
                server.base_url + "/v1/chat/completions",
                json={"model": "c", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {ADMIN_KEY}"},
                timeout=30,
            )

        threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        # Two are held (one upstream, one waiting); the third overflows at once.
        from tests.helpers import eventually

        eventually(lambda: len(results) == 1, timeout=10, what="the overflowing request")
        (overflow,) = results.values()
        assert overflow.status_code == 503
        assert overflow.headers["retry-after"] == "1"
        assert "already waiting" in overflow.json()["error"]["message"]
        assert len(fakes["c"].calls) == 1
        fakes["c"].gate.set()
        for t in threads:
            t.join(30)
        assert sorted(r.status_code for r in results.values()) == [200, 200, 503]
        assert len(fakes["c"].calls) == 2
    finally:
        server.http.patch("/api/endpoints/c", json={"options": {"base_url": fakes["c"].base_url}})


def test_routes_declared_in_yaml_are_reconciled(
    tmp_path: Path, fakes: dict[str, FakeUpstream]
) -> None:
    config = tmp_path / "modelplane.yaml"
    config.write_text(
        "routes:\n  chat:\n    targets: [{endpoint: a, weight: 1}]\n    aliases: [default]\n"
    )
    home = tmp_path / "home"
    db = f"sqlite:///{tmp_path / 'modelplane.db'}"
    srv = Server(home, db, MODELPLANE_CONFIG=str(config)).start()
    try:
        srv.http.post(
            "/api/endpoints",
            json={
                "name": "a",
                "provider": "openai",
                "model": "m",
                "options": {"base_url": fakes["a"].base_url},
            },
        )
    finally:
        srv.close()
    # Declared before its endpoint existed: applied on the next start.
    srv = Server(home, db, MODELPLANE_CONFIG=str(config)).start()
    try:
        route = srv.http.get("/api/routes/chat").json()
        assert route["source"] == "config" and route["aliases"] == ["default"]
        refused = srv.http.put("/api/routes/chat", json={"targets": [{"endpoint": "a"}]})
        assert refused.status_code == 409 and "modelplane.yaml" in refused.json()["detail"]
        raw = srv.openai().chat.completions.with_raw_response.create(
            model="default", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.headers["x-modelplane-target"] == "a"
    finally:
        srv.close()
    config.write_text("routes: {}\n")
    srv = Server(home, db, MODELPLANE_CONFIG=str(config)).start()
    try:
        assert srv.http.get("/api/routes/chat").status_code == 404
    finally:
        srv.close()


def test_response_cache_hits_replay_answers_and_streams(
    server: Server, fakes: dict[str, FakeUpstream]
) -> None:
    put_route(server, "cached", targets=[{"endpoint": "a"}], cache={"enabled": True, "ttl_s": 60})
    first = chat(server, "cached", temperature=0)
    second = chat(server, "cached", temperature=0)
    assert first.headers["x-modelplane-cache"] == "miss"
    assert second.headers["x-modelplane-cache"] == "hit"
    assert second.parse().choices[0].message.content == "hello from a"
    # Another request (temperature differs) is not the same answer.
    assert chat(server, "cached", temperature=1).headers["x-modelplane-cache"] == "miss"
    assert len(fakes["a"].calls) == 2

    def stream_text() -> tuple[str, str]:
        with server.openai().chat.completions.with_streaming_response.create(
            model="cached", messages=[{"role": "user", "content": "hi"}], stream=True
        ) as resp:
            text = "".join(p.choices[0].delta.content or "" for p in resp.parse() if p.choices)
            return resp.headers["x-modelplane-cache"], text

    assert stream_text() == ("miss", "hello from a")
    assert stream_text() == ("hit", "hello from a")
    assert len(fakes["a"].calls) == 3
    # Per request: bypass the route's cache, or use it on a route without one.
    raw = server.openai().chat.completions.with_raw_response.create(
        model="cached",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0,
        extra_headers={"x-modelplane-cache": "off"},
    )
    assert "x-modelplane-cache" not in raw.headers and len(fakes["a"].calls) == 4
    for expected in ("miss", "hit"):
        raw = server.openai().chat.completions.with_raw_response.create(
            model="b",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-modelplane-cache": "on"},
        )
        assert raw.headers["x-modelplane-cache"] == expected


def test_errors_are_not_cached(server: Server, fakes: dict[str, FakeUpstream]) -> None:
    put_route(
        server, "c2", targets=[{"endpoint": "a"}], cache={"enabled": True}, retries={"attempts": 0}
    )
    fakes["a"].script.append("500")
    with pytest.raises(openai.InternalServerError):
        chat(server, "c2")
    assert chat(server, "c2").headers["x-modelplane-cache"] == "miss"


def test_embeddings_are_routed(server: Server, fakes: dict[str, FakeUpstream]) -> None:
    put_route(server, "embed", targets=[{"endpoint": "c"}])
    out = server.openai().embeddings.create(model="embed", input="hello")
    assert out.data[0].embedding == [0.1, 0.2, 0.3]
    assert fakes["c"].calls[-1]["model"] == "upstream-c"
    assert fakes["c"].calls[-1]["input"] == "hello"
