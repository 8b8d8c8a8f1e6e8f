"""The gateway's total upstream timeout: a clear 504, and the replica is freed."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers import LONG, Server, eventually


def test_upstream_timeout_is_504_and_frees_the_replica(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = Server(home, f"sqlite:///{home / 'mp.db'}", MODELPLANE_UPSTREAM_TIMEOUT_S="1")
    server.start()
    try:
        assert (
            server.http.post(
                "/api/endpoints", json={"name": "slow", "model": "smollm2"}
            ).status_code
            == 201
        )
        url = server.wait_ready("slow", 1)["replica_status"][0]["url"]
        r = server.http.post("/v1/completions", json={"model": "slow", **LONG})
        assert r.status_code == 504
        err = r.json()["error"]
        assert err["code"] == "upstream_timeout" and "1 s" in err["message"]
        eventually(
            lambda: httpx.get(url + "/health").json()["active"] == 0,
            timeout=5,
            what="the abandoned generation to stop",
        )
    finally:
        server.close()
