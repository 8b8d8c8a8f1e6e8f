"""Endpoint lifecycle against real replica processes, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import httpx

from tests.helpers import ADMIN_KEY, Server, engine_pids, eventually, pid_alive


def _ask(server: Server) -> str:
    r = server.openai().chat.completions.create(
        model="pair",
        max_tokens=8,
        temperature=0,
        messages=[{"role": "user", "content": "Say hello."}],
    )
    return r.choices[0].message.content or ""


def test_endpoint_lifecycle(database_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = Server(home, database_url).start()
    try:
        # Create with 2 replicas → both become ready, on distinct processes.
        resp = server.http.post(
            "/api/endpoints", json={"name": "pair", "model": "smollm2", "replicas": 2}
        )
        assert resp.status_code == 201, resp.text
        ep = server.wait_ready("pair", 2)
        pids = [r["pid"] for r in ep["replica_status"]]
        assert len(set(pids)) == 2 and all(pid_alive(p) for p in pids)
        assert _ask(server)

        # Kill one replica: the endpoint keeps answering while it is restarted.
        victim = pids[0]
        failures: list[str] = []
        answered = 0
        stop = threading.Event()

        def load() -> None:
            nonlocal answered
            while not stop.is_set():
                try:
                    _ask(server)
                    answered += 1
                except Exception as exc:
                    failures.append(repr(exc))

        t = threading.Thread(target=load)
        t.start()
        try:
            eventually(lambda: answered >= 2, timeout=30, what="traffic before the kill")
            os.kill(victim, signal.SIGKILL)
            restarted = eventually(
                lambda: (
                    lambda e: (
                        e
                        if e["replica_status"][0]["pid"] != victim
                        and e["replica_status"][0]["status"] == "ready"
                        else None
                    )
                )(server.endpoint("pair")),
                timeout=60,
                what="the killed replica to come back",
            )
            seen = answered
            eventually(lambda: answered >= seen + 2, timeout=30, what="traffic after restart")
        finally:
            stop.set()
            t.join(timeout=30)
        assert failures == [], failures
        rep0 = restarted["replica_status"][0]
        assert rep0["restarts"] >= 1
        assert rep0["last_error"] is None
        assert not pid_alive(victim)

        # Scale to 1: one process goes away, the other keeps serving.
        resp = server.http.patch("/api/endpoints/pair", json={"replicas": 1})
        assert resp.status_code == 200, resp.text
        ep = server.wait_ready("pair", 1)
        assert _ask(server)
        eventually(lambda: len(engine_pids(home)) == 1, timeout=20, what="one engine process")

        # A key created now must survive a restart too.
        resp = server.http.post("/api/keys", json={"name": "ci", "role": "member"})
        member_key = resp.json()["key"]

        # Restart the server: the endpoint and keys come back, replicas are relaunched.
        server.close()
        eventually(
            lambda: engine_pids(home) == [], timeout=20, what="replicas to stop with the server"
        )
        server = Server(home, database_url)
        server.start()
        ep = server.wait_ready("pair", 1)
        assert ep["replicas"] == 1
        member = server.openai(key=member_key).chat.completions.create(
            model="pair", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
        )
        assert member.choices[0].message.content is not None
        keys = server.http.get("/api/keys").json()["data"]
        assert {k["name"] for k in keys} == {"admin", "ci"}

        # Delete: every replica process is gone when the call returns.
        pids = engine_pids(home)
        assert len(pids) == 1
        assert server.http.delete("/api/endpoints/pair").status_code == 204
        assert not any(pid_alive(p) for p in pids)
        assert engine_pids(home) == []
        assert server.http.get("/api/endpoints/pair").status_code == 404
        r = httpx.post(
            server.base_url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {ADMIN_KEY}"},
            json={"model": "pair", "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.status_code == 404
    finally:
        server.close()
    assert engine_pids(home) == []
