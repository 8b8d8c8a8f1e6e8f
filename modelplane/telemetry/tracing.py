"""OpenTelemetry traces of the request path and the control plane.

Tracing is on when ``otel_endpoint`` is set (spans are exported over OTLP/HTTP, in
batches, from a background thread) or when the embedding code hands ``create_app`` a
tracer provider of its own (tests use an in-memory exporter that way). Otherwise
:attr:`Tracing.tracer` is ``None``, and every call site checks that first: no span
objects, no context switches, nothing.

Which requests are traced is decided once, as a request arrives (head sampling): the
caller's ``traceparent`` decides when there is one (its sampled flag), else
``otel_sample_ratio``. A request that is not traced costs a random number: no span is
made, not even a non-recording one (the SDK's cost ~60 µs a request for those), and
its ``traceparent`` goes upstream as it came. A traced request costs about
0.5 ms of CPU with the OpenTelemetry SDK (six spans, their OTLP encoding included):
see bench/README.md.

One trace per ``/v1`` request (the trace of the caller when its request carries a W3C
``traceparent``)::

    gateway.request                 SERVER; modelplane.request_id, route, endpoint, status
    ├── auth
    ├── route                       the public model name resolved to a route
    ├── limits                      budgets and rate limits (may refuse: 429)
    ├── upstream                    CLIENT, one per attempt; endpoint, url, status,
    │                               event ``first_token`` when a stream starts
    └── usage.record                the outcome handed to the usage recorder

The upstream receives the ``traceparent`` of its ``upstream`` span (and the caller's
``tracestate``), so an engine or provider that traces joins the same trace. Control
plane calls (``/api/...``) get one SERVER span each, named after their route.
"""

from __future__ import annotations

import importlib.util
import logging
import random
from collections.abc import Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

PROPAGATOR = TraceContextTextMapPropagator()
_TRACED: ContextVar[bool] = ContextVar("modelplane_traced", default=False)
"""Whether the request being served is traced (set by ``start_request``)."""
REQUEST_ID = "modelplane.request_id"
OTLP_MODULE = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


def otlp_installed() -> bool:
    try:
        return importlib.util.find_spec(OTLP_MODULE) is not None
    except ModuleNotFoundError:
        return False


def traces_url(endpoint: str) -> str:
    """``http://collector:4318`` or the full ``…/v1/traces`` URL, as the full URL."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


class Tracing:
    """The tracer of this process (``None`` when tracing is off), and which requests
    it traces."""

    def __init__(
        self,
        provider: TracerProvider | None = None,
        *,
        owned: bool = False,
        sample_ratio: float = 1.0,
    ) -> None:
        self.provider = provider
        self.owned = owned
        self.sample_ratio = sample_ratio
        self.tracer: Tracer | None = (
            provider.get_tracer("modelplane") if provider is not None else None
        )

    def sampled(self, headers: Mapping[str, str]) -> bool:
        """Whether to trace a request: its ``traceparent``'s sampled flag, else the
        ratio (with a provider's own sampler deciding after this)."""
        parent = headers.get("traceparent")
        if parent is not None and len(parent) == 55:
            try:
                return bool(int(parent[53:], 16) & 1)
            except ValueError:
                pass  # malformed: as if there were none
        return self.sample_ratio >= 1.0 or random.random() < self.sample_ratio

    @classmethod
    def configure(
        cls,
        endpoint: str,
        service_name: str = "modelplane",
        sample_ratio: float = 1.0,
        provider: TracerProvider | None = None,
    ) -> Tracing:
        """``provider`` when given (its owner shuts it down), else an OTLP exporter to
        ``endpoint`` when set, else off."""
        if provider is not None:
            return cls(provider, sample_ratio=sample_ratio)
        if not endpoint:
            return cls()
        # Imported here: a server that does not trace never loads the SDK.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        # Sampling is decided before a span is made (``sampled``): the SDK records all.
        own = TracerProvider(
            resource=Resource.create({"service.name": service_name}), sampler=ALWAYS_ON
        )
        own.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint))))
        log.info("tracing: spans go to %s (sampled: %g)", traces_url(endpoint), sample_ratio)
        return cls(own, owned=True, sample_ratio=sample_ratio)

    def close(self) -> None:
        if self.provider is not None and self.owned:
            self.provider.shutdown()  # exports what is still queued


class _NoSpan:
    """``span()`` when tracing is off: a context manager that does nothing."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


NO_SPAN = _NoSpan()


class _Child:
    """A span around a block, ended when it exits; an exception marks it failed."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def __enter__(self) -> Span:
        return self.span

    def __exit__(
        self,
        typ: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            fail(self.span, exc)
        self.span.end()


def span(tracer: Tracer | None, name: str) -> AbstractContextManager[Span | None]:
    """``with span(tracer, "limits"):`` a child of the current span when the request is
    traced, else nothing."""
    if tracer is None or not _TRACED.get():
        return NO_SPAN
    return _Child(tracer.start_span(name))


def traced() -> bool:
    """Whether the request being served is traced."""
    return _TRACED.get()


def fail(span: Span, exc: BaseException) -> None:
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    span.set_attribute("error.type", type(exc).__name__)


Tokens = tuple[Token[Context], Token[bool]]


def start_request(
    tracer: Tracer, headers: Mapping[str, str], request_id: str, path: str, method: str = "POST"
) -> tuple[Span, Tokens]:
    """A traced request's ``gateway.request`` span (a child of the caller's
    ``traceparent`` when there is one), made current until ``detach``."""
    parent = PROPAGATOR.extract(headers) if "traceparent" in headers else None
    root = tracer.start_span(
        "gateway.request",
        context=parent,
        kind=SpanKind.SERVER,
        attributes={REQUEST_ID: request_id, "http.request.method": method, "url.path": path},
    )
    token = otel_context.attach(trace.set_span_in_context(root, parent))
    return root, (token, _TRACED.set(True))


def detach(tokens: Tokens) -> None:
    otel_context.detach(tokens[0])
    _TRACED.reset(tokens[1])


def upstream_span(tracer: Tracer, endpoint: str, url: str) -> tuple[Span, dict[str, str]]:
    """An ``upstream`` span for one attempt, and the headers that carry it upstream."""
    s = tracer.start_span(
        "upstream",
        kind=SpanKind.CLIENT,
        attributes={"modelplane.endpoint": endpoint, "server.address": url},
    )
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier, trace.set_span_in_context(s))
    return s, carrier


def end_status(s: Span, status: int) -> None:
    """Record the HTTP status of a span's answer (5xx: the span failed)."""
    s.set_attribute("http.response.status_code", status)
    if status >= 500:
        s.set_status(Status(StatusCode.ERROR))
