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

Why a subclass of uvicorn's private ``HttpToolsProtocol`` rather than a server of our
own: keep-alive, pipelining, flow control, timeouts, graceful shutdown and ASGI for
every other route are most of an HTTP/1.1 server, and uvicorn's are tested far beyond
what we would write. The price is a dependency on names uvicorn does not promise (the
parser callbacks, the ``cycle`` they drive, ``STATUS_LINE``, ``HIGH_WATER_LIMIT``), so
it is made safe twice over: ``http_protocol()`` (what ``modelplane serve`` passes to
uvicorn) first drives this protocol through three requests on a stand-in transport,
and on any surprise logs a warning and serves with uvicorn's own protocol instead
(every request through ASGI: the same answers, about a quarter more CPU); and CI runs
``tests/server`` against the newest uvicorn release as well as the installed one
(``scripts/newest_uvicorn.py``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import uvicorn

from modelplane.server.fastpath import KINDS, FastPath, Out, error_parts, header_dict
from modelplane.server.middleware import given_request_id, length_over, mint_request_id, too_large
from modelplane.telemetry.logging import request_id_var

try:
    from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
except ImportError as exc:  # a uvicorn (or no httptools) without them: see http_protocol()
    MISSING: str | None = f"{type(exc).__name__}: {exc}"
    if not TYPE_CHECKING:  # stand-ins, so that the class below can be defined, never used
        HIGH_WATER_LIMIT, STATUS_LINE, HttpToolsProtocol = 65536, {}, asyncio.Protocol
else:
    MISSING = None

log = logging.getLogger(__name__)

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


def http_protocol() -> type[asyncio.Protocol] | Literal["auto"]:
    """What ``modelplane serve`` passes as ``uvicorn.Config(http=...)``: this module's
    protocol when the installed uvicorn still has the internals it builds on, else
    uvicorn's own choice, with a warning that says why."""
    why = problem()
    if why is None:
        return GatewayProtocol
    log.warning(
        "uvicorn %s lacks the internals modelplane's HTTP protocol builds on (%s): serving "
        "every request through uvicorn's own protocol and ASGI instead (the same answers, "
        "about a quarter more CPU a request)",
        uvicorn.__version__,
        why,
    )
    return "auto"


def problem() -> str | None:
    """Why ``GatewayProtocol`` cannot run on the installed uvicorn, or ``None``.

    Drives one protocol through a whole answer, a stream and a client that leaves, on a
    stand-in transport in an event loop of its own (in a thread: the caller may be in
    one), and compares what it wrote byte for byte. A few milliseconds, once a process."""
    if MISSING is not None:
        return MISSING
    found: list[str | None] = []

    def run() -> None:
        try:
            found.append(asyncio.run(_probe()))
        except Exception as exc:  # any surprise is a reason not to use it
            found.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=run, name="modelplane-protocol-check")
    thread.start()
    thread.join()
    return found[0] if found else "the check did not finish"


_QUIET = logging.getLogger(f"{__name__}.probe")
_QUIET.disabled = True


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 2), "sockname": ("127.0.0.1", 1)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _ProbeFast:
    """Stands in for ``FastPath``: echoes the body, whole or as a two-chunk stream, or
    holds the request until the client leaves."""

    limit = 1 << 20

    def __init__(self) -> None:
        self.cancelled = False

    async def exchange(
        self,
        kind: Any,
        path: str,
        rid: str,
        headers: Mapping[str, str],
        body_of: Callable[[], Awaitable[bytes]],
        out: Out,
    ) -> None:
        body = await body_of()
        if headers.get("x-probe") == "whole":
            await out.answer(200, [(b"content-length", b"%d" % len(body))], body)
        elif headers.get("x-probe") == "stream":
            await out.stream(200, [], _chunks(body))
        else:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    yield body[:2]
    yield body[2:]


class _ProbeApp:
    def __init__(self) -> None:
        self.fast_path = _ProbeFast()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"through ASGI"})


async def _probe() -> str | None:
    from uvicorn.server import ServerState

    app = _ProbeApp()
    config = uvicorn.Config(
        app, http=GatewayProtocol, ws="none", log_config=None, lifespan="off", proxy_headers=False
    )
    state = ServerState()
    protocol = GatewayProtocol(config=config, server_state=state, app_state={})
    protocol.logger = _QUIET  # uvicorn's warnings about the probe's own requests
    transport = _Transport()
    protocol.connection_made(transport)
    body = b'{"probe": 1}'
    expected = {
        "whole": b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n" + body,
        "stream": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b'2\r\n{"\r\na\r\nprobe": 1}\r\n0\r\n\r\n',
        "hold": b"",
    }
    for probe, answer in expected.items():
        head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-probe: {probe}\r\n"
        protocol.data_received(f"{head}content-length: {len(body)}\r\n\r\n".encode())
        protocol.data_received(body[:5])  # the body in two parts, as a socket may give it
        protocol.data_received(body[5:])
        if not isinstance(protocol.cycle, Exchange):
            return "a POST to the OpenAI routes did not start an exchange"
        tasks = list(state.tasks)
        if probe == "hold":
            await asyncio.sleep(0)  # the exchange's task reaches its wait
            protocol.connection_lost(None)
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if transport.written != answer:
            return f"the {probe} answer read {bytes(transport.written)[:120]!r}"
        transport.written.clear()
    if not app.fast_path.cancelled:
        return "a client that left did not cancel its exchange"
    if not callable(getattr(protocol.flow, "resume_reading", None)):
        return "flow control has no resume_reading"
    return None
