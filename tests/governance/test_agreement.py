"""Billing and metrics agree: for the same answers, streamed or not, with ``usage`` or
estimated without it, cut off by the upstream or left by the client mid-stream, the
usage record and the Prometheus counters say the same tokens and status (one answer
reader makes both). A real server, a fake OpenAI upstream on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelplane.store.records import Usage
from tests.gateway.accounts import usage_records
from tests.gateway.fakes import FakeUpstream
from tests.helpers import Server, eventually
from tests.telemetry.prom import delta, scrape


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    up = FakeUpstream("up")
    yield up
    up.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[Server]:
    home: Path = tmp_path_factory.mktemp("home")
    srv = Server(
        home, f"sqlite:///{home / 'modelplane.db'}", MODELPLANE_USAGE_FLUSH_INTERVAL_S="0.1"
    ).start()
    try:
        srv.add_external("up", fake.base_url)
        yield srv
    finally:
        srv.close()


def _record(server: Server, rid: str) -> Usage:
    def find() -> Usage | None:
        return next((r for r in usage_records(server.database_url) if r.request_id == rid), None)

    return eventually(find, timeout=10, what=f"the usage record of {rid}")


def _metrics_say(
    server: Server, before: dict[Any, float], after: dict[Any, float], status: int
) -> tuple[int, int, int]:
    labels = {"endpoint": "up", "team": "_none"}
    prompt = delta(before, after, "modelplane_tokens_total", **labels, type="prompt")
    completion = delta(before, after, "modelplane_tokens_total", **labels, type="completion")
    requests = delta(
        before,
        after,
        "modelplane_requests_total",
        kind="chat",
        route="up",
        endpoint="up",
        team="_none",
        status=str(status),
    )
    return int(prompt), int(completion), int(requests)


CASES = {
    "whole, with usage": ({"content": "prompt=5 tokens=9"}, False, 200, False),
    "whole, estimated": ({"content": "tokens=9 usage=none " + "x" * 60}, False, 200, True),
    "stream, with usage": ({"content": "prompt=4 tokens=7"}, True, 200, False),
    "stream, estimated": ({"content": "tokens=6"}, True, 200, True),
    "stream, cut off by the upstream": ({"content": "mode=break_stream tokens=3"}, True, 502, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_usage_records_and_metrics_count_the_same(server: Server, case: str) -> None:
    message, stream, status, estimated = CASES[case]
    rid = f"agree-{uuid.uuid4().hex[:12]}"
    body: dict[str, Any] = {"model": "up", "messages": [{"role": "user", **message}]}
    if stream:
        body |= {"stream": True}
        if "prompt=" in message["content"]:
            body |= {"stream_options": {"include_usage": True}}
    before = scrape(server.base_url)
    resp = server.http.post("/v1/chat/completions", json=body, headers={"x-request-id": rid})
    assert resp.status_code == 200
    record = _record(server, rid)
    after = eventually(
        lambda: (
            (s := scrape(server.base_url)) and _metrics_say(server, before, s, status)[2] == 1 and s
        ),
        timeout=10,
        what="the request in the metrics",
    )
    assert record.status == status and record.estimated == estimated
    assert (record.prompt_tokens, record.completion_tokens) == _metrics_say(
        server, before, after, status
    )[:2]
    assert record.completion_tokens > 0


def test_a_stream_its_client_left_counts_the_same(server: Server, fake: FakeUpstream) -> None:
    rid = f"left-{uuid.uuid4().hex[:12]}"
    body = {
        "model": "up",
        "messages": [{"role": "user", "content": "mode=gate_stream tokens=4"}],
        "stream": True,
    }
    before = scrape(server.base_url)
    fake.gate.clear()
    try:
        with (
            httpx.Client(base_url=server.base_url, timeout=30) as http,
            http.stream(
                "POST",
                "/v1/chat/completions",
                json=body,
                headers={**server.http.headers, "x-request-id": rid},
            ) as resp,
        ):
            assert resp.status_code == 200
            next(resp.iter_raw())  # the answer began; the client leaves mid-stream
        record = _record(server, rid)
    finally:
        fake.gate.set()
    after = scrape(server.base_url)
    assert record.status == 499 and record.estimated
    prompt, completion, requests = _metrics_say(server, before, after, 499)
    assert requests == 1 and (record.prompt_tokens, record.completion_tokens) == (
        prompt,
        completion,
    )
