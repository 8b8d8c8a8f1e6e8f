"""The OpenAI POST routes, served in front of FastAPI.

``/v1/chat/completions``, ``/v1/completions`` and ``/v1/embeddings`` carry nearly all
traffic and need no request model, query parameters or dependency injection: the body
is forwarded as bytes. Serving them here, rather than through FastAPI's router, takes
about a third of the gateway's CPU per request away (bench/README.md). Everything else
— ``/api``, ``GET /v1/models``, ``/ui`` — goes on to FastAPI.

``FastPath.exchange`` serves one request whatever carries it: ``modelplane serve``'s
HTTP protocol (``server/protocol.py``) calls it directly, without ASGI, and ``FastPath``
itself is the plain ASGI handler for any other server. It does what the middleware does
for every other route itself (the request id, echoed in ``x-request-id``; the body-size
bound). Errors are rendered by the same function FastAPI's handlers use
(``api.errors``).
A client that disconnects cancels its request, streaming or not, which cancels the
upstream call and frees the model replica (under ASGI, noticed once the request has run
for ``WATCH_AFTER_S``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Protocol

from starlette.types import Message, Receive, Scope, Send

from modelplane.api.errors import error_response
from modelplane.errors import ModelplaneError, PermissionDenied
from modelplane.gateway.inbound import Inbound, peek
from modelplane.providers.base import Kind, Reply
from modelplane.server.middleware import length_over, request_id, too_large
from modelplane.telemetry.answers import read_answer
from modelplane.telemetry.logging import request_id_var

if TYPE_CHECKING:
    from modelplane.server.platform import Platform

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


class Out(Protocol):
    """Where one exchange's answer goes: ASGI ``send`` (``AsgiOut``) or uvicorn's
    transport directly (``server/protocol.py``). ``left`` is set before the exchange's task
    is cancelled because the client went away."""

    left: bool
    answering: bool
    """Once the answer has started, an error can only end it."""

    async def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A whole answer (``headers`` include content-length)."""

    async def stream(
        self, status: int, headers: list[tuple[bytes, bytes]], chunks: AsyncIterator[bytes]
    ) -> None:
        """An answer relayed chunk by chunk (closes ``chunks`` however it ends)."""


def header_dict(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """One pass into a dict: the request path looks headers up several times, and a
    scan of the raw list per lookup costs more. The first of repeated names wins."""
    headers: dict[str, str] = {}
    for name, value in raw:
        headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return headers


def error_parts(
    exc: ModelplaneError, path: str, rid: str
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """An error as status, headers and body, as ``api.errors.error_response`` renders it."""
    exc.extra_headers = {**exc.extra_headers, "x-request-id": rid}
    response = error_response(exc, path)
    return response.status_code, response.raw_headers, bytes(response.body)


def _headers(reply: Reply, length: int | None, rid: bytes) -> list[tuple[bytes, bytes]]:
    """The answer's head; the reply's target and cache status are written here, once,
    as ``x-modelplane-target`` and ``x-modelplane-cache``."""
    out = [(b"content-type", reply.content_type.encode("latin-1")), (b"x-request-id", rid)]
    if length is not None:
        out.append((b"content-length", str(length).encode()))
    if reply.target is not None:
        out.append((b"x-modelplane-target", reply.target.encode("latin-1")))
    if reply.cache is not None:
        out.append((b"x-modelplane-cache", reply.cache.encode()))
    out.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items())
    return out


class FastPath:
    """The handler for ``KINDS`` paths: ``ModelplaneApp`` sends ASGI requests for those
    here, and ``server/protocol.py`` calls ``exchange`` for POSTs without ASGI."""

    def __init__(self, max_body_bytes: int) -> None:
        self.limit = max_body_bytes
        self.platform: Platform | None = None
        """Set by the app's lifespan once the platform is open."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id(scope)
        token = request_id_var.set(rid)
        path = scope["path"]
        out = AsgiOut(send)
        try:
            kind = KINDS[path]
            if scope["method"] != "POST":
                err = ModelplaneError(f"{scope['method']} is not allowed on {path}; allowed: POST")
                err.status, err.type, err.code = 405, "invalid_request_error", "method_not_allowed"
                err.extra_headers = {**err.extra_headers, "allow": "POST"}
                await out.answer(*error_parts(err, path, rid))
                return
            headers = header_dict(scope["headers"])
            if length_over(headers.get("content-length"), self.limit):
                await out.answer(*error_parts(too_large(self.limit), path, rid))
                return
            watch = _Watch(receive, out, self.limit)
            try:
                await self.exchange(kind, path, rid, headers, watch.body, out)
            finally:
                watch.stop()
        finally:
            request_id_var.reset(token)

    async def exchange(
        self,
        kind: Kind,
        path: str,
        rid: str,
        headers: Mapping[str, str],
        body_of: Callable[[], Awaitable[bytes]],
        out: Out,
    ) -> None:
        """Serve one request whose headers are in; ``body_of`` reads its body."""
        platform = self.platform
        assert platform is not None, "the app's lifespan has not run"
        raw_rid = rid.encode("latin-1")
        # Metrics, the trace, the dashboard's stats and the summary log line, once.
        obs = platform.observer.begin(kind, path, rid, headers)
        try:
            with obs.span("auth"):
                caller = platform.authenticate(headers.get("authorization"))
            obs.caller = caller
            if not caller.allows("inference"):
                raise PermissionDenied(
                    f"this key cannot call models (role {caller.role}, needs 'inference')"
                )
            body = await body_of()
            peeked = peek(body)
            obs.model, obs.body = peeked.model, peeked.body
            proxy = platform.proxy
            reply, permit = await proxy.forward(Inbound(kind, body, peeked, rid, headers, caller))
            # One reading of the answer, for its usage record and for its metrics.
            cached = reply.cache == "hit"
            if reply.stream is None:
                data = reply.body or b""
                answer = read_answer(reply.status, data, len(body), reply.target, cached)
                with obs.span("usage.record"):
                    proxy.settle(permit, answer)
                await out.answer(reply.status, _headers(reply, len(data), raw_rid), data)
                obs.answer(answer, data)
                return
            with obs.span("usage.record"):  # settled by the reader, when the stream ends
                settle = partial(proxy.settle, permit)
                stream = obs.stream(reply.stream, len(body), reply.target, cached, settle)
            await out.stream(reply.status, _headers(reply, None, raw_rid) + STREAM_HEADERS, stream)
        except asyncio.CancelledError:
            if not out.left:
                raise
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()  # the client went away: nothing is left to answer
            obs.left()
        except _Left:
            obs.left()
        except ModelplaneError as exc:
            obs.failed(exc)
            if not out.answering:
                await out.answer(*error_parts(exc, path, rid))
        except Exception as exc:  # never a stack trace to the client
            obs.failed(exc)
            log.error("unexpected %s on %s", type(exc).__name__, path, exc_info=exc)
            if not out.answering:
                err = ModelplaneError(
                    f"internal error; the server log has the details (request id {rid})"
                )
                await out.answer(*error_parts(err, path, rid))
        finally:
            obs.close()


class AsgiOut:
    """``Out`` over ASGI ``send``."""

    __slots__ = ("answering", "left", "send")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.left = self.answering = False

    async def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.answering = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def stream(
        self, status: int, headers: list[tuple[bytes, bytes]], chunks: AsyncIterator[bytes]
    ) -> None:
        try:
            self.answering = True
            await self.send({"type": "http.response.start", "status": status, "headers": headers})
            async for chunk in chunks:
                await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]


class _Watch:
    """Reads an ASGI request's body, then (after ``WATCH_AFTER_S``) watches for the
    client leaving, which cancels the request's task."""

    def __init__(self, receive: Receive, out: AsgiOut, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.out = out
        self.task = asyncio.current_task()
        self.timer: asyncio.TimerHandle | None = None
        self.watcher: asyncio.Future[None] | None = None

    async def body(self) -> bytes:
        limit = self.limit
        chunks = []
        seen = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise _Left
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                raise too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                # The body is read: the next message can only be the client leaving.
                self.timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._watch)
                return b"".join(chunks)

    def _watch(self) -> None:
        self.watcher = asyncio.ensure_future(self._disconnect())
        self.watcher.add_done_callback(self._gone)

    async def _disconnect(self) -> None:
        message: Message = await self.receive()
        while message["type"] != "http.disconnect":
            message = await self.receive()

    def _gone(self, watcher: asyncio.Future[None]) -> None:
        if not watcher.cancelled() and watcher.exception() is None and self.task is not None:
            self.out.left = True
            self.task.cancel()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.watcher is not None:
            self.watcher.remove_done_callback(self._gone)
            self.watcher.cancel()
