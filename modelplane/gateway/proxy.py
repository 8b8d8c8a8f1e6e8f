"""One OpenAI request through a route: pick a target, try it (retrying with backoff
and jitter), fall back down the route's chain, and hand back the first good answer.

Nothing is retried once a byte of the answer reached the client: a stream is only
handed back after its first chunk arrived, and a failure later ends it with an error
event. Bodies and SSE frames of OpenAI-compatible upstreams pass through as bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from opentelemetry.trace import Span, Tracer

from modelplane.engines import registry as engines
from modelplane.errors import (
    InvalidRequest,
    ModelNotFound,
    ModelplaneError,
    NoReadyReplica,
    Overloaded,
    UpstreamError,
    UpstreamTimeout,
    openai_envelope,
)
from modelplane.gateway.cache import ResponseCache
from modelplane.gateway.deadline import Deadline
from modelplane.gateway.inbound import Inbound
from modelplane.gateway.router import Router
from modelplane.gateway.routes import ResolvedRoute, RouteTable
from modelplane.governance.governor import Governor, Open, Permit
from modelplane.providers import registry as providers
from modelplane.providers.base import Call, Provider, Pullable, Reply, Target, Timeouts
from modelplane.store.records import Endpoint
from modelplane.telemetry import tracing
from modelplane.telemetry.answers import Answer, failed
from modelplane.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

PROPAGATE = ("traceparent", "tracestate")
CONTROL_TIMEOUTS = Timeouts(connect_s=5.0, read_s=30.0)
"""For control-plane calls to a provider (its model list)."""


@dataclass(slots=True)
class Failure:
    """Why one target could not answer; ``kind`` is matched against ``fallback_on``."""

    kind: str  # connect | 5xx | 429 | timeout | context_length
    reply: Reply | None = None
    error: ModelplaneError | None = None


def _error_code(reply: Reply) -> str | None:
    try:
        code = json.loads(reply.body or b"")["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None


def resolve_credentials(
    ep: Endpoint, secrets: Callable[[str], str | None] | None = None
) -> dict[str, str]:
    """``options.credentials`` maps a field to ``env:NAME`` or ``secret:NAME``; the
    values are read at request time, so a rotated secret applies without a restart."""
    out: dict[str, str] = {}
    for field, ref in (ep.spec.provider.credentials if ep.spec.provider else {}).items():
        source, _, name = str(ref).partition(":")
        value = os.environ.get(name) if source == "env" else secrets(name) if secrets else None
        if not value:
            where = f"environment variable {name}" if source == "env" else f"secret '{name}'"
            raise UpstreamError(
                f"endpoint '{ep.name}' needs its {field} from {where}, which is not set"
            )
        out[field] = value
    return out


def _embeds(ep: Endpoint) -> bool:
    """Whether a local endpoint's engine answers ``/v1/embeddings`` (its spec says so)."""
    try:
        return engines.get(ep.engine).capabilities.embeddings
    except (KeyError, LookupError):
        return False


class Proxy:
    """Forwards through providers. The OpenAI-compatible one (local replicas included)
    keeps its own keep-alive HTTP/1.1 pool (``providers/http1.py``); each translating
    provider owns a pooled aiohttp session. Both parse HTTP in C, which matters on a
    small machine where gateway CPU is taken from the model's decode threads (see
    bench/README.md). Each call hands the provider its timeouts (``Timeouts``).
    """

    def __init__(
        self,
        router: Router,
        routes: RouteTable,
        *,
        timeout_s: float = 600.0,
        local_timeout_s: float = 120.0,
        cache: ResponseCache | None = None,
        secrets: Callable[[str], str | None] | None = None,
        governor: Governor[Any] | None = None,
        metrics: Metrics | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.router = router
        self.routes = routes
        self.timeout_s = timeout_s
        self.local_timeout_s = local_timeout_s
        self._timeouts: dict[float, Timeouts] = {}
        self.cache = cache
        self.secrets = secrets
        self.governor: Governor[Any] = governor or Open()
        self.metrics = metrics
        self.tracer = tracer
        """Spans of routing, admission, each upstream attempt (None: tracing is off)."""

    async def close(self) -> None:
        await providers.close_all()

    def upstream(self, name: str) -> tuple[Provider, Target]:
        """An external endpoint's provider and address, for control-plane calls."""
        ep = self.router.endpoint(name)
        if ep.provider is None:
            raise InvalidRequest(f"'{name}' is served by modelplane, not by a provider")
        provider = providers.get(ep.provider)
        given = ep.spec.provider.base_url if ep.spec.provider else None
        base_url = given or provider.default_base_url
        return provider, Target(base_url, ep.options, resolve_credentials(ep, self.secrets))

    async def upstream_models(self, name: str) -> list[str]:
        provider, target = self.upstream(name)
        try:
            return await provider.models(target, timeouts=CONTROL_TIMEOUTS)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamError(
                f"'{name}' could not be asked for its models ({type(exc).__name__})"
            ) from None

    async def pull(self, name: str, model: str) -> AsyncIterator[dict[str, Any]]:
        """Have an external endpoint's provider download ``model`` (Ollama), yielding its
        progress; 400 for providers that cannot."""
        provider, target = self.upstream(name)
        if not isinstance(provider, Pullable):
            raise InvalidRequest(f"the {provider.name} provider cannot pull models")
        # A pull downloads gigabytes: no read limit, only the connect one.
        return provider.pull(target, model, timeouts=Timeouts(CONTROL_TIMEOUTS.connect_s))

    async def forward(self, req: Inbound) -> tuple[Reply, Permit]:
        """The answer, and the permit it was admitted under: whoever reads the answer
        hands its :class:`Answer` to ``settle`` with it (a failure is settled here)."""
        with tracing.span(self.tracer, "route"):
            route = self.routes.resolve(req.peeked.model)
            if not req.caller.can_read(route.owner):
                raise ModelNotFound(req.peeked.model)  # another team's: as if it did not exist
        with tracing.span(self.tracer, "limits"):
            permit = await self.governor.admit(req, route)
        try:
            reply = await self._serve(req, route)
        except BaseException as exc:
            with tracing.span(self.tracer, "usage.record"):
                if isinstance(exc, ModelplaneError):
                    if permit.headers:
                        exc.extra_headers = {**permit.headers, **exc.extra_headers}
                    status = exc.status
                else:
                    status = 499 if isinstance(exc, asyncio.CancelledError) else 500
                self.governor.settle(permit, failed(status))
            raise
        if permit.headers:
            reply.headers = {**reply.headers, **permit.headers}
        return reply, permit

    def settle(self, permit: Permit, answer: Answer) -> None:
        """How a request admitted by ``forward`` was answered (once per request)."""
        self.governor.settle(permit, answer)

    async def _serve(self, req: Inbound, route: ResolvedRoute) -> Reply:
        spec = route.spec
        cache_key = None
        if self.cache is not None and self._cache_wanted(route, req.headers):
            cache_key = self.cache.key(route.name, req.kind, req.peeked.body)
            hit = await self.cache.get(cache_key)
            if self.metrics is not None:
                self.metrics.cache_lookup(route.name, hit is not None)
            if hit is not None:
                stream = self.cache.replay(hit) if hit.stream else None
                body = None if hit.stream else hit.body
                return Reply(200, hit.content_type, body, stream, cache="hit")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._total_s(route)[0]
        sticky = None
        if spec.sticky == "key":
            sticky = req.caller.subject
        elif spec.sticky == "user" and isinstance(req.peeked.body.get("user"), str):
            sticky = req.peeked.body["user"]
        last: Failure | None = None
        for i, name in enumerate(route.chain(sticky)):
            if i and self.metrics is not None:
                self.metrics.fallback(route.name, name)
            outcome = await self._target(route, name, req, deadline)
            if isinstance(outcome, Reply):
                outcome.target = name
                if cache_key is not None and self.cache is not None:
                    self._store(outcome, cache_key, route.spec.cache.ttl_s)
                    outcome.cache = "miss"
                return outcome
            last = outcome
            if outcome.kind not in spec.fallback_on or loop.time() >= deadline:
                break
            log.info(
                "request %s: '%s' failed (%s); falling back", req.request_id, name, outcome.kind
            )
        assert last is not None  # a route has at least one target
        if last.reply is not None:
            return last.reply
        raise last.error or UpstreamError(f"no target of '{route.name}' could answer")

    def _cache_wanted(self, route: ResolvedRoute, headers: Mapping[str, str]) -> bool:
        asked = headers.get("x-modelplane-cache", "").lower()
        if asked in ("on", "use", "true", "1"):
            return True
        if asked in ("off", "bypass", "no-cache", "false", "0"):
            return False
        return route.spec.cache.enabled

    def _store(self, reply: Reply, key: str, ttl_s: float) -> None:
        assert self.cache is not None
        if reply.status != 200:
            return
        if reply.stream is not None:
            reply.stream = self.cache.tee(key, reply.stream, reply.content_type, ttl_s)
        elif reply.body is not None:
            asyncio.get_running_loop().create_task(
                self.cache.put(key, reply.content_type, reply.body, ttl_s)
            )

    async def _target(
        self, route: ResolvedRoute, name: str, req: Inbound, deadline: float
    ) -> Reply | Failure:
        """Try one endpoint, retrying transient failures; a Reply is final."""
        try:
            ep = self.router.endpoint(name)
        except ModelplaneError as exc:
            return Failure("connect", error=NoReadyReplica(f"{exc.message}", retry_after=2))
        provider = providers.get(ep.provider or "openai")
        if ep.provider is None and req.kind == "embeddings" and not _embeds(ep):
            return Failure(
                "connect",
                error=InvalidRequest(
                    f"'{name}' (the {ep.engine} engine) cannot create embeddings; send "
                    "embeddings requests to an endpoint whose engine or provider can",
                    param="model",
                ),
            )
        if req.kind not in provider.kinds:
            return Failure(
                "connect",
                error=InvalidRequest(
                    f"'{name}' ({provider.name}) does not serve {req.kind} requests",
                    param="model",
                ),
            )
        retries = route.spec.retries
        loop = asyncio.get_running_loop()
        tried: set[str] = set()
        last: Failure | None = None
        for attempt in range(retries.attempts + 1):
            if attempt:
                delay = random.uniform(
                    0, min(retries.max_backoff_s, retries.backoff_s * 2**attempt)
                )
                if loop.time() + delay >= deadline:
                    break
                if self.metrics is not None:
                    self.metrics.retry(ep.name)
                await asyncio.sleep(delay)
            pending = frozenset(tried)
            if tried and not self.router.candidates(ep, pending):
                pending = frozenset()  # every replica was tried: any may try again
            try:
                # A free slot is taken at once; only waiting for one needs a timer.
                url = self.router.pick(ep, pending, req.peeked.body, req.headers) or ""
                if not url:
                    async with asyncio.timeout_at(deadline):
                        url = await self.router.acquire(ep, pending, req.peeked.body, req.headers)
            except (NoReadyReplica, Overloaded) as exc:
                # Nothing to try on this endpoint now: falling back beats waiting.
                return Failure("connect" if isinstance(exc, NoReadyReplica) else "5xx", error=exc)
            except TimeoutError:
                return Failure("timeout", error=self._timeout(route, total=True))
            tried.add(url)
            outcome = await self._attempt(route, ep, provider, url, req, deadline)
            if isinstance(outcome, Reply):
                return outcome
            if self.metrics is not None:
                self.metrics.upstream_error(ep.name, outcome.kind)
            last = outcome
            if outcome.kind == "context_length" or loop.time() >= deadline:
                break
        assert last is not None or tried == set()
        return last or Failure("timeout", error=self._timeout(route, total=True))

    async def _attempt(
        self,
        route: ResolvedRoute,
        ep: Endpoint,
        provider: Provider,
        url: str,
        req: Inbound,
        deadline: float,
    ) -> Reply | Failure:
        """One request to one replica (or provider address); owns the acquired slot."""
        loop = asyncio.get_running_loop()
        timeouts = route.spec.timeouts
        first_by = (
            deadline if timeouts.ttft_s is None else min(deadline, loop.time() + timeouts.ttft_s)
        )
        released = False
        span: Span | None = None
        try:
            target = Target(
                url + "/v1" if ep.provider is None else url,
                ep.options,
                resolve_credentials(ep, self.secrets) if ep.provider else {},
            )
            model = ep.model if ep.provider else req.peeked.model
            if self.tracer is None or not tracing.traced():
                headers = {h: req.headers[h] for h in PROPAGATE if h in req.headers}
            else:  # the upstream joins the trace as a child of this attempt
                span, headers = tracing.upstream_span(self.tracer, ep.name, url)
            call = Call(
                req.kind,
                req.body,
                req.peeked.body,
                model,
                req.peeked.stream,
                req.request_id,
                headers,
            )
            started = loop.time()
            limit = Deadline(first_by)
            try:
                with limit:
                    reply = await provider.send(
                        target, call, timeouts=self._timeouts_for(timeouts.connect_s)
                    )
                    first = None
                    if reply.stream is not None:
                        try:
                            first = await anext(reply.stream)
                        except StopAsyncIteration:
                            first = b""
                        if span is not None:
                            span.add_event("first_token")
            except TimeoutError as exc:
                if span is not None:
                    tracing.fail(span, exc)
                self._failed(url, ep.name, "timeout")
                total = first_by >= deadline
                return Failure("timeout", error=self._timeout(route, total=total))
            except (aiohttp.ClientError, OSError) as exc:
                if span is not None:
                    tracing.fail(span, exc)
                self._failed(url, ep.name, type(exc).__name__)
                return Failure(
                    "connect",
                    error=UpstreamError(
                        f"'{ep.name}' could not be reached ({type(exc).__name__}); retry shortly"
                    ),
                )
            finally:
                limit.close()
            self.router.observe(url, loop.time() - started)
            if span is not None:
                tracing.end_status(span, reply.status)
            failure = self._classify(reply, url, ep.name)
            if failure is not None:
                if reply.stream is not None:
                    await reply.stream.aclose()  # type: ignore[attr-defined]
                return failure
            self.router.outliers.success(url)
            if reply.stream is not None:
                reply.stream = self._hold(url, first or b"", reply.stream, deadline, route, span)
                released = True  # the stream releases the slot (and ends the span) when it ends
            return reply
        finally:
            if not released:
                self.router.release(url)
                if span is not None:
                    span.end()

    def _classify(self, reply: Reply, url: str, name: str) -> Failure | None:
        status = reply.status
        if status < 400:
            return None
        if status == 429:
            return Failure("429", reply)
        if status >= 500:
            if status != 503:  # 503 is "busy"; other 5xx count towards ejection
                self._failed(url, name, f"HTTP {status}")
            return Failure("5xx", reply)
        if status == 400 and _error_code(reply) == "context_length_exceeded":
            return Failure("context_length", reply)
        return None  # the client's own error: final, no retry, no fallback

    async def _hold(
        self,
        url: str,
        first: bytes,
        rest: AsyncIterator[bytes],
        deadline: float,
        route: ResolvedRoute,
        span: Span | None = None,
    ) -> AsyncIterator[bytes]:
        """Relay the rest of a stream, releasing the replica slot when it ends (or the
        client leaves), and ending it with an error event at the route's deadline.

        The deadline is one timer for the whole stream, not a timeout per chunk (a
        visible cost on streams of many small chunks). It interrupts a read from the
        upstream only, never a write to the client: when it fires during a write, the
        stream ends before its next read (``gateway/deadline.py``)."""
        limit = Deadline(deadline)
        try:
            if first:
                yield first
            while True:
                try:
                    with limit:
                        chunk = await anext(rest)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    break
                yield chunk
            err = self._timeout(route, total=True)
            yield b"data: " + json.dumps(openai_envelope(err)).encode() + b"\n\n"
        finally:
            limit.close()
            try:
                await rest.aclose()  # type: ignore[attr-defined]
            finally:
                self.router.release(url)
                if span is not None:
                    span.end()

    def _timeout(self, route: ResolvedRoute, *, total: bool) -> UpstreamTimeout:
        t = route.spec.timeouts
        if total:
            limit, where = self._total_s(route)
            return UpstreamTimeout(f"'{route.name}' did not answer within {limit:g} s ({where})")
        return UpstreamTimeout(
            f"'{route.name}' did not start answering within {t.ttft_s:g} s (timeouts.ttft_s)"
        )

    def _total_s(self, route: ResolvedRoute) -> tuple[float, str]:
        """The whole request's limit and the setting it comes from. A route whose every
        target is a replica modelplane runs gets the shorter local default: one that
        stopped answering must not hold its client for a provider-sized wait."""
        if route.total_s:
            return route.total_s, "timeouts.total_s"
        if route.local and self.local_timeout_s < self.timeout_s:
            return self.local_timeout_s, "MODELPLANE_LOCAL_UPSTREAM_TIMEOUT_S"
        return self.timeout_s, "MODELPLANE_UPSTREAM_TIMEOUT_S"

    def _timeouts_for(self, connect_s: float) -> Timeouts:
        """One ``Timeouts`` per connect timeout, not one object per request."""
        found = self._timeouts.get(connect_s)
        if found is None:
            found = self._timeouts[connect_s] = Timeouts(connect_s=connect_s)
        return found

    def _failed(self, url: str, name: str, why: str) -> None:
        ejected = self.router.outliers.failure(url)
        log.warning(
            "upstream %s of '%s' failed before answering (%s)%s",
            url,
            name,
            why,
            f"; ejected for {self.router.outliers.cooldown_left(url):.0f}s" if ejected else "",
        )
