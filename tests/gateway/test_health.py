"""Active health checks of external endpoints: the counting on its own, the checker and
the router in process against a stub provider, then a real server against fake
upstreams (tests/gateway/fakes.py) whose ``GET /v1/models`` a test breaks and mends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from modelplane.errors import NoReadyReplica, UpstreamError
from modelplane.gateway.health import Health, HealthChecker
from modelplane.gateway.router import Router
from modelplane.providers.base import Provider, Target, Timeouts
from modelplane.runtimes.base import ReplicaStatus
from modelplane.spec import HealthCheck
from modelplane.store.records import Endpoint
from tests.gateway.fakes import FakeUpstream
from tests.helpers import Server, eventually, until
from tests.telemetry.prom import scrape, value

KEY = "sk-health-test-5f0c8a1e9b7d4c2a"
"""The primary's API key, from the server's environment: it must never show."""
KEY_ENV = "HEALTH_TEST_API_KEY"
CHECK = {"interval_s": 0.1, "timeout_s": 2, "unhealthy_after": 2, "healthy_after": 2}
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_out_after_unhealthy_after_failures_in_a_row() -> None:
    check = HealthCheck(unhealthy_after=3)
    h = Health()
    assert [h.record("down", check, NOW) for _ in range(2)] == [False, False]
    assert h.record(None, check, NOW) is False  # a pass starts the count again
    assert [h.record("down", check, NOW) for _ in range(3)] == [False, False, True]
    assert not h.healthy and h.failures == 3 and h.last_error == "down"
    assert h.record("still down", check, NOW) is False  # already out: no second flip
    assert h.view()["status"] == "unhealthy"


def test_back_after_healthy_after_passes_in_a_row() -> None:
    check = HealthCheck(unhealthy_after=1, healthy_after=2)
    h = Health()
    assert h.view()["status"] == "unchecked" and h.healthy  # in service until checked
    assert h.record("down", check, NOW) is True
    assert h.record(None, check, NOW) is False
    assert h.record("down", check, NOW) is False  # a failure starts the count again
    assert [h.record(None, check, NOW) for _ in range(2)] == [False, True]
    view = h.view()
    assert view["status"] == "healthy" and view["consecutive_successes"] == 2
    assert view["last_error"] == "down" and view["checked_at"] == NOW.isoformat()


def test_defaults() -> None:
    check = HealthCheck.model_validate({})
    assert (check.interval_s, check.timeout_s, check.unhealthy_after, check.healthy_after) == (
        10.0,
        3.0,
        2,
        1,
    )
    assert check.path is None


class Stub:
    """A provider's ``health`` whose answer the test sets (``fail``: the reason)."""

    def __init__(self) -> None:
        self.fail: str | None = None
        self.checks = 0

    async def health(self, target: Target, *, timeouts: Timeouts) -> None:
        self.checks += 1
        if self.fail:
            raise UpstreamError(self.fail)


def endpoint(options: dict[str, Any], ep_id: str = "1") -> Endpoint:
    now = datetime.now(UTC)
    return Endpoint(ep_id, "up", "", "openai", "m", 0, options, 1, now, now)


async def test_checker_follows_the_endpoints_and_flips_the_replica() -> None:
    stub = Stub()
    check = {"interval_s": 0.1, "unhealthy_after": 2}
    snapshot = {"up": endpoint({"base_url": "http://up", "health_check": check})}
    router = Router(lambda: snapshot, lambda name: [])

    def upstream(name: str) -> tuple[Provider, Target]:
        return stub, Target("http://up", snapshot[name].options)  # type: ignore[return-value]

    def status() -> ReplicaStatus:
        return router.replicas(snapshot["up"])[0].status

    checker = HealthChecker(lambda: snapshot, router, upstream)
    checker.sync()
    try:
        await until(lambda: stub.checks, "a first check")
        assert status() == ReplicaStatus.READY and router.pick(snapshot["up"]) == "http://up"
        stub.fail = "GET /models answered HTTP 500"
        await until(lambda: status() == ReplicaStatus.FAILED, "the endpoint out")
        with pytest.raises(NoReadyReplica, match=r"health check is failing \(GET /models"):
            router.pick(snapshot["up"])
        health = checker.state("up")
        assert health is not None and health.failures == 2

        # A changed endpoint (a new snapshot) keeps its state until checks say otherwise.
        snapshot = {"up": endpoint({"base_url": "http://up", "health_check": {**check}})}
        checker.sync()
        assert status() == ReplicaStatus.FAILED
        stub.fail = None
        await until(lambda: status() == ReplicaStatus.READY, "the endpoint back")

        # Without health_check, it is no longer checked and counts as in service.
        stub.fail = "down"
        await until(lambda: status() == ReplicaStatus.FAILED, "the endpoint out again")
        snapshot = {"up": endpoint({"base_url": "http://up"})}
        checker.sync()
        assert checker.state("up") is None
        assert status() == ReplicaStatus.READY
    finally:
        await checker.close()


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    ups = {n: FakeUpstream(n) for n in ("primary", "fallback")}
    yield ups
    for u in ups.values():
        u.close()


def create(server: Server, name: str, **body: Any) -> httpx.Response:
    return server.http.post("/api/endpoints", json={"name": name, "model": "m", **body})


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, fakes: dict[str, FakeUpstream]
) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home")
    srv = Server(home, f"sqlite:///{home / 'modelplane.db'}", **{KEY_ENV: KEY}).start()
    try:
        primary = {
            "base_url": fakes["primary"].base_url,
            "credentials": {"api_key": f"env:{KEY_ENV}"},
            "health_check": CHECK,
        }
        resp = create(srv, "primary", provider="openai", options=primary)
        assert resp.status_code == 201, resp.text
        fallback = {"base_url": fakes["fallback"].base_url}
        resp = create(srv, "fallback", provider="openai", options=fallback)
        assert resp.status_code == 201, resp.text
        for name, spec in {
            "chat": {"targets": [{"endpoint": "primary"}], "fallbacks": ["fallback"]},
            "alone": {"targets": [{"endpoint": "primary"}]},
        }.items():
            resp = srv.http.put(f"/api/routes/{name}", json=spec)
            assert resp.status_code in (200, 201), resp.text
        yield srv
    finally:
        srv.close()


@pytest.fixture
def healthy(fakes: dict[str, FakeUpstream], server: Server) -> None:
    for f in fakes.values():
        f.reset()
    eventually(
        lambda: server.endpoint("primary")["health"]["status"] == "healthy",
        timeout=10,
        what="the primary's health check to pass",
    )


def replicas(server: Server, endpoint: str) -> tuple[float, float]:
    """``modelplane_replica_ready`` and ``modelplane_replica_desired`` of an endpoint."""
    samples = scrape(server.base_url)
    return (
        value(samples, "modelplane_replica_ready", endpoint=endpoint),
        value(samples, "modelplane_replica_desired", endpoint=endpoint),
    )


def chat(server: Server, model: str) -> httpx.Response:
    return server.http.post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )


@pytest.mark.usefixtures("healthy")
def test_failing_check_takes_the_primary_out_and_a_passing_one_puts_it_back(
    server: Server, fakes: dict[str, FakeUpstream]
) -> None:
    primary, fallback = fakes["primary"], fakes["fallback"]
    assert chat(server, "chat").headers["x-modelplane-target"] == "primary"
    # The checks GET the provider's model list with the endpoint's credentials.
    checks = eventually(lambda: list(primary.model_checks), timeout=10, what="a check")
    assert checks[-1]["authorization"] == f"Bearer {KEY}"

    primary.models = "500"
    eventually(
        lambda: server.endpoint("primary")["status"] == "failed",
        timeout=10,
        what="the primary to be out of service",
    )
    # The replica gauges (what the "replica down" alert reads) say so too.
    eventually(lambda: replicas(server, "primary") == (0.0, 1.0), timeout=10, what="the gauge at 0")
    assert replicas(server, "fallback") == (0.0, 0.0)  # no check: not counted
    served = len(primary.calls)
    for _ in range(5):
        resp = chat(server, "chat")
        assert resp.status_code == 200, resp.text
        assert resp.headers["x-modelplane-target"] == "fallback"
    assert len(primary.calls) == served  # not tried once while out
    assert len(fallback.calls) == 5

    primary.models = "ok"
    eventually(
        lambda: server.endpoint("primary")["status"] == "external",
        timeout=10,
        what="the primary back in service",
    )
    assert chat(server, "chat").headers["x-modelplane-target"] == "primary"
    assert len(primary.calls) == served + 1
    eventually(lambda: replicas(server, "primary") == (1.0, 1.0), timeout=10, what="the gauge at 1")


@pytest.mark.usefixtures("healthy")
def test_failing_endpoint_shows_why_without_its_key(
    server: Server, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["primary"].models = "500"  # its body echoes the authorization header
    eventually(
        lambda: server.endpoint("primary")["status"] == "failed",
        timeout=10,
        what="the primary to be out of service",
    )
    detail = server.http.get("/api/endpoints/primary")
    health = detail.json()["health"]
    assert health["status"] == "unhealthy"
    assert health["last_error"] == "GET /models answered HTTP 500"
    assert health["consecutive_failures"] >= 2 and health["checked_at"]
    listed = server.http.get("/api/endpoints")
    [row] = [ep for ep in listed.json()["data"] if ep["name"] == "primary"]
    assert row["status"] == "failed" and row["health"]["last_error"] == health["last_error"]

    # With nothing to fall back on, the answer says what is wrong.
    refused = chat(server, "alone")
    assert refused.status_code == 503
    message = refused.json()["error"]["message"]
    assert "health check is failing" in message and "HTTP 500" in message
    assert not fakes["primary"].calls

    for text in (detail.text, listed.text, refused.text, (server.home / "server.log").read_text()):
        assert KEY not in text


@pytest.mark.usefixtures("healthy")
def test_endpoints_without_a_check_are_not_checked(
    server: Server, fakes: dict[str, FakeUpstream]
) -> None:
    view = server.endpoint("fallback")
    assert view["status"] == "external" and "health" not in view
    assert chat(server, "fallback").status_code == 200
    assert not fakes["fallback"].model_checks


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"provider": "openai", "options": {"health_check": {"interval_s": 0}}}, "interval_s"),
        ({"provider": "openai", "options": {"health_check": {"every": 5}}}, "every"),
        ({"provider": "ollama", "options": {"health_check": {"path": "health"}}}, "path"),
        ({"provider": "openai", "options": {"health_check": {"unhealthy_after": 0}}}, "unhealthy"),
        (
            {"provider": "bedrock", "options": {"region": "eu-west-1", "health_check": {}}},
            "needs a 'path' for the bedrock provider",
        ),
        (
            {"provider": "vertex", "options": {"project": "p", "region": "r", "health_check": {}}},
            "needs a 'path' for the vertex provider",
        ),
        ({"options": {"health_check": {}}}, "for external endpoints"),
    ],
)
def test_invalid_health_checks_are_refused(server: Server, body: dict[str, Any], says: str) -> None:
    resp = create(server, "refused", **body)
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert says in resp.json()["detail"]


def test_health_check_is_validated_on_change(server: Server) -> None:
    # Credentials from variables that are not set: its checks fail at once, unsigned.
    creds = {"aws_access_key_id": "env:HEALTH_TEST_UNSET", "aws_secret_access_key": "env:X_UNSET"}
    opts = {"region": "eu-west-1", "credentials": creds, "health_check": {"path": "/ping"}}
    assert create(server, "aws", provider="bedrock", options=opts).status_code == 201
    try:
        bad = server.http.patch(
            "/api/endpoints/aws", json={"options": {"region": "eu-west-1", "health_check": {}}}
        )
        assert bad.status_code == 400 and "'path'" in bad.json()["detail"]
        bad = server.http.patch(
            "/api/endpoints/aws", json={"options": {"health_check": {"timeout_s": -1}}}
        )
        assert bad.status_code == 400 and "timeout_s" in bad.json()["detail"]
    finally:
        server.http.delete("/api/endpoints/aws")
