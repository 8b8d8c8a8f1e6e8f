"""Everything recorded about one ``/v1`` request, recorded once, when it ends: the
dashboard's live statistics, the Prometheus metrics, the end of its trace's root span
and one summary log line (``modelplane.access``, INFO).

The gateway's fast path opens an :class:`InFlight` as a request arrives and ends it
with exactly one of ``answer`` (a whole answer), ``stream`` (recorded when the stream
ends), ``failed`` (an exception, about to be rendered) or ``left`` (the client went
away); ``close`` covers any other way out. Later calls are ignored, so a request is
never counted twice.

The summary line holds the request id, route, endpoint, team, key id, status, latency,
time to first token and token counts: never a prompt or a completion, unless the
endpoint that answered has ``options.log_prompts: true`` (then the same line holds the
request's messages and the answer's text, as far as :data:`PROMPT_LOG_MAX_BYTES` of a
stream goes).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from opentelemetry.trace import Span

from modelplane.errors import BudgetExceeded, ModelplaneError, RateLimited
from modelplane.telemetry import tracing
from modelplane.telemetry.answers import (
    Answer,
    AnswerStream,
    answer_text,
    error_message,
    stream_text,
)
from modelplane.telemetry.metrics import OTHER, Metrics
from modelplane.telemetry.stats import RequestStats
from modelplane.telemetry.tracing import Tracing

ACCESS = logging.getLogger("modelplane.access")
PROMPT_LOG_MAX_BYTES = 64 * 1024
"""With ``log_prompts``, at most this much of a streamed answer is kept for the log."""


class Caller(Protocol):
    """Who made a request, as far as telemetry cares (``identity.Caller``)."""

    @property
    def key_id(self) -> str | None: ...

    @property
    def team_id(self) -> str | None: ...


def _nothing(_: str | None) -> str | None:
    return None


def _never(_: str) -> bool:
    return False


class Observer:
    """The recorders of one server process, and how to name what they record.

    ``route_of`` maps a requested model to its route's name (``None``: no such route),
    ``team_of`` a team id to its name, ``log_prompts`` tells whether an endpoint has
    prompt logging switched on."""

    def __init__(
        self,
        stats: RequestStats,
        metrics: Metrics | None = None,
        traces: Tracing | None = None,
        *,
        route_of: Callable[[str], str | None] = _nothing,
        team_of: Callable[[str | None], str | None] = _nothing,
        log_prompts: Callable[[str], bool] = _never,
        access_log: bool = True,
    ) -> None:
        self.stats = stats
        self.metrics = metrics
        self.tracing = traces or Tracing()
        self.tracer = self.tracing.tracer
        self.route_of = route_of
        self.team_of = team_of
        self.log_prompts = log_prompts
        self.access_log = access_log

    def begin(self, kind: str, path: str, request_id: str, headers: Mapping[str, str]) -> InFlight:
        return InFlight(self, kind, path, request_id, headers)


class InFlight:
    __slots__ = (
        "body",
        "caller",
        "closed",
        "done",
        "ended",
        "kind",
        "model",
        "obs",
        "path",
        "request_id",
        "root",
        "started",
        "tokens",
    )

    def __init__(
        self, obs: Observer, kind: str, path: str, request_id: str, headers: Mapping[str, str]
    ) -> None:
        self.obs = obs
        self.kind = kind
        self.path = path
        self.request_id = request_id
        self.started = obs.stats.timer()
        self.model = ""
        self.caller: Caller | None = None
        self.body: Mapping[str, Any] | None = None
        self.done = False
        self.ended = self.closed = False
        self.root: Span | None = None
        self.tokens: tracing.Tokens | None = None
        if obs.metrics is not None:
            obs.metrics.in_flight += 1
        if obs.tracer is not None and obs.tracing.sampled(headers):
            self.root, self.tokens = tracing.start_request(obs.tracer, headers, request_id, path)

    def span(self, name: str) -> AbstractContextManager[Span | None]:
        """A child span of this request (nothing when it is not traced)."""
        return tracing.span(self.obs.tracer, name)

    def answer(self, answer: Answer, body: bytes) -> None:
        """A whole answer was sent (``answer`` as read from ``body``)."""
        if self.done:
            return
        self.done = True
        stats = self.obs.stats
        endpoint = answer.target
        label = endpoint or self.model
        elapsed = stats.timer() - self.started
        status, tokens = answer.status, answer.completion
        stats.record(label, status, elapsed, None, tokens)
        if status >= 400:
            stats.add_error(self.model, label, status, error_message(body), self.request_id)
        self._end(status, endpoint, elapsed, None, tokens, answer.prompt, body, None)

    def stream(
        self,
        chunks: AsyncIterator[bytes],
        request_bytes: int,
        target: str | None,
        cached: bool,
        then: Callable[[Answer], None],
    ) -> AsyncIterator[bytes]:
        """``chunks`` passed through the request's one answer reader; when they end,
        ``then`` gets its :class:`Answer` (the usage record), and the request is
        recorded from the same answer."""
        if self.done:
            return chunks
        self.done = True
        label = target or self.model
        kept: list[bytes] | None = None
        if target and self.obs.log_prompts(target):
            kept = []
            chunks = _keep(chunks, kept)

        def done(answer: Answer) -> None:
            then(answer)
            stats = self.obs.stats
            end = stats.timer()
            stats.streamed(label, self.model, self.request_id, self.started, answer)
            text = None if kept is None else stream_text(b"".join(kept))
            elapsed = end - self.started
            first, tokens, prompt = answer.first, answer.completion, answer.prompt
            self._end(answer.status, target, elapsed, first, tokens, prompt, None, text)

        return AnswerStream(chunks, request_bytes, self.obs.stats.timer, done, target, cached)

    def failed(self, exc: BaseException) -> None:
        """The request ends in ``exc`` (rendered as an error answer by the caller)."""
        if self.done:
            return
        self.done = True
        stats = self.obs.stats
        stats.failed(self.model, self.request_id, self.started, exc)
        m = self.obs.metrics
        if m is not None and isinstance(exc, RateLimited | BudgetExceeded):
            team = self.caller.team_id if self.caller else None
            m.refused(
                isinstance(exc, BudgetExceeded),
                self.obs.route_of(self.model) if self.model else None,
                self.obs.team_of(team),
            )
        status = exc.status if isinstance(exc, ModelplaneError) else 500
        elapsed = stats.timer() - self.started
        self._end(status, None, elapsed, None, 0, 0, None, None, exc)

    def left(self) -> None:
        """The client went away before the answer started."""
        if self.done:
            return
        self.done = True
        stats = self.obs.stats
        if self.model:
            msg = b"the client closed the connection"
            stats.answer(self.model, self.model, self.request_id, self.started, 499, msg)
        self._end(499, None, stats.timer() - self.started, None, 0, 0, None, None)

    def close(self) -> None:
        """The request's handler is done: leave its trace context. A request not recorded
        yet (its task was cancelled: the server is stopping) counts as 499. The root span
        ends at whichever comes last, this or the recording (a stream is recorded at its
        ``[DONE]``, before its last bytes are relayed)."""
        if self.closed:
            return
        if self.tokens is not None:
            tracing.detach(self.tokens)
            self.tokens = None
        ended = self.ended
        self.closed = True
        if not ended:
            self.left()
        elif self.root is not None:
            self.root.end()

    def _end(
        self,
        status: int,
        endpoint: str | None,
        elapsed: float,
        first: float | None,
        completion: int,
        prompt: int,
        body: bytes | None,
        text: str | None,
        exc: BaseException | None = None,
    ) -> None:
        self.ended = True
        obs = self.obs
        team_id = self.caller.team_id if self.caller is not None else None
        route = obs.route_of(self.model) if self.model else None
        ttft = None if first is None else first - self.started
        team = obs.team_of(team_id)
        m = obs.metrics
        if m is not None:
            m.in_flight -= 1
            # A requested name that is no route is the client's word: never a label.
            label = route or (OTHER if self.model else None)
            m.request(self.kind, label, endpoint, team, status, elapsed, ttft, completion, prompt)
        root = self.root
        if root is not None:
            root.set_attribute("modelplane.model", self.model)
            if route:
                root.set_attribute("modelplane.route", route)
            if endpoint:
                root.set_attribute("modelplane.endpoint", endpoint)
            if completion:
                root.set_attribute("gen_ai.usage.output_tokens", completion)
            if prompt:
                root.set_attribute("gen_ai.usage.input_tokens", prompt)
            if exc is not None:
                tracing.fail(root, exc)
            tracing.end_status(root, status)
            if self.closed:
                root.end()
        if obs.access_log and ACCESS.isEnabledFor(logging.INFO):
            fields = self._fields(status, endpoint, route, team, elapsed, ttft, completion, prompt)
            if endpoint and obs.log_prompts(endpoint):
                asked = self.body or {}
                fields["prompt"] = asked.get("messages", asked.get("prompt", asked.get("input")))
                fields["completion"] = answer_text(body) if text is None and body else text
            ACCESS.info(
                "%s %s -> %s %d in %.1f ms",
                self.path,
                fields["model"],
                endpoint or "-",
                status,
                fields["latency_ms"],
                extra={"fields": fields},
            )

    def _fields(
        self,
        status: int,
        endpoint: str | None,
        route: str | None,
        team: str | None,
        elapsed: float,
        ttft: float | None,
        completion: int,
        prompt: int,
    ) -> dict[str, Any]:
        caller = self.caller
        fields: dict[str, Any] = {
            "request_id": self.request_id,
            "kind": self.kind,
            "model": self.model[:200],
            "route": route,
            "endpoint": endpoint,
            "team": team,
            "key_id": caller.key_id if caller is not None else None,
            "status": status,
            "latency_ms": round(elapsed * 1000, 2),
            "ttft_ms": None if ttft is None else round(ttft * 1000, 2),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
        }
        if self.root is not None:
            fields["trace_id"] = format(self.root.get_span_context().trace_id, "032x")
        return fields


async def _keep(chunks: AsyncIterator[bytes], kept: list[bytes]) -> AsyncIterator[bytes]:
    size = 0
    try:
        async for chunk in chunks:
            if size < PROMPT_LOG_MAX_BYTES:
                kept.append(chunk)
                size += len(chunk)
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
