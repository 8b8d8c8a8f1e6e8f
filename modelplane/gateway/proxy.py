"""Forward an OpenAI request to a replica and stream the answer back, as bytes.

Bodies and SSE frames pass through untouched. A replica that cannot be reached, or that
dies before the first byte of the answer reached the client, is skipped and the request
goes to another ready replica (a generation is safe to repeat until something was sent).
After the first streamed byte there is no retry: the stream ends with an error event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx

from modelplane.errors import (
    InvalidRequest,
    NoReadyReplica,
    UpstreamError,
    openai_envelope,
)
from modelplane.gateway.router import Router

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
_RETRYABLE = (
    httpx.ConnectError,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)


def peek(body: bytes) -> tuple[str, bool]:
    """The two fields the gateway needs: ``model`` and ``stream``."""
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
    return model, stream


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
    def __init__(self, router: Router, *, timeout_s: float = 600.0) -> None:
        self.router = router
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=5.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def forward(
        self, path: str, body: bytes, model: str, stream: bool, request_id: str
    ) -> Upstream:
        tried: set[str] = set()
        last: Exception | None = None
        for _ in range(MAX_ATTEMPTS):
            try:
                url = self.router.pick(model, frozenset(tried))
            except NoReadyReplica:
                if last is None:
                    raise
                break
            tried.add(url)
            stack = AsyncExitStack()
            stack.enter_context(self.router.track(url))
            try:
                req = self.client.build_request(
                    "POST",
                    url + path,
                    content=body,
                    headers={"content-type": "application/json", "x-request-id": request_id},
                )
                resp = await self.client.send(req, stream=True)
                stack.push_async_callback(resp.aclose)
                ctype = resp.headers.get("content-type", "application/json")
                if not stream or resp.status_code != 200:
                    data = await resp.aread()
                    await stack.aclose()
                    return Upstream(resp.status_code, ctype, data, None)
                return Upstream(200, ctype, None, _relay(resp, stack, request_id))
            except _RETRYABLE as exc:
                await stack.aclose()
                last = exc
                log.warning(
                    "replica %s of '%s' failed before answering (%s); trying another",
                    url,
                    model,
                    type(exc).__name__,
                )
            except BaseException:
                await stack.aclose()
                raise
        raise UpstreamError(
            f"no replica of '{model}' could answer after {len(tried)} attempt(s); retry shortly"
        )


async def _relay(
    resp: httpx.Response, stack: AsyncExitStack, request_id: str
) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.aiter_raw():
            yield chunk
    except (httpx.HTTPError, asyncio.IncompleteReadError) as exc:
        log.warning("request %s: upstream stream broke (%s)", request_id, type(exc).__name__)
        err = UpstreamError(
            "the model replica failed in the middle of the answer; retry the request"
        )
        yield b"data: " + json.dumps(openai_envelope(err)).encode() + b"\n\n"
    finally:
        await stack.aclose()
