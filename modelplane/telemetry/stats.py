"""Live request statistics for the dashboard, kept in this process.

The last ten minutes in one-second buckets, per endpoint: requests, errors (status
400 and above), a latency histogram and sum, a time-to-first-chunk histogram for
streams, and completion tokens; plus the last 50 errors. Recording is O(1) and takes
no lock (one event loop); reading adds the buckets of the window asked for.

Endpoints are labelled by the endpoint that answered (the reply's target), or by the
requested model when there is none (errors, cache hits). Requested names come from
clients, so at most ``max_labels`` labels are kept; the rest count under ``other``.
Errors keep the time, model, status, message and request id: never a prompt or a key.

With ``serve --workers N`` each process sees its own requests only.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any

from modelplane.errors import ModelplaneError
from modelplane.telemetry.answers import Answer, AnswerStream, error_message, stream_error
from modelplane.telemetry.histogram import Histogram
from modelplane.telemetry.logging import redact

OTHER = "other"


class _Bucket:
    __slots__ = ("errors", "latency", "latency_sum", "requests", "tokens", "ttft")

    def __init__(self) -> None:
        self.requests = self.errors = self.tokens = 0
        self.latency_sum = 0.0
        self.latency = Histogram()
        self.ttft = Histogram()

    def add(self, other: _Bucket) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latency_sum += other.latency_sum
        self.tokens += other.tokens
        self.latency.merge(other.latency)
        self.ttft.merge(other.ttft)


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    at: float
    model: str
    endpoint: str | None
    status: int
    message: str
    request_id: str


class RequestStats:
    """The collector: ``answer``, ``failed`` and ``stream`` on the request path (a few
    microseconds each), ``snapshot`` and ``recent_errors`` for the dashboard."""

    def __init__(
        self,
        *,
        window_s: int = 600,
        max_labels: int = 100,
        errors_kept: int = 50,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.window_s = window_s
        self.max_labels = max_labels
        self.clock = clock
        self.timer = timer
        """Measures durations; ``started`` arguments are its readings."""
        self._seconds = [-1] * window_s
        self._slots: list[dict[str, _Bucket]] = [{} for _ in range(window_s)]
        self._labels: dict[str, int] = {}  # label -> the last second it was recorded
        self._swept = -1
        self.errors: deque[ErrorEvent] = deque(maxlen=errors_kept)

    def record(
        self,
        label: str,
        status: int,
        latency_s: float,
        ttft_s: float | None = None,
        tokens: int = 0,
    ) -> None:
        now = int(self.clock())
        i = now % self.window_s
        slot = self._slots[i]
        if self._seconds[i] != now:
            self._seconds[i] = now
            slot.clear()
        if label not in self._labels:
            label = self._admit(label, now)
        self._labels[label] = now
        b = slot.get(label)
        if b is None:
            b = slot[label] = _Bucket()
        b.requests += 1
        b.errors += status >= 400
        b.latency_sum += latency_s
        b.latency.add(latency_s)
        if ttft_s is not None:
            b.ttft.add(ttft_s)
        b.tokens += tokens

    def _admit(self, label: str, now: int) -> str:
        labels = self._labels
        label = label[:200]
        if label in labels or label == OTHER or len(labels) - (OTHER in labels) < self.max_labels:
            return label
        if self._swept != now:  # forget labels that left the window, once a second at most
            self._swept = now
            cutoff = now - self.window_s
            for old in [k for k, t in labels.items() if t <= cutoff and k != OTHER]:
                del labels[old]
        return label if len(labels) - (OTHER in labels) < self.max_labels else OTHER

    def answer(
        self,
        label: str,
        model: str,
        request_id: str,
        started: float,
        status: int,
        body: bytes,
        tokens: int = 0,
    ) -> None:
        """A whole (non-streamed) answer of ``tokens`` completion tokens."""
        self.record(label, status, self.timer() - started, None, tokens)
        if status >= 400:
            self.add_error(model, label, status, error_message(body), request_id)

    def failed(self, model: str, request_id: str, started: float, exc: BaseException) -> None:
        """A request that ended in an exception (rendered as an error by the app)."""
        if isinstance(exc, ModelplaneError):
            status, message = exc.status, exc.message
        else:
            status, message = 500, f"internal error ({type(exc).__name__})"
        self.record(model or "-", status, self.timer() - started)
        self.add_error(model, None, status, message, request_id)

    def stream(
        self, chunks: AsyncIterator[bytes], label: str, model: str, request_id: str, started: float
    ) -> AsyncIterator[bytes]:
        """``chunks`` passed through, recorded when they end (or the client leaves)."""

        def done(answer: Answer) -> None:
            self.streamed(label, model, request_id, started, answer)

        return AnswerStream(chunks, 0, self.timer, done)

    def streamed(
        self, label: str, model: str, request_id: str, started: float, answer: Answer
    ) -> None:
        """A stream that ended, as its reader saw it (what ``stream`` records)."""
        first = answer.first
        ttft = None if first is None else first - started
        self.record(label, answer.status, self.timer() - started, ttft, answer.completion)
        if answer.error:
            status, message = stream_error(answer.error)
            self.add_error(model, label, status, message, request_id)

    def add_error(
        self, model: str, endpoint: str | None, status: int, message: str, request_id: str
    ) -> None:
        """Keep one error for the dashboard (secrets in ``message`` are blanked)."""
        message = redact(message)[:500]
        self.errors.append(
            ErrorEvent(self.clock(), model[:200], endpoint, status, message, request_id)
        )

    def snapshot(
        self,
        window_s: int = 300,
        step_s: int = 5,
        endpoint: str | None = None,
        visible: Callable[[str], bool] | None = None,
    ) -> dict[str, Any]:
        """Series of ``window_s // step_s`` points ending now, overall and for
        ``endpoint``; totals per endpoint; the recent errors, newest first. ``visible``
        filters endpoints and errors (overall then adds up the visible ones)."""
        window_s = max(1, min(window_s, self.window_s))
        step_s = max(1, min(step_s, window_s))
        n = window_s // step_s
        now = int(self.clock())
        start = now - n * step_s + 1
        overall = [_Bucket() for _ in range(n)]
        chosen = [_Bucket() for _ in range(n)]
        totals: dict[str, _Bucket] = {}
        for second in range(start, now + 1):
            i = second % self.window_s
            if self._seconds[i] != second:
                continue
            point = (second - start) // step_s
            for label, b in self._slots[i].items():
                if visible is not None and not visible(label):
                    continue
                if label not in totals:
                    totals[label] = _Bucket()
                totals[label].add(b)
                overall[point].add(b)
                if label == endpoint:
                    chosen[point].add(b)
        span = n * step_s
        endpoints = {k: {"totals": _totals(v, span)} for k, v in sorted(totals.items())}
        if endpoint in endpoints:
            endpoints[endpoint]["series"] = _series(chosen, step_s)
        whole = _Bucket()
        for b in overall:
            whole.add(b)
        return {
            "now": now,
            "window_s": span,
            "step_s": step_s,
            "t": [start + k * step_s for k in range(n)],
            "overall": {"totals": _totals(whole, span), "series": _series(overall, step_s)},
            "endpoints": endpoints,
            "recent_errors": self.recent_errors(visible),
        }

    def recent_errors(self, visible: Callable[[str], bool] | None = None) -> list[dict[str, Any]]:
        """The errors kept, newest first (those of ``visible`` endpoints or models)."""
        shown = (e for e in reversed(self.errors) if not visible or visible(e.endpoint or e.model))
        return [asdict(e) for e in shown]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _totals(b: _Bucket, span: int) -> dict[str, Any]:
    return {
        "requests": b.requests,
        "errors": b.errors,
        "tokens": b.tokens,
        "rps": round(b.requests / span, 3),
        "error_rate": round(b.errors / b.requests, 4) if b.requests else 0.0,
        "mean_ms": _ms(b.latency_sum / b.requests) if b.requests else None,
        "p50_ms": _ms(b.latency.quantile(0.5)),
        "p95_ms": _ms(b.latency.quantile(0.95)),
        "ttft_p50_ms": _ms(b.ttft.quantile(0.5)),
        "tokens_per_s": round(b.tokens / span, 2),
    }


def _series(points: list[_Bucket], step_s: int) -> dict[str, list[Any]]:
    return {
        "requests": [b.requests for b in points],
        "rps": [round(b.requests / step_s, 3) for b in points],
        "error_rate": [round(b.errors / b.requests, 4) if b.requests else 0 for b in points],
        "p50_ms": [_ms(b.latency.quantile(0.5)) for b in points],
        "p95_ms": [_ms(b.latency.quantile(0.95)) for b in points],
        "ttft_p50_ms": [_ms(b.ttft.quantile(0.5)) for b in points],
        "tokens_per_s": [round(b.tokens / step_s, 2) for b in points],
    }
