"""``modelplane usage`` against a running server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cli.test_commands import run
from tests.gateway.accounts import chat_body
from tests.gateway.fakes import FakeUpstream
from tests.helpers import Server, eventually


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home")
    fake = FakeUpstream("up")
    srv = Server(home, f"sqlite:///{home / 'modelplane.db'}").start()
    try:
        resp = srv.http.post(
            "/api/endpoints",
            json={
                "name": "up",
                "provider": "openai",
                "model": "m",
                "options": {
                    "base_url": fake.base_url,
                    "price": {"input_per_1m": 1000.0, "output_per_1m": 1000.0},
                },
            },
        )
        assert resp.status_code == 201, resp.text
        for words in ("prompt=10 tokens=20", "prompt=10 tokens=20", "mode=bad_request"):
            srv.http.post("/v1/chat/completions", json=chat_body(words))
        eventually(
            lambda: srv.http.get("/api/usage").json()["total"]["requests"] == 3,
            timeout=10,
            what="the usage records",
        )
        yield srv
    finally:
        srv.close()
        fake.close()


def test_usage_table(server: Server) -> None:
    result = run(server, "usage", "--by", "endpoint")
    assert result.returncode == 0, result.stderr
    assert "ENDPOINT" in result.stdout and "COST (USD)" in result.stdout
    lines = [line for line in result.stdout.splitlines() if line.startswith("│")]
    up = next(line for line in lines if line.split("│")[1].strip() == "up")
    # 3 requests (one refused by the upstream), 20 prompt and 40 completion tokens, $0.06.
    assert [c.strip() for c in up.split("│")[2:7]] == ["3", "1", "20", "40", "0.0600"]
    total = next(line for line in lines if "total" in line)
    assert [c.strip() for c in total.split("│")[2:4]] == ["3", "1"]
    overall = run(server, "usage")
    assert overall.returncode == 0, overall.stderr
    rows = [line for line in overall.stdout.splitlines() if line.startswith("│")]
    assert [[c.strip() for c in row.split("│")[1:3]] for row in rows] == [["3", "1"]]


def test_usage_csv_and_bad_grouping(server: Server) -> None:
    result = run(server, "usage", "--by", "day", "--csv")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()
    assert header.startswith("day,requests,errors")
    assert row.split(",")[1:3] == ["3", "1"]
    bad = run(server, "usage", "--by", "colour")
    assert bad.returncode == 2 and "--by" in bad.stderr
