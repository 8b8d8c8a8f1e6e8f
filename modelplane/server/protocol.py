"""``modelplane serve``'s HTTP/1.1 protocol: uvicorn's, except that OpenAI POSTs skip ASGI.

uvicorn turns each request into an ASGI scope, a request/response cycle object, an
event, ``receive`` and ``send`` messages and a header check per response header: about
a quarter of the gateway's CPU per proxied request (bench/README.md). For a POST to one
of ``fastpath.KINDS`` this protocol instead collects the body as uvicorn's parser
delivers it and, once it is complete, runs ``FastPath.exchange`` in a task that writes
its answer to the transport itself: the status line and headers and a whole body in one
write, a stream in chunked encoding.

Everything else stays uvicorn's: parsing (httptools), keep-alive and its timeout,
pipelining, flow control, graceful shutdown (an exchange's task is one of the server's
tasks, which shutdown waits for), and every other request, which goes through ASGI to
FastAPI as before. Requests this protocol does not take (``Expect: 100-continue``, a
pipelined request behind one still in progress, an upgrade, a server with
``limit_concurrency``) go through ASGI too, to the same ``FastPath``.

A client that disconnects cancels its exchange at once (uvicorn reports the lost
connection to the cycle's event, which here is the exchange itself).

It depends on uvicorn's ``HttpToolsProtocol`` internals (the parser callbacks, the
``cycle`` it drives), which is why ``pyproject.toml`` bounds uvicorn's version and
``tests/api/test_protocol.py`` covers each of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from modelplane.server.fastpath import KINDS, FastPath, error_parts, header_dict
from modelplane.server.middleware import given_request_id, length_over, mint_request_id, too_large
from modelplane.telemetry.logging import request_id_var

RAW_PATHS = {path.encode(): path for path in KINDS}


class GatewayProtocol(HttpToolsProtocol):
    """Pass as ``uvicorn.Config(http=GatewayProtocol)`` with a ``ModelplaneApp``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast: FastPath | None = getattr(self.app, "fast_path", None)

    def on_headers_complete(self) -> None:
        fast, cycle = self.fast, self.cycle
        if (
            fast is None
            or self.expect_100_continue
            or self.limit_concurrency is not None
            or (cycle is not None and not cycle.response_complete)
            or self.parser.get_method() != b"POST"
            or self.parser.should_upgrade()
        ):
            super().on_headers_complete()
            return
        url = self.url
        query = url.find(b"?")
        path = RAW_PATHS.get(url if query < 0 else url[:query])
        if path is None:
            super().on_headers_complete()
            return
        keep_alive = self.parser.get_http_version() != "1.0" and self.parser.should_keep_alive()
        exchange = Exchange(self, fast, path, keep_alive)
        self.cycle = exchange  # type: ignore[assignment]
        if exchange.too_large:
            exchange.start()  # answered at once: the body is not read


class Exchange:
    """One OpenAI POST on a connection, standing where uvicorn keeps its ASGI cycle:
    uvicorn's ``on_body`` appends to ``body``, ``on_message_complete`` clears
    ``more_body``, and both, like a lost connection (``disconnected``), call
    ``message_event.set()``, which is ``set`` here."""

    __slots__ = (
        "answering",
        "body",
        "disconnected",
        "fast",
        "headers",
        "keep_alive",
        "left",
        "more_body",
        "path",
        "protocol",
        "response_complete",
        "task",
        "too_large",
    )

    def __init__(
        self, protocol: GatewayProtocol, fast: FastPath, path: str, keep_alive: bool
    ) -> None:
        self.protocol = protocol
        self.fast = fast
        self.path = path
        self.keep_alive = keep_alive
        self.headers = headers = header_dict(protocol.headers)
        self.too_large = length_over(headers.get("content-length"), fast.limit)
        self.body = bytearray()
        self.more_body = True
        self.disconnected = self.response_complete = False
        self.left = self.answering = False
        self.task: asyncio.Task[None] | None = None

    @property
    def message_event(self) -> Exchange:
        return self

    def set(self) -> None:
        """Called by uvicorn's protocol on a body chunk, the body's end or a lost
        connection."""
        if self.disconnected:
            if self.task is not None and not self.response_complete and not self.left:
                self.left = True
                self.task.cancel()
            return
        if self.task is None and (not self.more_body or len(self.body) > self.fast.limit):
            self.too_large = self.too_large or len(self.body) > self.fast.limit
            self.start()
        elif self.more_body and len(self.body) > HIGH_WATER_LIMIT:
            # uvicorn pauses reading past its high-water mark until the app reads;
            # this keeps the whole body (up to the limit), so it reads on.
            self.protocol.flow.resume_reading()

    def start(self) -> None:
        """Serve the request in a task of its own, one of the server's tasks (which a
        graceful shutdown waits for)."""
        self.task = task = self.protocol.loop.create_task(self._run())
        tasks = self.protocol.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _run(self) -> None:
        headers = self.headers
        rid = mint_request_id(given_request_id(headers))
        token = request_id_var.set(rid)
        try:
            if self.too_large:
                self.keep_alive = False  # the rest of the body is not read
                await self.answer(*error_parts(too_large(self.fast.limit), self.path, rid))
            else:
                kind = KINDS[self.path]
                await self.fast.exchange(kind, self.path, rid, headers, self._body, self)
        finally:
            request_id_var.reset(token)
            if not self.response_complete and not self.disconnected:
                self.protocol.transport.close()  # nothing was answered: never hang

    async def _body(self) -> bytes:
        return bytes(self.body)

    async def answer(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.answering = True
        if self.disconnected:
            return
        self.protocol.transport.write(self._head(status, headers) + body)
        self._complete()

    async def stream(
        self, status: int, headers: list[tuple[bytes, bytes]], chunks: AsyncIterator[bytes]
    ) -> None:
        try:
            self.answering = True
            if self.disconnected:
                return
            transport, flow = self.protocol.transport, self.protocol.flow
            transport.write(self._head(status, [*headers, (b"transfer-encoding", b"chunked")]))
            async for chunk in chunks:
                if flow.write_paused:
                    await flow.drain()
                if self.disconnected:
                    return
                if chunk:  # an empty chunk would end the body
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            transport.write(b"0\r\n\r\n")
            self._complete()
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]

    def _head(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        parts = [STATUS_LINE[status]]
        defaults: list[tuple[bytes, bytes]] = self.protocol.server_state.default_headers
        for name, value in defaults:
            parts += (name, b": ", value, b"\r\n")
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        head = b"".join(parts)
        # A line break in a value would start a header of its own. One count over the
        # whole head: ``bytes in bytes`` raises and clears a TypeError inside CPython
        # 3.11 on every test, which cost more than the rest of this method.
        lines = len(defaults) + len(headers) + 2 + (not self.keep_alive)
        if head.count(b"\n") != lines or head.count(b"\r") != lines:
            bad = [
                n for n, v in [*defaults, *headers] if (n + v).count(b"\n") + (n + v).count(b"\r")
            ]
            raise ValueError(f"header {bad[0].decode()!r} has a line break")
        return head

    def _complete(self) -> None:
        self.response_complete = True
        if not self.keep_alive:
            self.protocol.transport.close()
        self.protocol.on_response_complete()
