"""A small HTTP/1.1 keep-alive client for the gateway's hot path.

Written by hand, on purpose. aiohttp is the well-kept library and stays the client for
everything else, but in a pass-through gateway its per-request Python work (request and
response objects, connector, payload writer) was about 30 % of the gateway's CPU, some
140 µs a request. What is hand-written here is only connection pooling and writing the
request; responses are parsed by httptools (llhttp, in C), which also decodes chunked
bodies. No redirects, proxies, cookies, compression or pipelining: one request at a time
per connection, to upstreams the gateway was configured with.

Errors, every one an ``OSError`` as the gateway expects of a transport failure::

    ConnectionError
    └── Http1Error
        ├── ConnectFailed    no connection could be opened (refused, DNS, TLS)
        ├── UpstreamClosed   the connection closed or reset before the answer was whole
        └── BadResponse      the upstream's bytes are not an HTTP/1.1 response
    TimeoutError             no connection within ``connect_timeout``

A connection goes back to the pool only after its response was read to the end and the
upstream did not ask to close it; a response abandoned halfway (an error, or the
caller's task cancelled when its client left) closes its connection.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import cast

import httptools
import yarl

IDLE_PER_HOST = 256
IDLE_EXPIRY_S = 30.0
HIGH_WATER = 1 << 20
"""Unread body bytes past which reading from the socket pauses."""

_Key = tuple[str, str, int]


class Http1Error(ConnectionError):
    """A transport failure talking to an upstream."""


class ConnectFailed(Http1Error):
    pass


class UpstreamClosed(Http1Error):
    pass


class BadResponse(Http1Error):
    pass


class _Stale(UpstreamClosed):
    """A reused connection closed before any byte of the answer: safe to send again."""


class _Conn(asyncio.Protocol):
    """One connection and the response in progress on it."""

    def __init__(self, pool: Http1Pool, key: _Key) -> None:
        self.pool, self.key = pool, key
        self.where = f"{key[1]}:{key[2]}"
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.idle_since = 0.0
        self._new_response(False)

    def _new_response(self, head: bool) -> None:
        self.head = head
        self.expecting = False
        self.received = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = self.done = self.until_close = self.keep_alive = self.paused = False
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.high_water: float = HIGH_WATER
        self.error: Http1Error | None = None

    def send(self, data: bytes, head: bool) -> None:
        assert self.transport is not None and not self.expecting
        self._new_response(head)
        self.expecting = True
        self.transport.write(data)

    async def wait(self) -> None:
        self.waiter = self.pool.loop.create_future()
        await self.waiter

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def reusable(self) -> bool:
        return self.done and self.keep_alive and not self.chunks and self.transport is not None

    def close(self, error: Http1Error | None = None) -> None:
        if self.expecting and self.error is None:  # someone may be waiting for the rest
            self.error = error or UpstreamClosed(f"the connection to {self.where} was closed")
            self._wake()
        self.expecting = False
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self.pool._all.discard(self)

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not registered as one
        self.pool._all.add(self)  # asyncio and uvloop both set TCP_NODELAY

    def data_received(self, data: bytes) -> None:
        if not self.expecting:
            self.close(BadResponse(f"{self.where} sent bytes nobody asked for"))
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.close(BadResponse(f"{self.where} sent an invalid HTTP/1.1 response ({exc})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pool._all.discard(self)
        if not self.expecting:
            return
        if self.headers_done and self.until_close and not self.done:
            self.on_message_complete()  # a body without a length ends when the connection does
            return
        why = f" ({exc})" if exc else ""
        if not self.received:
            self.error = _Stale(f"{self.where} closed the connection before answering{why}")
        elif not self.done:
            self.error = UpstreamClosed(
                f"{self.where} closed the connection in the middle of the answer{why}"
            )
        self.expecting = False
        self._wake()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        old = self.headers.get(key)
        self.headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.headers = {}  # an interim answer (100 Continue): the real one follows
            return
        self.status = status
        self.headers_done = True
        headers = self.headers
        self.until_close = (
            not self.head
            and status not in (204, 304)
            and "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
        )
        if self.head:  # llhttp cannot know that a HEAD answer has no body: never reused
            self.done = True
            self.expecting = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.head:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > self.high_water and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self.headers_done:
            return  # the end of an interim answer
        self.done = True
        self.keep_alive = not self.until_close and self.parser.should_keep_alive()
        self.expecting = False
        self._wake()


class Http1Response:
    """An upstream's answer: ``status``, and ``headers`` with lower-case names (repeated
    ones joined with ``", "``). Its connection goes back to the pool once the body was
    read to the end; ``release()`` or ``close()`` must be called otherwise."""

    __slots__ = ("_conn", "headers", "status")

    def __init__(self, conn: _Conn) -> None:
        self._conn: _Conn | None = conn
        self.status = conn.status
        self.headers = conn.headers

    async def read(self) -> bytes:
        """The whole body."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("the response was already released")
        conn.high_water = float("inf")  # all of it is wanted in memory anyway
        conn.resume()
        try:
            while not conn.done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait()
        except BaseException:
            self.close()
            raise
        chunks = conn.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.release()
        return body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body in pieces as they arrive (chunked transfer coding removed): all that
        arrived since the last piece, joined, so that a burst costs the caller one step."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("the response was already released")
        chunks = conn.chunks
        try:
            while True:
                if chunks:
                    piece = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                    chunks.clear()
                    conn.buffered = 0
                    conn.resume()
                    yield piece
                elif conn.done:
                    break
                elif conn.error is not None:
                    raise conn.error
                else:
                    await conn.wait()
        finally:
            self.release()

    def release(self) -> None:
        """Give the connection back if the body was read to the end, else close it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            if conn.reusable():
                conn.pool._put(conn)
            else:
                conn.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class Http1Pool:
    """Keep-alive connections per (scheme, host, port), for use in one event loop."""

    def __init__(
        self,
        *,
        idle_per_host: int = IDLE_PER_HOST,
        idle_expiry_s: float = IDLE_EXPIRY_S,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context`` for https defaults to the system's CAs with verification."""
        self.loop = asyncio.get_running_loop()
        self.idle_per_host, self.idle_expiry_s = idle_per_host, idle_expiry_s
        self._idle: dict[_Key, collections.deque[_Conn]] = {}
        self._all: set[_Conn] = set()
        self._ssl = ssl_context
        self.closed = False

    async def request(
        self,
        method: str,
        url: yarl.URL | str,
        headers: list[tuple[bytes, bytes]] | Mapping[str, str],
        body: bytes,
        *,
        connect_timeout: float | None,
    ) -> Http1Response:
        """Send one request; returns once the status and headers are in."""
        if self.closed:
            raise RuntimeError("the connection pool is closed")
        key, target, host = _parse(url) if isinstance(url, str) else _split(url)
        if not isinstance(headers, list):
            headers = [(k.encode("latin-1"), v.encode()) for k, v in headers.items()]
        block = b"".join([name + b": " + value + b"\r\n" for name, value in headers])
        if block.count(b"\n") != len(headers) or block.count(b"\r") != len(headers):
            raise ValueError(f"a header contains a line break: {[n for n, _ in headers]}")
        if (b"\n" + block.lower()).find(b"\nhost:") < 0:  # not ``in``: see server/protocol.py
            block += b"host: " + host + b"\r\n"
        if body or method not in ("GET", "HEAD"):
            block += b"content-length: %d\r\n" % len(body)
        data = b"".join((method.encode(), b" ", target, b" HTTP/1.1\r\n", block, b"\r\n", body))
        head = method == "HEAD"
        conn = self._take(key)
        if conn is not None:
            try:
                return await self._exchange(conn, data, head)
            except _Stale:
                pass  # the upstream dropped an idle connection: nothing was received
        conn = await self._connect(key, connect_timeout)
        return await self._exchange(conn, data, head)

    async def close(self) -> None:
        """Close every connection, idle or in use."""
        self.closed = True
        for conn in list(self._all):
            conn.close(UpstreamClosed(f"the connection pool was closed ({conn.where})"))
        self._idle.clear()

    async def _exchange(self, conn: _Conn, data: bytes, head: bool) -> Http1Response:
        try:
            conn.send(data, head)
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait()
        except BaseException:
            conn.close()
            raise
        return Http1Response(conn)

    def _take(self, key: _Key) -> _Conn | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.transport is None or conn.transport.is_closing():
                conn.close()  # the upstream hung up; its connection_lost is on the way
                continue
            if self.loop.time() - conn.idle_since > self.idle_expiry_s:
                conn.close()  # the newest is too old: so are all the others
                for old in idle:
                    old.close()
                idle.clear()
                return None
            return conn
        return None

    def _put(self, conn: _Conn) -> None:
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = collections.deque()
        now = self.loop.time()
        while idle and (idle[0].transport is None or now - idle[0].idle_since > self.idle_expiry_s):
            idle.popleft().close()
        if self.closed or len(idle) >= self.idle_per_host:
            conn.close()
            return
        conn.idle_since = now
        idle.append(conn)

    async def _connect(self, key: _Key, limit_s: float | None) -> _Conn:
        scheme, host, port = key
        context = None
        if scheme == "https":
            context = self._ssl = self._ssl or ssl.create_default_context()
        conn = _Conn(self, key)
        try:
            async with asyncio.timeout(limit_s):
                await self.loop.create_connection(
                    lambda: conn, host, port, ssl=context, server_hostname=host if context else None
                )
        except BaseException as exc:
            conn.close()  # made just as the timeout or a cancellation struck
            if isinstance(exc, TimeoutError):
                raise TimeoutError(
                    f"connecting to {host}:{port} took longer than {limit_s:g} s"
                ) from None
            if isinstance(exc, OSError):
                why = exc.strerror or str(exc) or type(exc).__name__
                raise ConnectFailed(f"could not connect to {host}:{port}: {why}") from exc
            raise
        return conn


@functools.lru_cache(maxsize=1024)
def _parse(url: str) -> tuple[_Key, bytes, bytes]:
    return _split(yarl.URL(url))


def _split(url: yarl.URL) -> tuple[_Key, bytes, bytes]:
    """The pool key, the request target and the Host header of an absolute URL."""
    if url.scheme not in ("http", "https") or not url.raw_host or url.port is None:
        raise ValueError(f"not an absolute http(s) URL: {url}")
    host = url.raw_host
    default = url.port == (443 if url.scheme == "https" else 80)
    netloc = f"[{host}]" if ":" in host else host
    host_header = netloc if default else f"{netloc}:{url.port}"
    target = url.raw_path_qs or "/"
    return (url.scheme, host, url.port), target.encode(), host_header.encode()
