"""Replicas dying under load: the client must not notice while one replica lives."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import ADMIN_KEY, Server, eventually


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home")
    srv = Server(home, f"sqlite:///{home / 'modelplane.db'}").start()
    try:
        yield srv
    finally:
        srv.close()


def test_killing_replicas_under_load_fails_no_request(server: Server) -> None:
    with server.temporary_endpoint("faulty", replicas=3):
        pids = [r["pid"] for r in server.endpoint("faulty")["replica_status"]]
        results: list[int] = []
        errors: list[str] = []
        stop = threading.Event()

        def load() -> None:
            with httpx.Client(
                base_url=server.base_url,
                headers={"authorization": f"Bearer {ADMIN_KEY}"},
                timeout=60,
            ) as http:
                while not stop.is_set():
                    resp = http.post(
                        "/v1/completions",
                        json={"model": "faulty", "prompt": "The sky is", "max_tokens": 8},
                    )
                    results.append(resp.status_code)
                    if resp.status_code != 200:
                        errors.append(resp.text)

        workers = [threading.Thread(target=load) for _ in range(4)]
        for w in workers:
            w.start()
        try:
            eventually(lambda: len(results) >= 20, timeout=60, what="steady load")
            os.kill(pids[0], signal.SIGKILL)
            after_one = len(results)
            eventually(lambda: len(results) >= after_one + 30, timeout=90, what="load, 1 killed")
            # Two down at once: whatever runs now, except the third replica.
            for r in server.endpoint("faulty")["replica_status"]:
                if r["pid"] and r["pid"] != pids[2]:
                    os.kill(r["pid"], signal.SIGKILL)
            after_two = len(results)
            eventually(lambda: len(results) >= after_two + 30, timeout=90, what="load, 2 killed")
        finally:
            stop.set()
            for w in workers:
                w.join(60)
        assert not errors, errors[:3]
        assert results.count(200) == len(results) >= 80
