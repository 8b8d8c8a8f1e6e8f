"""``modelplane up`` as a user runs it: one command to a working, authenticated API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from openai import OpenAI

from tests.helpers import engine_pids, eventually, free_port

MODELPLANE = Path(sys.executable).parent / "modelplane"


def start_up(home: Path, port: int, out: Path) -> subprocess.Popen[bytes]:
    """``modelplane up`` as a user would type it, with its own home and port."""
    env = {
        **os.environ,
        "MODELPLANE_HOME": str(home),
        "COLUMNS": "200",
        "MODELPLANE_ENGINE_THREADS": "1",
    }
    env.pop("MODELPLANE_ADMIN_KEY", None)
    with out.open("wb") as f:
        return subprocess.Popen(
            [str(MODELPLANE), "up", "--port", str(port)],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def test_up_serves_the_bundled_model_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    port = free_port()
    out = tmp_path / "up.out"
    proc = start_up(home, port, out)
    try:
        eventually(
            lambda: "modelplane is up" in out.read_text() or proc.poll() is not None,
            timeout=120,
            what="the 'up' banner",
        )
        text = out.read_text()
        assert proc.poll() is None, text
        key = (home / "admin.key").read_text().strip()
        base = f"http://127.0.0.1:{port}/v1"
        assert key in text and base in text, "the banner shows the key and the URL"
        assert "curl " in text and "from openai import OpenAI" in text
        assert len(engine_pids(home)) == 1

        with OpenAI(base_url=base, api_key=key, max_retries=0) as client:
            r = client.chat.completions.create(
                model="smollm2",
                max_tokens=30,
                messages=[{"role": "user", "content": "What is the capital of France?"}],
            )
        assert "Paris" in (r.choices[0].message.content or "")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert engine_pids(home) == [], "Ctrl-C leaves no replica behind"
    assert key not in (home / "logs" / "smollm2-0.log").read_text()


def test_server_death_takes_its_replicas_with_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = start_up(home, free_port(), tmp_path / "up.out")
    try:
        eventually(lambda: len(engine_pids(home)) == 1, timeout=60, what="a replica")
    finally:
        proc.kill()  # no chance to clean up
        proc.wait(timeout=30)
    eventually(
        lambda: engine_pids(home) == [],
        timeout=10,
        what="orphaned replicas to exit after the server was killed",
    )


def test_up_on_a_busy_port_says_so_and_starts_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = start_up(home, port, tmp_path / "up.out")
        assert proc.wait(timeout=60) == 1
    text = (tmp_path / "up.out").read_text()
    assert f"cannot listen on 127.0.0.1:{port}" in text and "--port" in text
    assert engine_pids(home) == []
