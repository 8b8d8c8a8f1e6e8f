"""Real processes for tests: a modelplane server, an engine replica, and waiting helpers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from openai import OpenAI

ADMIN_KEY = "mp-test-admin-key-0123456789abcdefghijklmnopqrstuvwxyz"
COUNTING = "Count from 1 to 1000, separated by commas: 1, 2, 3, 4,"
# A completion the bundled model keeps writing until max_tokens (3000 tokens: tens of
# seconds): its repeat penalty would end the counting after ~70 tokens, so a negative
# frequency penalty keeps it repeating. Tests that need a generation still running
# when they act use this.
LONG = {"prompt": COUNTING, "max_tokens": 3000, "frequency_penalty": -1.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(
    check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


async def until(check: Callable[[], object], what: str, limit_s: float = 10.0) -> None:
    """Wait, on the running loop, for a condition background work brings about."""
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


class Replica:
    def __init__(self, url: str) -> None:
        self.url = url

    def health(self) -> dict[str, int]:
        data: dict[str, int] = httpx.get(self.url + "/health").json()
        return data


class Server:
    """``modelplane serve`` in a subprocess, against a given database and home."""

    def __init__(self, home: Path, database_url: str, **env: str) -> None:
        self.home = home
        self.database_url = database_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "MODELPLANE_HOME": str(home),
            "MODELPLANE_DATABASE_URL": database_url,
            "MODELPLANE_ADMIN_KEY": ADMIN_KEY,
            "MODELPLANE_ENGINE_THREADS": "1",
            "MODELPLANE_LOG_FORMAT": "json",
            "MODELPLANE_HEALTH_INTERVAL_S": "0.5",
            "MODELPLANE_CACHE_REFRESH_INTERVAL_S": "0.2",
            **env,
        }
        if not self.env["MODELPLANE_ADMIN_KEY"]:
            del self.env["MODELPLANE_ADMIN_KEY"]
        self.proc: subprocess.Popen[bytes] | None = None
        self._clients: dict[tuple[str, str], OpenAI] = {}
        self.http = httpx.Client(
            base_url=self.base_url, timeout=60.0, headers={"authorization": f"Bearer {ADMIN_KEY}"}
        )

    def start(self) -> Server:
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "modelplane", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        eventually(lambda: self._ready(), timeout=60, what="server /readyz")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"server exited with {self.proc.returncode}:\n"
                + (self.home / "server.log").read_text()[-3000:]
            )
        return httpx.get(self.base_url + "/readyz", timeout=2).status_code == 200

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)

    def close(self) -> None:
        self.stop()
        self.http.close()
        for c in self._clients.values():
            c.close()

    def openai(self, key: str = ADMIN_KEY) -> OpenAI:
        """An OpenAI SDK client for this server (one per key, closed with the server)."""
        client = self._clients.get((self.base_url, key))
        if client is None:
            client = OpenAI(base_url=self.base_url + "/v1", api_key=key, max_retries=0)
            self._clients[(self.base_url, key)] = client
        return client

    def endpoint(self, name: str) -> dict[str, Any]:
        resp = self.http.get(f"/api/endpoints/{name}")
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data

    @contextmanager
    def temporary_endpoint(
        self, name: str, replicas: int = 1, **options: Any
    ) -> Iterator[list[Replica]]:
        """An endpoint of the bundled model, ready, deleted afterwards; yields its
        replicas (each readable through ``.health()``)."""
        resp = self.http.post(
            "/api/endpoints",
            json={"name": name, "model": "smollm2", "replicas": replicas, "options": options},
        )
        assert resp.status_code == 201, resp.text
        try:
            status = self.wait_ready(name, replicas)["replica_status"]
            yield [Replica(r["url"]) for r in status]
        finally:
            self.http.delete(f"/api/endpoints/{name}")

    def add_external(self, name: str, base_url: str, model: str = "m", **options: Any) -> None:
        """An external ``openai`` endpoint (a fake upstream at ``base_url``)."""
        resp = self.http.post(
            "/api/endpoints",
            json={
                "name": name,
                "provider": "openai",
                "model": model,
                "options": {"base_url": base_url, **options},
            },
        )
        assert resp.status_code == 201, resp.text

    def wait_ready(self, name: str, count: int, timeout: float = 90.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            ep = self.endpoint(name)
            ready = [r for r in ep["replica_status"] if r["status"] == "ready"]
            return ep if len(ready) == count and len(ep["replica_status"]) == count else None

        result: dict[str, Any] = eventually(
            check, timeout=timeout, what=f"{count} ready replicas of {name}"
        )
        return result


def engine_pids(home: Path) -> list[int]:
    """Every live ``modelplane engine serve`` process started under ``home``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = b"engine" in cmd and b"serve" in cmd and str(home).encode() in b" ".join(cmd)
        if ours and pid_alive(int(proc.name)):
            pids.append(int(proc.name))
    return pids
