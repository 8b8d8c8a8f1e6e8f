"""``modelplane users`` and ``modelplane service-accounts`` against a running server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import ADMIN_KEY, Server

MODELPLANE = Path(sys.executable).parent / "modelplane"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home")
    srv = Server(home, f"sqlite:///{home / 'modelplane.db'}").start()
    assert srv.http.post("/api/teams", json={"name": "research"}).status_code == 201
    yield srv
    srv.close()


def run(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "MODELPLANE_API_KEY": ADMIN_KEY}
    return subprocess.run(
        [str(MODELPLANE), *args, "--url", server.base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_users_commands(server: Server) -> None:
    made = run(server, "users", "create", "alice", "--team", "research", "--email", "a@ex.test")
    assert made.returncode == 0, made.stderr
    assert "created user alice" in made.stdout and "--account alice" in made.stdout
    listed = run(server, "users", "list")
    assert listed.returncode == 0, listed.stderr
    assert "alice" in listed.stdout and "a@ex.test" in listed.stdout and "active" in listed.stdout
    dup = run(server, "users", "create", "alice", "--team", "research")
    assert dup.returncode == 1 and "already exists" in dup.stderr

    key = run(server, "keys", "create", "alice-laptop", "--account", "alice")
    assert key.returncode == 0, key.stderr
    secret = next(w for w in key.stdout.split() if w.startswith("mp-"))
    assert "alice" in run(server, "keys", "list").stdout
    disabled = run(server, "users", "disable", "alice")
    assert disabled.returncode == 0, disabled.stderr
    assert "disabled" in run(server, "users", "list").stdout
    refused = httpx.get(
        server.base_url + "/v1/models", headers={"authorization": f"Bearer {secret}"}
    )
    assert refused.status_code == 401
    assert run(server, "users", "enable", "alice").returncode == 0
    assert run(server, "users", "disable", "nobody").returncode == 1


def test_service_accounts_commands(server: Server) -> None:
    made = run(server, "service-accounts", "create", "ci-bot", "--team", "research")
    assert made.returncode == 0, made.stderr
    assert "created service account ci-bot" in made.stdout
    listed = run(server, "service-accounts", "list")
    assert "ci-bot" in listed.stdout and "research" in listed.stdout
    assert "ci-bot" not in run(server, "users", "list").stdout
    bad = run(server, "service-accounts", "create", "Bad Name", "--team", "research")
    assert bad.returncode == 1 and "name" in bad.stderr
