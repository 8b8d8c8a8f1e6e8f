"""An engine replica's own ``/metrics`` and the gateway's replica gauges, with the
bundled model answering for real."""

from __future__ import annotations

import os
import signal

import httpx

from tests.helpers import Server, eventually
from tests.telemetry.prom import delta, scrape, value


def test_a_replica_counts_its_requests_tokens_and_time_to_first_token(
    shared_server: Server,
) -> None:
    [replica] = shared_server.endpoint("smollm2")["replica_status"]
    before = scrape(replica["url"])
    stream = shared_server.openai().chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Name a colour."}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [c for c in stream][-1].usage
    assert usage is not None
    after = scrape(replica["url"])
    assert delta(before, after, "modelplane_engine_requests_total", kind="chat", status="200") == 1
    assert delta(before, after, "modelplane_engine_ttft_seconds_count") == 1
    tokens = "modelplane_engine_tokens_total"
    assert delta(before, after, tokens, type="completion") == usage.completion_tokens
    assert delta(before, after, tokens, type="prompt") == usage.prompt_tokens
    assert value(after, "modelplane_engine_up") == 1
    assert value(after, "modelplane_engine_active_requests") == 0
    assert value(after, "modelplane_engine_queue_waiting") == 0
    # A request the engine refuses is counted with its status.
    bad = httpx.post(replica["url"] + "/v1/chat/completions", json={"messages": "nope"})
    assert bad.status_code == 400
    again = scrape(replica["url"])
    assert delta(after, again, "modelplane_engine_requests_total", kind="chat", status="400") == 1


def test_the_gateway_reports_ready_replicas_and_restarts(shared_server: Server) -> None:
    def gauges() -> tuple[float, float] | None:
        s = scrape(shared_server.base_url)
        ready = value(s, "modelplane_replica_ready", endpoint="smollm2")
        return (
            (ready, value(s, "modelplane_replica_desired", endpoint="smollm2")) if ready else None
        )

    assert eventually(gauges, timeout=10, what="the replica gauges") == (1, 1)
    before = scrape(shared_server.base_url)
    [replica] = shared_server.endpoint("smollm2")["replica_status"]
    os.kill(replica["pid"], signal.SIGKILL)

    def restarted() -> bool:
        s = scrape(shared_server.base_url)
        return delta(before, s, "modelplane_replica_restarts_total", endpoint="smollm2") == 1

    eventually(restarted, timeout=30, what="the restart to be counted")
    shared_server.wait_ready("smollm2", 1)
    assert eventually(gauges, timeout=10, what="ready again") == (1, 1)
