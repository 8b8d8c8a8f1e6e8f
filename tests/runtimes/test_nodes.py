"""Two nodes, one PostgreSQL database: a local endpoint's replicas run once, on its
node; the other node routes to the addresses that node publishes, or says plainly why
it cannot."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import openai
import pytest
from sqlalchemy import update

from modelplane.config import Settings
from modelplane.store.db import Database, utc_now
from modelplane.store.models import ReplicaRow
from modelplane.store.replicas import Published, ReplicaRepo
from modelplane.store.revisions import bump
from tests.helpers import Server, eventually
from tests.runtimes.echo_spec import ROOT, echo_pids

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


class EchoServer(Server):
    """``modelplane serve`` that also knows the echo test engine."""

    def start(self) -> Server:
        self.home.mkdir(parents=True, exist_ok=True)
        self.env["PYTHONPATH"] = ROOT
        with (self.home / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.runtimes.serve", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        eventually(lambda: self._ready(), timeout=60, what="server /readyz")
        return self


@pytest.fixture
def nodes(tmp_path: Path, database_url: str) -> Iterator[tuple[Server, Server]]:
    servers: list[Server] = []
    try:
        for name in ("a", "b"):
            env = {"MODELPLANE_NODE_NAME": f"node-{name}", "MODELPLANE_BOOTSTRAP_ENDPOINT": "0"}
            servers.append(EchoServer(tmp_path / name, database_url, **env).start())
        yield servers[0], servers[1]
    finally:
        for s in servers:
            s.close()


def _create(server: Server, name: str, **body: object) -> None:
    resp = server.http.post("/api/endpoints", json={"name": name, **body})
    assert resp.status_code == 201, resp.text


def _chat(server: Server, model: str) -> str:
    resp = server.openai().chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    return resp.choices[0].message.content or ""


def _ready_on(server: Server, name: str, count: int) -> list[dict[str, object]]:
    def check() -> list[dict[str, object]] | None:
        resp = server.http.get(f"/api/endpoints/{name}")
        reps = resp.json().get("replica_status", []) if resp.status_code == 200 else []
        ready = [r for r in reps if r["status"] == "ready"]
        return reps if len(ready) == count == len(reps) else None

    found: list[dict[str, object]] = eventually(check, timeout=60, what=f"{name} on {server}")
    return found


def test_replicas_run_once_on_their_node_and_both_nodes_answer(
    nodes: tuple[Server, Server],
) -> None:
    a, b = nodes
    # Created through b, for node a: only a runs it.
    _create(b, "echo", engine="echo", model="m", replicas=2, node="node-a")
    on_a = _ready_on(a, "echo", 2)
    on_b = _ready_on(b, "echo", 2)
    assert {r["url"] for r in on_a} == {r["url"] for r in on_b}
    assert {r["node"] for r in on_b} == {"node-a"}
    assert b.endpoint("echo")["node"] == "node-a"
    assert len(echo_pids(a.home)) == 2 and echo_pids(b.home) == []
    answers = {_chat(b, "echo") for _ in range(6)} | {_chat(a, "echo") for _ in range(6)}
    assert all(x.startswith("echo m@") for x in answers), answers
    # An endpoint created on b, with no node given, is b's.
    _create(b, "mine", engine="echo", model="mine", replicas=1)
    _ready_on(a, "mine", 1)
    assert len(echo_pids(b.home)) == 1 and len(echo_pids(a.home)) == 2
    assert _chat(a, "mine").startswith("echo mine@")
    # Deleted through b: a stops its replicas.
    assert b.http.delete("/api/endpoints/echo").status_code == 204
    eventually(lambda: echo_pids(a.home) == [], timeout=30, what="a's replicas gone")
    eventually(
        lambda: a.http.get("/api/endpoints/echo").status_code == 404, timeout=10, what="gone"
    )


def _publish(database_url: str, node: str, machine: str, url: str, age_s: float = 0) -> None:
    async def go() -> None:
        db = Database(Settings(database_url=database_url).sqlalchemy_url)
        try:
            rid = "far-1-0"
            await ReplicaRepo(db).replace(
                node, [Published(node, rid, "far", machine, 1, url, "ready")]
            )
            if age_s:
                async with db.session() as s:
                    old = utc_now() - timedelta(seconds=age_s)
                    await s.execute(update(ReplicaRow).values(updated_at=old))
                    await bump(s, "replicas")
        finally:
            await db.close()

    asyncio.run(go())


def _refusal(server: Server, model: str) -> str:
    with pytest.raises(openai.APIStatusError) as err:
        _chat(server, model)
    assert err.value.status_code == 503
    return str(err.value.response.json()["error"]["message"])


def _refused_with(server: Server, model: str, text: str) -> str | None:
    message = _refusal(server, model)
    return message if text in message else None


def test_the_other_node_says_why_it_cannot_reach_the_replicas(
    nodes: tuple[Server, Server], database_url: str
) -> None:
    a, _ = nodes
    # Owned by a node no server runs as.
    _create(a, "far", engine="echo", model="m", replicas=1, node="node-far")
    eventually(lambda: "published no replicas" in _refusal(a, "far"), timeout=10, what="503")
    assert "MODELPLANE_NODE_NAME=node-far" in _refusal(a, "far")
    # It publishes a loopback address from another machine: not this machine's to reach.
    _publish(database_url, "node-far", "another-machine", "http://127.0.0.1:9")
    message = eventually(
        lambda: _refused_with(a, "far", "127.0.0.1 only"),
        timeout=10,
        what="the loopback explanation",
    )
    assert message == (
        "endpoint 'far' runs on node 'node-far', whose replicas listen on 127.0.0.1 only; "
        "set MODELPLANE_REPLICA_HOST on node 'node-far' to an address this node can reach"
    )
    # It has not been heard from for ten minutes: gone.
    _publish(database_url, "node-far", "another-machine", "http://10.0.0.9:9", age_s=600)
    stale = eventually(
        lambda: _refused_with(a, "far", "last published"),
        timeout=10,
        what="the stale explanation",
    )
    assert "node 'node-far'" in stale and "still running" in stale


def test_a_real_model_answers_through_the_node_that_does_not_run_it(
    nodes: tuple[Server, Server],
) -> None:
    a, b = nodes
    _create(a, "smollm2", model="smollm2", replicas=1)
    _ready_on(b, "smollm2", 1)
    assert echo_pids(b.home) == []
    resp = b.openai().chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hi"}], max_tokens=4
    )
    assert resp.choices[0].message.content
    assert resp.usage is not None and resp.usage.completion_tokens > 0
