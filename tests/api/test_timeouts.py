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


def test_local_endpoints_have_a_shorter_default_that_a_route_overrides(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # The provider-sized default stays long; local replicas get their own.
    server = Server(home, f"sqlite:///{home / 'mp.db'}", MODELPLANE_LOCAL_UPSTREAM_TIMEOUT_S="1")
    server.start()
    try:
        created = server.http.post("/api/endpoints", json={"name": "slow", "model": "smollm2"})
        assert created.status_code == 201
        url = server.wait_ready("slow", 1)["replica_status"][0]["url"]
        r = server.http.post("/v1/completions", json={"model": "slow", **LONG})
        assert r.status_code == 504
        assert "within 1 s (MODELPLANE_LOCAL_UPSTREAM_TIMEOUT_S)" in r.json()["error"]["message"]
        eventually(
            lambda: httpx.get(url + "/health").json()["active"] == 0,
            timeout=5,
            what="the abandoned generation to stop",
        )
        # A route's own total wins, even when it is the longer one.
        route = {"targets": [{"endpoint": "slow"}], "timeouts": {"total_s": 2}}
        assert server.http.put("/api/routes/patient", json=route).status_code in (200, 201)
        r = server.http.post("/v1/completions", json={"model": "patient", **LONG})
        assert r.status_code == 504
        assert "within 2 s (timeouts.total_s)" in r.json()["error"]["message"]
    finally:
        server.close()
