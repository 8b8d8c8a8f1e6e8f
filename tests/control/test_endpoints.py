"""Endpoint management beyond the happy path: local GGUF files, crashes, respecs."""

from __future__ import annotations

from pathlib import Path

import httpx

from modelplane.engines.llamacpp.weights import resolve_source
from tests.helpers import LONG, Server, eventually, pid_alive


def test_missing_model_file_is_refused_up_front(shared_server: Server) -> None:
    r = shared_server.http.post(
        "/api/endpoints", json={"name": "ghost", "model": "/no/such/model.gguf"}
    )
    assert r.status_code == 400
    assert r.json()["param"] == "model"
    assert shared_server.http.get("/api/endpoints/ghost").status_code == 404


def test_serves_a_local_gguf_file_by_path(shared_server: Server) -> None:
    path = str(resolve_source("smollm2"))
    r = shared_server.http.post("/api/endpoints", json={"name": "by-path", "model": path})
    assert r.status_code == 201, r.text
    try:
        shared_server.wait_ready("by-path", 1)
        answer = shared_server.openai().chat.completions.create(
            model="by-path",
            max_tokens=30,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
        )
        # A file given by path gets the engine's generic defaults, not the bundled
        # model's tuned ones, so only that it answers is checked here.
        assert answer.choices[0].message.content
    finally:
        shared_server.http.delete("/api/endpoints/by-path")


def test_crashing_replica_is_restarted_with_backoff_and_reports_why(
    shared_server: Server, tmp_path: Path
) -> None:
    junk = tmp_path / "broken.gguf"
    junk.write_bytes(b"this is not a gguf file" * 100)
    r = shared_server.http.post("/api/endpoints", json={"name": "broken", "model": str(junk)})
    assert r.status_code == 201, r.text
    try:
        rep = eventually(
            lambda: (lambda reps: reps[0] if reps and reps[0]["restarts"] >= 2 else None)(
                shared_server.endpoint("broken")["replica_status"]
            ),
            timeout=60,
            what="two restarts",
        )
        assert rep["status"] in ("failed", "starting")
        assert "exited with code" in rep["last_error"]
        assert shared_server.endpoint("broken")["status"] == "starting"
        resp = shared_server.http.post(
            "/v1/chat/completions",
            json={"model": "broken", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert resp.status_code == 503
        assert "retry-after" in resp.headers
    finally:
        assert shared_server.http.delete("/api/endpoints/broken").status_code == 204


def test_changing_options_rolls_replicas_without_downtime(shared_server: Server) -> None:
    r = shared_server.http.post("/api/endpoints", json={"name": "roll", "model": "smollm2"})
    assert r.status_code == 201
    try:
        old = shared_server.wait_ready("roll", 1)["replica_status"][0]
        r = shared_server.http.patch("/api/endpoints/roll", json={"options": {"n_ctx": 2048}})
        assert r.status_code == 200 and r.json()["generation"] == 2
        # While the new replica starts, the old one keeps answering.
        assert shared_server.openai().chat.completions.create(
            model="roll", max_tokens=2, messages=[{"role": "user", "content": "hi"}]
        )

        def rolled() -> dict[str, object] | None:
            reps = shared_server.endpoint("roll")["replica_status"]
            ok = len(reps) == 1 and reps[0]["generation"] == 2 and reps[0]["status"] == "ready"
            return reps[0] if ok else None

        new = eventually(rolled, timeout=60, what="the replica to be replaced")
        assert new["pid"] != old["pid"]
        eventually(lambda: not pid_alive(old["pid"]), timeout=20, what="old replica to stop")
    finally:
        shared_server.http.delete("/api/endpoints/roll")


def test_health_and_readiness_need_no_key(shared_server: Server) -> None:
    assert httpx.get(shared_server.base_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(shared_server.base_url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "reconciler": "ok"}


def test_round_robin_balancing_spreads_requests_over_replicas(shared_server: Server) -> None:
    with shared_server.temporary_endpoint("rr", 2, balancing="round_robin") as reps:
        before = [rep.health()["served"] for rep in reps]
        for _ in range(6):
            shared_server.openai().completions.create(model="rr", prompt="Hi", max_tokens=1)
        after = [rep.health()["served"] for rep in reps]
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 3]


def test_prefix_cache_balancing_keeps_a_conversation_prefix_on_one_replica(
    shared_server: Server,
) -> None:
    strategy = {"strategy": "prefix_cache", "prefix_chars": 80}
    with shared_server.temporary_endpoint("pc", 2, balancing=strategy) as reps:
        before = [rep.health()["served"] for rep in reps]
        system = "You answer questions about the ACME rocket catalogue, briefly. " * 2
        for q in ("price?", "weight?", "colour?", "fuel?"):
            shared_server.openai().chat.completions.create(
                model="pc",
                max_tokens=1,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": q}],
            )
        after = [rep.health()["served"] for rep in reps]
    assert sorted(a - b for a, b in zip(after, before, strict=True)) == [0, 4]


def test_a_busy_replica_is_skipped_for_one_that_can_answer(shared_server: Server) -> None:
    # Every request of session "s1" goes to one replica, which takes one at a time.
    with shared_server.temporary_endpoint(
        "busy", 2, balancing="session_affinity", max_queue=0
    ) as reps:
        session = {"x-session-id": "s1"}
        long = {"model": "busy", **LONG, "stream": True}
        with shared_server.http.stream(
            "POST", "/v1/completions", json=long, headers=session
        ) as held:
            lines = held.iter_lines()  # keep it: a dropped iterator closes the stream
            assert next(lines).startswith("data: ")
            assert sorted(rep.health()["active"] for rep in reps) == [0, 1]
            # Its replica answers 503 (queue full); the gateway tries the other one.
            r = shared_server.http.post(
                "/v1/completions",
                headers=session,
                json={"model": "busy", "prompt": "Hello", "max_tokens": 2},
            )
            assert r.status_code == 200, r.text
