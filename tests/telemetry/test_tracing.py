"""Traces of real requests: the server runs in this process (uvicorn in a thread) with
an in-memory span exporter, in front of a fake OpenAI upstream on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from modelplane.config import Settings
from modelplane.server.app import create_app
from modelplane.telemetry.tracing import Tracing, traces_url
from tests.gateway.fakes import FakeUpstream
from tests.helpers import ADMIN_KEY, eventually, free_port

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
APPS: dict[str, Any] = {}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    up = FakeUpstream("a")
    yield up
    up.close()


@pytest.fixture(scope="module")
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def base_url(
    tmp_path_factory: pytest.TempPathFactory, exporter: InMemorySpanExporter, fake: FakeUpstream
) -> Iterator[str]:
    home: Path = tmp_path_factory.mktemp("home")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings(
        home=home,
        database_url=f"sqlite:///{home / 'modelplane.db'}",
        admin_key=ADMIN_KEY,  # type: ignore[arg-type]
        port=free_port(),
        cache_refresh_interval_s=0.2,
        access_log=False,
        otel_sample_ratio=1.0,
    )
    app = create_app(settings, tracer_provider=provider)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = settings.base_url
    eventually(lambda: httpx.get(url + "/readyz").status_code == 200, timeout=60, what="ready")
    resp = httpx.post(
        url + "/api/endpoints",
        headers=_auth(),
        json={
            "name": "a",
            "provider": "openai",
            "model": "upstream-a",
            "options": {"base_url": fake.base_url},
        },
    )
    assert resp.status_code == 201, resp.text
    APPS[url] = app
    yield url
    server.should_exit = True
    thread.join(30)
    provider.shutdown()


def _auth(**extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {ADMIN_KEY}", **extra}


@pytest.fixture(autouse=True)
def _clear(exporter: InMemorySpanExporter, fake: FakeUpstream, base_url: str) -> None:
    fake.reset()
    exporter.clear()


def _trace(exporter: InMemorySpanExporter, request_id: str) -> list[ReadableSpan]:
    """The spans of the trace whose root carries ``request_id``, once its root ended."""

    def find() -> list[ReadableSpan] | None:
        spans = exporter.get_finished_spans()
        roots = [
            s
            for s in spans
            if s.name == "gateway.request"
            and (s.attributes or {}).get("modelplane.request_id") == request_id
        ]
        if not roots:
            return None
        assert len(roots) == 1
        tid = roots[0].context.trace_id
        return [s for s in spans if s.context.trace_id == tid]

    found: list[ReadableSpan] = eventually(find, timeout=5, what=f"the trace of {request_id}")
    return found


def _by_name(spans: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def _chat(base_url: str, rid: str, headers: dict[str, str] | None = None, **body: Any) -> Any:
    resp = httpx.post(
        base_url + "/v1/chat/completions",
        headers=_auth(**{"x-request-id": rid, **(headers or {})}),
        json={"model": "a", "messages": [{"role": "user", "content": "hi"}], **body},
        timeout=30,
    )
    return resp


def test_one_trace_per_request_joined_to_the_callers(
    base_url: str, exporter: InMemorySpanExporter, fake: FakeUpstream
) -> None:
    resp = _chat(base_url, "trace-1", {"traceparent": TRACEPARENT, "tracestate": "vendor=1"})
    assert resp.status_code == 200
    spans = _trace(exporter, "trace-1")
    names = _by_name(spans)
    assert set(names) == {"gateway.request", "auth", "route", "limits", "upstream", "usage.record"}
    assert all(len(v) == 1 for v in names.values())
    [root] = names["gateway.request"]
    # The caller's trace: same trace id, the caller's span as the parent.
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert root.parent is not None and format(root.parent.span_id, "016x") == CALLER_SPAN
    assert root.kind == SpanKind.SERVER
    attrs = root.attributes or {}
    assert attrs["modelplane.request_id"] == "trace-1"
    assert attrs["modelplane.route"] == "a" and attrs["modelplane.endpoint"] == "a"
    assert attrs["http.response.status_code"] == 200
    assert attrs["gen_ai.usage.output_tokens"] == 3 and attrs["gen_ai.usage.input_tokens"] == 3
    for name in ("auth", "route", "limits", "upstream", "usage.record"):
        [child] = names[name]
        assert child.parent is not None and child.parent.span_id == root.context.span_id, name
        assert root.start_time <= child.start_time <= child.end_time <= root.end_time, name
    # In order: auth, route, limits, upstream, usage.record.
    order = sorted(spans, key=lambda s: s.start_time)
    assert [s.name for s in order] == [
        "gateway.request",
        "auth",
        "route",
        "limits",
        "upstream",
        "usage.record",
    ]
    [up] = names["upstream"]
    assert up.kind == SpanKind.CLIENT
    assert (up.attributes or {})["modelplane.endpoint"] == "a"
    assert (up.attributes or {})["http.response.status_code"] == 200
    # The upstream was called with this attempt's span as its parent, and the state.
    sent = fake.headers[-1]
    assert sent["traceparent"] == f"00-{TRACE_ID}-{up.context.span_id:016x}-01"
    assert sent["tracestate"] == "vendor=1"


def test_streams_end_their_trace_when_they_end(
    base_url: str, exporter: InMemorySpanExporter, fake: FakeUpstream
) -> None:
    resp = _chat(
        base_url,
        "trace-stream",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "tokens=4"}],
    )
    assert resp.status_code == 200 and resp.text.endswith("data: [DONE]\n\n")
    spans = _trace(exporter, "trace-stream")
    names = _by_name(spans)
    [root], [up] = names["gateway.request"], names["upstream"]
    assert root.parent is None  # no traceparent came in: a trace of its own
    assert [e.name for e in up.events] == ["first_token"]
    first = up.events[0].timestamp
    assert up.start_time < first <= up.end_time <= root.end_time
    assert (root.attributes or {})["gen_ai.usage.output_tokens"] == 4
    sent = fake.headers[-1]["traceparent"]
    assert sent.split("-")[1] == format(root.context.trace_id, "032x")


def test_every_attempt_is_a_span_and_failures_say_why(
    base_url: str, exporter: InMemorySpanExporter, fake: FakeUpstream
) -> None:
    resp = httpx.put(
        base_url + "/api/routes/flaky",
        headers=_auth(),
        json={"targets": [{"endpoint": "a"}], "retries": {"attempts": 2, "backoff_s": 0.01}},
    )
    assert resp.status_code in (200, 201), resp.text

    def routed() -> bool:
        return bool(_chat(base_url, f"probe-{time.monotonic()}", model="flaky").status_code == 200)

    eventually(routed, timeout=10, what="the route")
    fake.script.extend(["500", "503"])
    assert _chat(base_url, "trace-retry", model="flaky").status_code == 200
    ups = sorted(_by_name(_trace(exporter, "trace-retry"))["upstream"], key=lambda s: s.start_time)
    assert [(s.attributes or {})["http.response.status_code"] for s in ups] == [500, 503, 200]
    assert [s.status.is_ok for s in ups] == [False, False, True]
    parents = {s.parent.span_id for s in ups if s.parent is not None}
    assert len(parents) == 1
    # Each attempt sent its own span as the parent.
    sent = [h["traceparent"].split("-")[2] for h in fake.headers[-3:]]
    assert sent == [format(s.context.span_id, "016x") for s in ups]


def test_refusals_and_unknown_models_are_traced_too(
    base_url: str, exporter: InMemorySpanExporter
) -> None:
    assert _chat(base_url, "trace-404", model="nope").status_code == 404
    names = _by_name(_trace(exporter, "trace-404"))
    [route] = names["route"]
    assert not route.status.is_ok and (route.attributes or {})["error.type"] == "ModelNotFound"
    assert "upstream" not in names
    [root] = names["gateway.request"]
    assert (root.attributes or {})["http.response.status_code"] == 404
    resp = httpx.post(
        base_url + "/v1/chat/completions",
        headers={"authorization": "Bearer wrong", "x-request-id": "trace-401"},
        json={"model": "a", "messages": []},
    )
    assert resp.status_code == 401
    names = _by_name(_trace(exporter, "trace-401"))
    assert set(names) == {"gateway.request", "auth"} and not names["auth"][0].status.is_ok


def test_control_plane_calls_get_a_span(base_url: str, exporter: InMemorySpanExporter) -> None:
    resp = httpx.get(
        base_url + "/api/endpoints/a",
        headers=_auth(traceparent=TRACEPARENT, **{"x-request-id": "cp"}),
    )
    assert resp.status_code == 200

    def found() -> ReadableSpan | None:
        spans = [s for s in exporter.get_finished_spans() if s.name == "GET /api/endpoints/{name}"]
        return spans[-1] if spans else None

    span: ReadableSpan = eventually(found, timeout=5, what="the control-plane span")
    assert span.kind == SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    attrs = span.attributes or {}
    assert attrs["modelplane.request_id"] == "cp" and attrs["http.response.status_code"] == 200


def test_requests_not_sampled_make_no_span_and_pass_traceparent_on(
    base_url: str, exporter: InMemorySpanExporter, fake: FakeUpstream
) -> None:
    tracing = APPS[base_url].state.platform.tracing
    tracing.sample_ratio = 0.0
    try:
        unsampled = f"00-{TRACE_ID}-{CALLER_SPAN}-00"
        assert _chat(base_url, "not-1").status_code == 200
        assert _chat(base_url, "not-2", {"traceparent": unsampled}).status_code == 200
        assert fake.headers[-1]["traceparent"] == unsampled  # as it came
        assert _chat(base_url, "asked", {"traceparent": TRACEPARENT}).status_code == 200
        # A caller that asks for a trace gets one, whatever the ratio.
        assert {s.name for s in _trace(exporter, "asked")} >= {"gateway.request", "upstream"}
        traced = {
            (s.attributes or {}).get("modelplane.request_id") for s in exporter.get_finished_spans()
        }
        assert not {"not-1", "not-2"} & traced
        assert len({s.context.trace_id for s in exporter.get_finished_spans()}) == 1
    finally:
        tracing.sample_ratio = 1.0


def test_the_sampling_decision_follows_the_callers_flag_else_the_ratio() -> None:
    never = Tracing(TracerProvider(), sample_ratio=0.0)
    assert never.sampled({"traceparent": TRACEPARENT})
    assert not never.sampled({"traceparent": TRACEPARENT[:-2] + "00"})
    assert not never.sampled({}) and not never.sampled({"traceparent": "garbage"})
    always = Tracing(TracerProvider(), sample_ratio=1.0)
    assert always.sampled({}) and not always.sampled({"traceparent": TRACEPARENT[:-2] + "00"})
    assert Tracing().tracer is None


def test_an_otlp_endpoint_configures_an_exporter(tmp_path: Path) -> None:
    assert traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"
    settings = Settings(home=tmp_path, otel_endpoint="http://127.0.0.1:9")
    traces = Tracing.configure(settings.otel_endpoint, "svc", settings.otel_sample_ratio)
    try:
        assert traces.tracer is not None and traces.owned
        assert traces.sample_ratio == 0.01
    finally:
        traces.close()
    assert Tracing.configure("").tracer is None
