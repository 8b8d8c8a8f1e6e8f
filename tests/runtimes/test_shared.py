"""``serve --workers N``: several server processes, one set of replicas."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import ADMIN_KEY, Server, engine_pids, eventually, pid_alive


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home")
    srv = Server(home, f"sqlite:///{home / 'modelplane.db'}", MODELPLANE_WORKERS="2").start()
    yield srv
    srv.close()


def _ask(server: Server) -> int:
    # A new connection each time, so the kernel spreads them over both workers.
    return httpx.post(
        server.base_url + "/v1/completions",
        json={"model": "shared", "prompt": "The sky is", "max_tokens": 4},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
        timeout=60,
    ).status_code


def test_workers_share_one_set_of_replicas_and_take_over(server: Server) -> None:
    with server.temporary_endpoint("shared", replicas=1):
        assert len(engine_pids(server.home)) == 1
        assert all(_ask(server) == 200 for _ in range(20))
        state = json.loads((server.home / "replicas.json").read_text())
        assert [r["status"] for r in state["endpoints"]["shared"]] == ["ready"]
        # The supervising worker dies: its replica goes with it, another worker takes
        # over, and requests succeed again.
        leader = state["pid"]
        old = engine_pids(server.home)
        os.kill(leader, signal.SIGKILL)
        eventually(lambda: not pid_alive(leader) and not any(map(pid_alive, old)), timeout=30)
        eventually(
            lambda: json.loads((server.home / "replicas.json").read_text())["pid"] != leader,
            timeout=60,
            what="another worker supervising",
        )
        eventually(lambda: _ask(server) == 200, timeout=120, what="requests served again")
        assert len(engine_pids(server.home)) == 1
        assert all(_ask(server) == 200 for _ in range(10))
