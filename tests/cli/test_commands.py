"""The client-side commands against a running server: endpoints, keys, chat."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ADMIN_KEY, Server

MODELPLANE = Path(sys.executable).parent / "modelplane"


def run(server: Server, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "MODELPLANE_API_KEY": ADMIN_KEY}
    return subprocess.run(
        [str(MODELPLANE), *args, "--url", server.base_url],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_endpoints_commands(shared_server: Server) -> None:
    listed = run(shared_server, "endpoints", "list")
    assert listed.returncode == 0, listed.stderr
    assert "smollm2" in listed.stdout and "1/1" in listed.stdout

    created = run(
        shared_server, "endpoints", "create", "idle", "--model", "smollm2", "--replicas", "0"
    )
    assert created.returncode == 0, created.stderr
    assert shared_server.endpoint("idle")["replicas"] == 0
    scaled = run(shared_server, "endpoints", "scale", "idle", "0")
    assert scaled.returncode == 0, scaled.stderr
    dup = run(shared_server, "endpoints", "create", "idle", "--model", "smollm2")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    # An external endpoint lists too (no replicas: its provider instead of an engine).
    resp = shared_server.http.post(
        "/api/endpoints",
        json={
            "name": "outside",
            "provider": "openai",
            "model": "m",
            "options": {"base_url": "http://127.0.0.1:9/v1"},
        },
    )
    assert resp.status_code == 201, resp.text
    try:
        listed = run(shared_server, "endpoints", "list")
        assert listed.returncode == 0, listed.stderr
        assert "openai (external)" in listed.stdout
    finally:
        assert shared_server.http.delete("/api/endpoints/outside").status_code in (200, 204)
    deleted = run(shared_server, "endpoints", "delete", "idle")
    assert deleted.returncode == 0, deleted.stderr
    assert shared_server.http.get("/api/endpoints/idle").status_code == 404


def test_keys_commands(shared_server: Server) -> None:
    created = run(shared_server, "keys", "create", "cli-bot")
    assert created.returncode == 0, created.stderr
    secret = next(w for w in created.stdout.split() if w.startswith("mp-"))
    key_id = created.stdout.split("(id ")[1].split(",")[0]
    listed = run(shared_server, "keys", "list")
    assert "cli-bot" in listed.stdout and secret not in listed.stdout
    rotated = run(shared_server, "keys", "rotate", key_id)
    assert rotated.returncode == 0, rotated.stderr
    fresh = next(w for w in rotated.stdout.split() if w.startswith("mp-"))
    assert fresh != secret
    revoked = run(shared_server, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in run(shared_server, "keys", "list").stdout


def test_chat_streams_an_answer(shared_server: Server) -> None:
    result = run(shared_server, "chat", "smollm2", stdin="What is the capital of France?\n\n")
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_chat_with_unknown_model_says_so(shared_server: Server) -> None:
    result = run(shared_server, "chat", "nope", stdin="hi\n\n")
    assert "does not exist" in result.stderr


def test_bad_key_is_reported_clearly(shared_server: Server) -> None:
    env = {**os.environ, "MODELPLANE_API_KEY": "mp-wrong"}
    r = subprocess.run(
        [str(MODELPLANE), "endpoints", "list", "--url", shared_server.base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "invalid API key" in r.stderr


def test_serve_in_production_without_a_master_secret_says_what_to_do(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPLANE_")}
    env.update(MODELPLANE_MODE="production", MODELPLANE_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "modelplane", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "MODELPLANE_SECRET_KEY" in done.stdout and "Traceback" not in done.stderr
    assert not (tmp_path / "secret.key").exists()
