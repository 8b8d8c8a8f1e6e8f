"""The hand-written HTTP/1.1 client against real servers on loopback: aiohttp.web for
well-behaved answers, raw asyncio servers for the misbehaving ones."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from modelplane.providers import http1
from modelplane.providers.http1 import (
    BadResponse,
    ConnectFailed,
    Http1Pool,
    UpstreamClosed,
)
from tests.helpers import free_port

BIG = bytes(range(256)) * (10 * 4096)  # 10 MiB


class Web:
    """An aiohttp.web app on 127.0.0.1 that counts the TCP connections it was given."""

    def __init__(
        self,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.peers: set[tuple[str, int]] = set()
        self.handler = handler
        self.ssl = ssl
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername"))
        return await self.handler(request)

    async def __aenter__(self) -> Web:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"{'https' if self.ssl else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


class Raw:
    """A raw asyncio server: ``handler(reader, writer)`` per connection, accepts counted."""

    def __init__(
        self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> None:
        self.handler = handler
        self.accepts = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts += 1
        try:
            await self.handler(reader, writer)
        finally:
            writer.close()

    async def __aenter__(self) -> Raw:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's head and body (by its content-length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@pytest.fixture
async def pool() -> AsyncIterator[Http1Pool]:
    p = Http1Pool()
    yield p
    await p.close()


async def get(pool: Http1Pool, url: str, body: bytes = b"") -> tuple[int, bytes]:
    resp = await pool.request("POST", url, {"x-test": "1"}, body, connect_timeout=5)
    return resp.status, await resp.read()


async def echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    return web.Response(body=body, headers={"x-path": request.path_qs, "x-host": request.host})


async def test_keep_alive_reuses_one_connection(pool: Http1Pool) -> None:
    async with Web(echo) as server:
        for i in range(5):
            resp = await pool.request(
                "POST",
                server.url + "/a/b?x=1&y=%20",
                [(b"content-type", b"text/plain")],
                b"hello %d" % i,
                connect_timeout=5,
            )
            assert resp.status == 200
            assert resp.headers["x-path"] == "/a/b?x=1&y=%20"
            assert resp.headers["x-host"] == server.url.removeprefix("http://")
            assert await resp.read() == b"hello %d" % i
        assert len(server.peers) == 1


async def test_host_header_can_be_set(pool: Http1Pool) -> None:
    async with Web(echo) as server:
        resp = await pool.request(
            "POST", server.url, [(b"Host", b"upstream.example")], b"", connect_timeout=5
        )
        assert resp.headers["x-host"] == "upstream.example"
        await resp.read()


async def test_concurrent_requests_open_several_connections(pool: Http1Pool) -> None:
    arrived, go = 0, asyncio.Event()

    async def gather(request: web.Request) -> web.StreamResponse:
        nonlocal arrived
        arrived += 1
        if arrived == 4:
            go.set()
        await go.wait()
        return web.Response(text="ok")

    async with Web(gather) as server:
        answers = await asyncio.gather(*(get(pool, server.url) for _ in range(4)))
        assert answers == [(200, b"ok")] * 4
        assert len(server.peers) == 4
        for _ in range(4):  # all four went back to the pool
            assert await get(pool, server.url) == (200, b"ok")
        assert len(server.peers) == 4


async def test_chunked_body(pool: Http1Pool) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for piece in (b"one ", b"two ", b"three"):
            await resp.write(piece)
        await resp.write_eof()
        return resp

    async with Web(chunked) as server:
        resp = await pool.request("GET", server.url, {}, b"", connect_timeout=5)
        assert resp.headers["transfer-encoding"] == "chunked"
        assert await resp.read() == b"one two three"
        assert await get(pool, server.url) == (200, b"one two three")
        assert len(server.peers) == 1


async def test_stream_arrives_piece_by_piece(pool: Http1Pool) -> None:
    more = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: 1\n\n")
        await more.wait()
        await resp.write(b"data: 2\n\n")
        await resp.write_eof()
        return resp

    async with Web(stream) as server:
        resp = await pool.request("POST", server.url, {}, b"{}", connect_timeout=5)
        chunks = resp.iter_chunks()
        assert await anext(chunks) == b"data: 1\n\n"  # before the server wrote the second
        more.set()
        assert [c async for c in chunks] == [b"data: 2\n\n"]
        assert await get(pool, server.url) == (200, b"data: 1\n\ndata: 2\n\n")
        assert len(server.peers) == 1


async def test_idle_connection_closed_by_the_server_is_replaced(pool: Http1Pool) -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()  # then closed, as a server whose keep-alive timeout passed

    async with Raw(once) as server:
        assert await get(pool, server.url) == (200, b"ok")
        assert await get(pool, server.url) == (200, b"ok")
        assert server.accepts == 2


async def test_stale_connection_is_retried_once_on_a_fresh_one(pool: Http1Pool) -> None:
    async def close_on_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The race a keep-alive client must survive: the server closes an idle
        # connection just as the next request is on its way.
        await read_request(reader)
        writer.write(OK)
        await read_request(reader)

    async with Raw(close_on_second) as server:
        assert await get(pool, server.url) == (200, b"ok")
        assert await get(pool, server.url) == (200, b"ok")
        assert server.accepts == 2


async def test_fresh_connection_closed_before_answering_is_an_error(pool: Http1Pool) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with Raw(hang_up) as server:
        with pytest.raises(UpstreamClosed, match="closed the connection before answering"):
            await get(pool, server.url)
        assert server.accepts == 1  # never sent twice on fresh connections


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-le",
    ],
)
async def test_server_closing_mid_answer_is_a_connection_error(
    pool: Http1Pool, partial: bytes
) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(partial)
        await writer.drain()

    async with Raw(cut) as server:
        with pytest.raises(UpstreamClosed, match="in the middle of the answer"):
            await get(pool, server.url)
        if b"\r\n\r\n" in partial:
            resp = await pool.request("GET", server.url, {}, b"", connect_timeout=5)
            with pytest.raises(ConnectionError):
                [c async for c in resp.iter_chunks()]


async def test_body_without_a_length_ends_with_the_connection(pool: Http1Pool) -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nall of it")

    async with Raw(until_close) as server:
        assert await get(pool, server.url) == (200, b"all of it")
        assert await get(pool, server.url) == (200, b"all of it")
        assert server.accepts == 2


async def test_garbage_is_a_bad_response(pool: Http1Pool) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await reader.read()

    async with Raw(garbage) as server:
        with pytest.raises(BadResponse, match=r"invalid HTTP/1\.1 response"):
            await get(pool, server.url)


async def test_connection_refused(pool: Http1Pool) -> None:
    with pytest.raises(ConnectFailed, match=r"could not connect to 127\.0\.0\.1"):
        await get(pool, f"http://127.0.0.1:{free_port()}/v1")


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops new SYNs, connect hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = [socket.socket() for _ in range(4)]
    for s in fillers:
        s.setblocking(False)
        s.connect_ex(server.getsockname())
    try:
        yield server.getsockname()[1]
    finally:
        for s in fillers:
            s.close()
        server.close()


async def test_connect_timeout(pool: Http1Pool, full_backlog: int) -> None:
    with pytest.raises(TimeoutError, match=r"took longer than 0\.2 s"):
        await pool.request(
            "POST", f"http://127.0.0.1:{full_backlog}/", {}, b"", connect_timeout=0.2
        )


@pytest.mark.parametrize("answer", [b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234", b""])
async def test_cancelled_mid_answer_closes_the_connection(pool: Http1Pool, answer: bytes) -> None:
    asked, gone = asyncio.Event(), asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)  # half an answer, or nothing at all
        asked.set()
        await reader.read()  # until the client closes its end
        gone.set()

    async with Raw(slow) as server:

        async def ask() -> bytes:
            resp = await pool.request("GET", server.url, {}, b"", connect_timeout=5)
            return await resp.read()

        task = asyncio.ensure_future(ask())
        await asyncio.wait_for(asked.wait(), 5)
        assert not task.done()
        task.cancel()  # as when the gateway's client leaves
        with pytest.raises(asyncio.CancelledError):
            await task
        await gone.wait()
        assert not pool._all and not any(pool._idle.values())


async def test_abandoned_stream_closes_the_connection(pool: Http1Pool) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        while True:
            await resp.write(b"x" * 1000)

    async with Web(endless) as server:
        resp = await pool.request("GET", server.url, {}, b"", connect_timeout=5)
        chunks = resp.iter_chunks()
        assert (await anext(chunks)).startswith(b"x")
        await chunks.aclose()
        assert not pool._all
        resp2 = await pool.request("GET", server.url, {}, b"", connect_timeout=5)
        resp2.close()
        assert len(server.peers) == 2


async def test_no_content_and_head(pool: Http1Pool) -> None:
    async def empty(request: web.Request) -> web.StreamResponse:
        if request.method == "HEAD":
            return web.Response(body=b"not sent for HEAD")
        return web.Response(status=204)

    async with Web(empty) as server:
        for _ in range(2):
            resp = await pool.request("DELETE", server.url, {}, b"", connect_timeout=5)
            assert (resp.status, await resp.read()) == (204, b"")
        assert len(server.peers) == 1
        resp = await pool.request("HEAD", server.url, {}, b"", connect_timeout=5)
        assert resp.status == 200 and resp.headers["content-length"] == "17"
        assert await resp.read() == b""
        assert not any(pool._idle.values())  # never reused after HEAD


async def test_large_body_with_flow_control(pool: Http1Pool) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=BIG)

    async with Web(big) as server:
        resp = await pool.request("GET", server.url, {}, b"", connect_timeout=5)
        conn = resp._conn
        assert conn is not None
        while not conn.paused:  # nobody reads: the buffer fills until reading pauses
            assert not conn.done
            await conn.wait()
        assert http1.HIGH_WATER < conn.buffered < http1.HIGH_WATER + 512 * 1024
        received = bytearray()
        async for chunk in resp.iter_chunks():
            received += chunk
            assert conn.buffered < http1.HIGH_WATER + 512 * 1024
        assert received == BIG
        assert await get(pool, server.url) == (200, BIG)
        assert len(server.peers) == 1


async def test_connection_close_is_not_reused(pool: Http1Pool) -> None:
    async def closing(request: web.Request) -> web.StreamResponse:
        return web.Response(text="bye", headers={"connection": "close"})

    async with Web(closing) as server:
        assert await get(pool, server.url) == (200, b"bye")
        assert await get(pool, server.url) == (200, b"bye")
        assert len(server.peers) == 2


async def test_unread_body_is_not_reused(pool: Http1Pool) -> None:
    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=BIG if request.method == "GET" else b"small")

    async with Web(big) as server:
        resp = await pool.request("GET", server.url, {}, b"", connect_timeout=5)
        resp.release()  # the body was not read: the connection cannot carry another request
        assert await get(pool, server.url) == (200, b"small")
        assert len(server.peers) == 2


async def test_header_injection_is_refused(pool: Http1Pool) -> None:
    with pytest.raises(ValueError, match="line break"):
        await pool.request(
            "GET", "http://127.0.0.1:1/", {"x-a": "1\r\nx-b: 2"}, b"", connect_timeout=1
        )


async def test_closed_pool_closes_its_connections() -> None:
    pool, more = Http1Pool(), asyncio.Event()

    async def half(request: web.Request) -> web.StreamResponse:
        if request.path == "/whole":
            return web.Response(text="ok")
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"half")
        await more.wait()
        return resp

    async with Web(half) as server:
        resp = await pool.request("POST", server.url, {}, b"", connect_timeout=5)
        assert await get(pool, server.url + "/whole") == (200, b"ok")  # then idle
        assert len(pool._all) == 2
        await pool.close()  # the answer being read is cut off too
        assert not pool._all
        with pytest.raises(UpstreamClosed, match="pool was closed"):
            await resp.read()
        more.set()
        with pytest.raises(RuntimeError, match="closed"):
            await get(pool, server.url)


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1, and a client trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    return server, ssl.create_default_context(cafile=str(cert_path))


async def test_https(tmp_path: Path) -> None:
    server_ctx, client_ctx = self_signed(tmp_path)
    async with Web(echo, server_ctx) as server:
        pool = Http1Pool(ssl_context=client_ctx)
        try:
            for _ in range(2):
                assert await get(pool, server.url, b"secret") == (200, b"secret")
            assert len(server.peers) == 1
        finally:
            await pool.close()
        untrusting = Http1Pool()  # the system's CAs do not know the test certificate
        try:
            with pytest.raises(ConnectFailed, match="certificate verify failed"):
                await get(untrusting, server.url)
        finally:
            await untrusting.close()
