"""The OpenAI POST routes as a plain ASGI handler, in front of FastAPI.

``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` carry nearly all
traffic and need no request model, query parameters or dependency injection: the body
is forwarded as bytes. Serving them here, rather than through FastAPI's router, takes
about a third of the gateway's CPU per request away (bench/README.md). Everything else
— ``/api``, ``GET /v1/models``, ``/ui`` — goes on to FastAPI.

It does what the middleware does for every other route itself (the request id, echoed
in ``x-request-id``; the body-size bound), without wrapping ``receive`` and ``send``
once per layer. Errors are rendered by the same function FastAPI's handlers use
(``api.errors``).
A client that disconnects cancels its request, streaming or not, which cancels the
upstream call and frees the model replica (noticed once the request has run for
``WATCH_AFTER_S``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.types import Message, Receive, Scope, Send

from modelplane.api.errors import error_response
from modelplane.api.middleware import declares_too_much, request_id, too_large
from modelplane.errors import ModelplaneError, PermissionDenied
from modelplane.gateway.proxy import Inbound, peek
from modelplane.providers.base import Kind, Reply
from modelplane.telemetry.logging import request_id_var

if TYPE_CHECKING:
    from modelplane.api.platform import Platform

log = logging.getLogger(__name__)

KINDS: dict[str, Kind] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
STREAM_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
WATCH_AFTER_S = 0.05
"""A request still going after this long starts watching for its client leaving. Most
gateway requests to fast upstreams are over sooner, and a watcher (a task that waits on
``receive``) costs about 10 µs of CPU each; a client that leaves earlier is noticed at
this point instead, which is when the watcher's first ``receive`` reports it."""


class _Left(Exception):
    """The client disconnected."""


async def _body(receive: Receive, limit: int) -> bytes:
    chunks = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Left
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _headers(reply: Reply, length: int | None, rid: bytes) -> list[tuple[bytes, bytes]]:
    out = [(b"content-type", reply.content_type.encode("latin-1")), (b"x-request-id", rid)]
    if length is not None:
        out.append((b"content-length", str(length).encode()))
    out.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items())
    return out


class FastPath:
    """The handler for ``KINDS`` paths (``ModelplaneApp`` sends only those here)."""

    def __init__(self, max_body_bytes: int) -> None:
        self.limit = max_body_bytes
        self._platform: Platform | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id(scope)
        token = request_id_var.set(rid)
        try:
            kind = KINDS[scope["path"]]
            if scope["method"] != "POST":
                err = ModelplaneError(
                    f"{scope['method']} is not allowed on {scope['path']}; allowed: POST"
                )
                err.status, err.type, err.code = 405, "invalid_request_error", "method_not_allowed"
                err.extra_headers = {**err.extra_headers, "allow": "POST"}
                await self._error(err, rid, scope, receive, send)
                return
            if declares_too_much(scope, self.limit):
                await self._error(too_large(self.limit), rid, scope, receive, send)
                return
            if self._platform is None:
                self._platform = scope["app"].state.platform
            assert self._platform is not None
            await self._serve(self._platform, kind, rid, scope, receive, send)
        finally:
            request_id_var.reset(token)

    @staticmethod
    async def _error(
        exc: ModelplaneError, rid: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        exc.extra_headers = {**exc.extra_headers, "x-request-id": rid}
        await error_response(exc, scope["path"])(scope, receive, send)

    async def _serve(
        self,
        platform: Platform,
        kind: Kind,
        rid: str,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        raw_rid = rid.encode("latin-1")
        # One pass into a dict: the request path looks headers up several times, and a
        # scan of the raw list per lookup costs more. The first of repeated names wins.
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        # Metrics, the trace, the dashboard's stats and the summary log line, once.
        obs = platform.observer.begin(kind, scope["path"], rid, headers)
        me = asyncio.current_task()
        assert me is not None
        left = False

        def gone(watcher: asyncio.Future[None]) -> None:
            nonlocal left
            if not watcher.cancelled() and watcher.exception() is None:
                left = True
                me.cancel()

        watcher: asyncio.Future[None] | None = None
        timer: asyncio.TimerHandle | None = None

        def watch() -> None:
            nonlocal watcher
            watcher = asyncio.ensure_future(self._disconnect(receive))
            watcher.add_done_callback(gone)

        answering = False  # once the response has started, errors can only end it
        try:
            with obs.span("auth"):
                caller = platform.authenticate(headers.get("authorization"))
            obs.caller = caller
            if not caller.allows("inference"):
                raise PermissionDenied(
                    f"this key cannot call models (role {caller.role}, needs 'inference')"
                )
            body = await _body(receive, self.limit)
            peeked = peek(body)
            obs.model, obs.body = peeked.model, peeked.body
            # The body is read: the next message can only be the client leaving.
            timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, watch)
            reply = await platform.proxy.forward(Inbound(kind, body, peeked, rid, headers, caller))
            if reply.stream is None:
                data = reply.body or b""
                answering = True
                await send(
                    {
                        "type": "http.response.start",
                        "status": reply.status,
                        "headers": _headers(reply, len(data), raw_rid),
                    }
                )
                await send({"type": "http.response.body", "body": data})
                obs.answer(reply.status, reply.headers, data)
                return
            stream = obs.stream(reply.stream, reply.headers)
            answering = True
            await send(
                {
                    "type": "http.response.start",
                    "status": reply.status,
                    "headers": _headers(reply, None, raw_rid) + STREAM_HEADERS,
                }
            )
            await self._relay(stream, send)
        except asyncio.CancelledError:
            if not left:
                raise
            me.uncancel()  # the client went away: nothing is left to answer
            obs.left()
        except _Left:
            obs.left()
        except ModelplaneError as exc:
            obs.failed(exc)
            if not answering:
                await self._error(exc, rid, scope, receive, send)
        except Exception as exc:  # never a stack trace to the client
            obs.failed(exc)
            log.error("unexpected %s on %s", type(exc).__name__, scope["path"], exc_info=exc)
            if answering:
                return
            err = ModelplaneError(
                f"internal error; the server log has the details (request id {rid})"
            )
            await self._error(err, rid, scope, receive, send)
        finally:
            obs.close()
            if timer is not None:
                timer.cancel()
            if watcher is not None:
                watcher.remove_done_callback(gone)
                watcher.cancel()

    @staticmethod
    async def _disconnect(receive: Receive) -> None:
        message: Message = await receive()
        while message["type"] != "http.disconnect":
            message = await receive()

    @staticmethod
    async def _relay(stream: AsyncIterator[bytes], send: Send) -> None:
        try:
            async for chunk in stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
