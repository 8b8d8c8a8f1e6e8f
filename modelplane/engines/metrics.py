"""Prometheus metrics of one engine replica, served at its own ``/metrics``.

A replica is one process, so this is a plain registry (never prometheus_client's
multiprocess mode). Names start with ``modelplane_engine_`` so that they do not add up
with the gateway's own when both are scraped: the gateway measures what clients see,
the replica what the model does (queueing, time to first token, decode speed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from modelplane.telemetry.metrics import (
    CONTENT_TYPE,
    LATENCY_BUCKETS,
    TPOT_BUCKETS,
    TTFT_BUCKETS,
)

__all__ = ["CONTENT_TYPE", "EngineMetrics"]


class EngineMetrics:
    def __init__(self, health: Callable[[], dict[str, Any]]) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "modelplane_engine_requests",
            "Generation requests by kind (chat, completion) and HTTP status",
            ("kind", "status"),
            registry=r,
        )
        self.duration = Histogram(
            "modelplane_engine_request_duration_seconds",
            "From a request's arrival at the replica to the end of its answer",
            ("kind",),
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.ttft = Histogram(
            "modelplane_engine_ttft_seconds",
            "Arrival to the first generated token (queueing and prompt processing)",
            registry=r,
            buckets=TTFT_BUCKETS,
        )
        self.tpot = Histogram(
            "modelplane_engine_time_per_output_token_seconds",
            "Time per generated token after the first",
            registry=r,
            buckets=TPOT_BUCKETS,
        )
        self.tokens = Counter(
            "modelplane_engine_tokens", "Tokens by type (prompt, completion)", ("type",), registry=r
        )
        self._prompt = self.tokens.labels("prompt")
        self._completion = self.tokens.labels("completion")
        self._health = health
        self._state: dict[str, Any] = {}
        for name, key, doc in (
            ("modelplane_engine_queue_waiting", "queued", "Requests waiting for a batch slot"),
            ("modelplane_engine_active_requests", "active", "Requests being generated"),
        ):
            Gauge(name, doc, registry=r).set_function(self._reader(key))
        Gauge("modelplane_engine_up", "1 while the model thread runs", registry=r).set_function(
            lambda: float(self._state.get("status") == "ok")
        )

    def _reader(self, key: str) -> Callable[[], float]:
        return lambda: float(self._state.get(key) or 0)

    def render(self) -> bytes:
        self._state = self._health()
        return generate_latest(self.registry)

    def observe(
        self,
        kind: str,
        status: int,
        elapsed: float,
        ttft: float | None = None,
        prompt: int = 0,
        completion: int = 0,
    ) -> None:
        self.requests.labels(kind, str(status)).inc()
        self.duration.labels(kind).observe(elapsed)
        if ttft is not None:
            self.ttft.observe(ttft)
            if completion > 1:
                self.tpot.observe((elapsed - ttft) / (completion - 1))
        if prompt:
            self._prompt.inc(prompt)
        if completion:
            self._completion.inc(completion)
