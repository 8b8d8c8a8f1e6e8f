"""The one seam between the gateway and an upstream.

A provider sends one OpenAI-shaped request to one upstream address and hands back an
OpenAI-shaped answer: the status, and either the whole body or a stream of SSE frames
(``data: {...}\\n\\n`` … ``data: [DONE]\\n\\n``). OpenAI-compatible upstreams are passed
through as bytes; the others translate both ways.

The contract the gateway relies on, for every provider:

- Transport failures surface as ``aiohttp.ClientError``, ``OSError`` (the ``http1``
  client raises ``ConnectionError``) or ``TimeoutError``; the gateway decides whether to
  retry or fall back.
- Upstream HTTP errors come back as a ``Reply`` with the upstream status and an OpenAI
  error envelope as the body. A prompt that does not fit the model's context gets
  ``code: "context_length_exceeded"`` (status 400) whatever the upstream called it, and
  rate limiting keeps its 429 (with ``retry-after`` in ``headers`` when the upstream sent
  one), so fallbacks can be taken on either.
- ``timeouts`` (:class:`Timeouts`) bounds connecting and each read; a connect that
  takes longer raises ``TimeoutError`` (or aiohttp's subclass of it).
- ``send`` returns once the upstream's status is known. A streamed ``Reply.stream``
  owns the upstream response and releases it when exhausted or closed; a failure in
  the middle of a stream ends it with an ``error`` SSE event, never an exception.
- Secrets (``Target.credentials``) never appear in a ``Reply``, an exception message or a
  log line.
- ``health`` (active health checks, ``options.health_check``) returns when the
  upstream answers a cheap read-only GET with 2xx and raises otherwise: a transport
  error as above, or ``UpstreamError`` whose message names the path and the status,
  never the URL (it may carry credentials) nor the upstream's body (it may echo a key).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from modelplane.values import value

Kind = Literal["chat", "completions", "embeddings"]

PATHS: Mapping[Kind, str] = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}


@value
class Call:
    """One OpenAI-shaped request on its way to one upstream."""

    kind: Kind
    body: bytes
    """The client's bytes; forwarded untouched where the upstream speaks OpenAI."""
    obj: Mapping[str, Any]
    """The same body, parsed."""
    model: str
    """The upstream's name for the model (may differ from the body's ``model``)."""
    stream: bool
    request_id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    """Headers to propagate upstream (``traceparent``, ``tracestate``)."""


@value
class Target:
    """Where a provider sends: an address, its options, and resolved secrets."""

    base_url: str
    options: Mapping[str, Any] = field(default_factory=dict)
    credentials: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # credentials stay out of reprs, logs and tracebacks
        return f"Target(base_url={self.base_url!r}, credentials={sorted(self.credentials)})"


@value
class Timeouts:
    """How long a provider waits on its upstream. The caller's own deadline (the
    gateway's ``timeouts.ttft_s`` and ``total_s``) bounds the whole request on top."""

    connect_s: float = 5.0
    """To open a connection (TCP and TLS)."""
    read_s: float | None = None
    """Between two reads of the answer; ``None``: no limit of the provider's own."""


@dataclass(slots=True)
class Reply:
    """An upstream answer in OpenAI shape."""

    status: int
    content_type: str = "application/json"
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    """Headers worth passing to the client (``retry-after``, ``x-ratelimit-*``)."""
    target: str | None = None
    """The endpoint that served it (set by the gateway; None for cache hits). The
    client sees it as ``x-modelplane-target``, written once at the edge."""
    cache: Literal["hit", "miss"] | None = None
    """The response cache's part (set by the gateway; None: not looked up). The client
    sees it as ``x-modelplane-cache``."""


class Provider(Protocol):
    """An upstream wire protocol. One instance serves all requests; it may own pooled
    connections, released by ``close`` (see :class:`Closable`)."""

    name: ClassVar[str]
    default_base_url: ClassVar[str]
    kinds: ClassVar[frozenset[Kind]]
    """Which request kinds this upstream can serve."""
    health_path: ClassVar[str | None]
    """What ``health`` GETs by default; ``None`` where the upstream has no cheap
    read-only request, so a health check must name ``options.health_check.path``."""

    async def send(self, target: Target, call: Call, *, timeouts: Timeouts) -> Reply: ...

    async def models(self, target: Target, *, timeouts: Timeouts) -> list[str]:
        """The model names the upstream offers (empty where it cannot tell)."""
        ...

    async def health(self, target: Target, *, timeouts: Timeouts) -> None:
        """GET ``options.health_check.path`` (else ``health_path``) with the upstream's
        auth; raise unless it answers 2xx."""
        ...


@runtime_checkable
class Closable(Protocol):
    """A provider holding connections open; ``close`` releases them, and a later
    request opens new ones (the gateway closes every provider when it stops)."""

    async def close(self) -> None: ...


@runtime_checkable
class Pullable(Protocol):
    """A provider that can download a model into its upstream (Ollama)."""

    def pull(
        self, target: Target, model: str, *, timeouts: Timeouts
    ) -> AsyncIterator[dict[str, Any]]:
        """Start the download, yielding the upstream's progress objects until done;
        raise ``UpstreamError`` when the upstream cannot pull ``model``."""
        ...
