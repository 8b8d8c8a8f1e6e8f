"""Forward an OpenAI request to a replica and stream the answer back, as bytes.

Bodies and SSE frames pass through untouched. A replica that cannot be reached, or that
dies before the first byte of the answer reached the client, is skipped and the request
goes to another ready replica (a generation is safe to repeat until something was sent).
After the first streamed byte there is no retry: the stream ends with an error event.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp

from modelplane.errors import (
    InvalidRequest,
    NoReadyReplica,
    UpstreamError,
    UpstreamTimeout,
    openai_envelope,
)
from modelplane.gateway.router import Router

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
# Failures of one replica that happened before anything reached the client, so another
# replica may try (connect timeouts are ClientConnectionErrors; the total timeout is not).
_RETRYABLE = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)


@dataclass(frozen=True, slots=True)
class Peeked:
    """What the gateway reads from a body it otherwise forwards untouched."""

    model: str
    stream: bool
    body: dict[str, Any]


def peek(body: bytes) -> Peeked:
    """Parse the body once for ``model`` and ``stream`` (and for balancing strategies
    that look at the prompt); the bytes themselves are forwarded as they came."""
    try:
        obj: Any = json.loads(body)
    except ValueError:
        raise InvalidRequest("the request body is not valid JSON") from None
    if not isinstance(obj, dict):
        raise InvalidRequest("the request body must be a JSON object")
    model = obj.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a string", param="model")
    stream = obj.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    return Peeked(model, stream, obj)


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    """A replica's error answer, kept while another replica is tried."""

    status: int
    content_type: str
    body: bytes


class Upstream:
    """A received upstream answer: status, headers, and either a body or a byte stream."""

    def __init__(
        self,
        status: int,
        content_type: str,
        body: bytes | None,
        stream: AsyncIterator[bytes] | None,
    ) -> None:
        self.status = status
        self.content_type = content_type
        self.body = body
        self.stream = stream


class Proxy:
    """Forwards to replicas over one pooled, keep-alive aiohttp session.

    aiohttp rather than httpx here: its C HTTP parser costs a fraction of the CPU per
    streamed chunk, and on a small machine that CPU is taken from the model's decode
    threads (see bench/README.md).
    """

    def __init__(self, router: Router, *, timeout_s: float = 600.0) -> None:
        self.router = router
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=5.0)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Created lazily, inside the running loop that will use it.
            self._session = aiohttp.ClientSession(
                timeout=self.timeout,
                connector=aiohttp.TCPConnector(limit=1000, limit_per_host=0, keepalive_timeout=30),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def forward(
        self, path: str, body: bytes, peeked: Peeked, request_id: str, headers: Mapping[str, str]
    ) -> Upstream:
        model, stream = peeked.model, peeked.stream
        tried: set[str] = set()
        last: BaseException | UpstreamStatus | None = None
        for _ in range(MAX_ATTEMPTS):
            try:
                url = self.router.pick(model, frozenset(tried), peeked.body, headers)
            except NoReadyReplica:
                if last is None:
                    raise
                break
            tried.add(url)
            stack = AsyncExitStack()
            stack.enter_context(self.router.track(url))
            try:
                sent = time.monotonic()
                resp = await stack.enter_async_context(
                    self.session.post(
                        url + path,
                        data=body,
                        headers={"content-type": "application/json", "x-request-id": request_id},
                    )
                )
                self.router.observe(url, time.monotonic() - sent)
                ctype = resp.headers.get("content-type", "application/json")
                if resp.status >= 500:
                    # 503 is "busy"; other 5xx count towards ejecting this replica.
                    if resp.status != 503:
                        self._failed(url, model, f"HTTP {resp.status}")
                    # Nothing was sent to the client yet: another replica may answer.
                    if len(tried) < MAX_ATTEMPTS and self.router.candidates(
                        model, frozenset(tried)
                    ):
                        last = UpstreamStatus(resp.status, ctype, await resp.read())
                        await stack.aclose()
                        continue
                else:
                    self.router.outliers.success(url)
                if not stream or resp.status != 200:
                    data = await resp.read()
                    await stack.aclose()
                    return Upstream(resp.status, ctype, data, None)
                return Upstream(200, ctype, None, _relay(resp, stack, request_id))
            except _RETRYABLE as exc:
                await stack.aclose()
                last = exc
                self._failed(url, model, type(exc).__name__)
            except TimeoutError:  # the total timeout (connect timeouts retried above)
                await stack.aclose()
                raise UpstreamTimeout(
                    f"'{model}' did not answer within {self.timeout.total:.0f} s "
                    "(MODELPLANE_UPSTREAM_TIMEOUT_S)"
                ) from None
            except BaseException:
                await stack.aclose()
                raise
        if isinstance(last, UpstreamStatus):  # every replica said 5xx: pass the last one on
            return Upstream(last.status, last.content_type, last.body, None)
        raise UpstreamError(
            f"no replica of '{model}' could answer after {len(tried)} attempt(s); retry shortly"
        )

    def _failed(self, url: str, model: str, why: str) -> None:
        ejected = self.router.outliers.failure(url)
        log.warning(
            "replica %s of '%s' failed before answering (%s)%s",
            url,
            model,
            why,
            f"; ejected for {self.router.outliers.cooldown_left(url):.0f}s" if ejected else "",
        )


async def _relay(
    resp: aiohttp.ClientResponse, stack: AsyncExitStack, request_id: str
) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.content.iter_any():
            yield chunk
    except (TimeoutError, aiohttp.ClientError) as exc:
        log.warning("request %s: upstream stream broke (%s)", request_id, type(exc).__name__)
        err = UpstreamError(
            "the model replica failed in the middle of the answer; retry the request"
        )
        yield b"data: " + json.dumps(openai_envelope(err)).encode() + b"\n\n"
    finally:
        await stack.aclose()
