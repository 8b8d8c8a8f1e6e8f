"""``modelplane serve``'s HTTP/1.1 protocol (``server/protocol.py``) on the wire: OpenAI POSTs
are answered without ASGI, and every HTTP/1.1 behaviour a client relies on still holds
(keep-alive, pipelining, HTTP/1.0, chunked bodies, ``Expect: 100-continue``, the body
limit, streams, a client leaving, graceful shutdown). Raw sockets, so that what the
server writes is seen byte for byte."""

from __future__ import annotations

import json
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO

import httpx
import pytest

from modelplane.server.protocol import Exchange
from tests.gateway.fakes import FakeUpstream
from tests.helpers import ADMIN_KEY, Server, eventually

PATH = "/v1/chat/completions"
LIMIT = 4096


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    up = FakeUpstream("a")
    yield up
    up.close()


def _serve(home: Path, fake: FakeUpstream) -> Server:
    srv = Server(
        home, f"sqlite:///{home / 'modelplane.db'}", MODELPLANE_MAX_BODY_BYTES=str(LIMIT)
    ).start()
    srv.add_external("a", fake.base_url, "upstream-a")
    return srv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeUpstream) -> Iterator[Server]:
    srv = _serve(tmp_path_factory.mktemp("home"), fake)
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture(autouse=True)
def _reset(fake: FakeUpstream) -> Iterator[None]:
    yield from fake.each_test()


def body(words: str = "hi", **extra: Any) -> bytes:
    msg = [{"role": "user", "content": words}]
    return json.dumps({"model": "a", "messages": msg, **extra}).encode()


def request(
    data: bytes, *, version: str = "1.1", path: str = PATH, extra: str = "", method: str = "POST"
) -> bytes:
    head = (
        f"{method} {path} HTTP/{version}\r\nhost: x\r\nauthorization: Bearer {ADMIN_KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(data)}\r\n{extra}\r\n"
    )
    return head.encode() + data


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_response(f: BinaryIO) -> tuple[int, dict[str, str], bytes]:
    """One response from a connection's reader: status, headers (last wins), body."""
    status_line = f.readline()
    assert status_line, "the server closed the connection"
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        data = b""
        while True:
            size = int(f.readline().strip(), 16)
            chunk = f.read(size + 2)
            if size == 0:
                assert chunk == b"\r\n"
                return status, headers, data
            data += chunk[:-2]
    return status, headers, f.read(int(headers.get("content-length", "0")))


def closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (nothing more comes)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def prompt_tokens(data: bytes) -> int:
    tokens: int = json.loads(data)["usage"]["prompt_tokens"]
    return tokens


def test_keep_alive_serves_several_requests_on_one_connection(
    server: Server, fake: FakeUpstream
) -> None:
    with connect(server) as sock, sock.makefile("rb") as f:
        for i in range(3):
            sock.sendall(request(body(f"prompt={i + 5}")))
            status, headers, data = read_response(f)
            assert status == 200, data
            assert prompt_tokens(data) == i + 5
            assert headers["x-modelplane-target"] == "a"
            assert headers["content-type"].startswith("application/json")
            assert "connection" not in headers
    assert len(fake.calls) == 3


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    with connect(server) as sock, sock.makefile("rb") as f:
        sock.sendall(b"".join(request(body(f"prompt={n}")) for n in (7, 11, 13)))
        answers = [read_response(f) for _ in range(3)]
    assert [s for s, _, _ in answers] == [200, 200, 200]
    assert [prompt_tokens(d) for _, _, d in answers] == [7, 11, 13]


def test_http_1_0_gets_its_answer_and_the_connection_closes(server: Server) -> None:
    with connect(server) as sock, sock.makefile("rb") as f:
        sock.sendall(request(body(), version="1.0"))
        status, headers, data = read_response(f)
        assert status == 200, data
        assert headers["connection"] == "close"
        assert closed(sock)


def test_chunked_request_bodies_are_read_whole(server: Server, fake: FakeUpstream) -> None:
    data = body("prompt=21")
    half = len(data) // 2
    head = (
        f"POST {PATH} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN_KEY}\r\n"
        "transfer-encoding: chunked\r\n\r\n"
    ).encode()
    with connect(server) as sock, sock.makefile("rb") as f:
        sock.sendall(head + b"%x\r\n%b\r\n" % (half, data[:half]))
        sock.sendall(b"%x\r\n%b\r\n0\r\n\r\n" % (len(data) - half, data[half:]))
        status, _, answer = read_response(f)
    assert status == 200, answer
    assert prompt_tokens(answer) == 21
    assert fake.calls[-1]["messages"][0]["content"] == "prompt=21"


def test_a_declared_body_over_the_limit_gets_413_without_being_sent(server: Server) -> None:
    head = request(b"")[: -len(b"content-length: 0\r\n\r\n")]
    with connect(server) as sock, sock.makefile("rb") as f:
        sock.sendall(head + f"content-length: {LIMIT + 1}\r\n\r\n".encode())
        status, headers, data = read_response(f)
        assert status == 413
        assert json.loads(data)["error"]["code"] == "payload_too_large"
        assert headers["connection"] == "close"
        assert closed(sock)


def test_a_chunked_body_over_the_limit_gets_413(server: Server, fake: FakeUpstream) -> None:
    head = (
        f"POST {PATH} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN_KEY}\r\n"
        "transfer-encoding: chunked\r\n\r\n"
    ).encode()
    piece = b"x" * 1000
    with connect(server) as sock, sock.makefile("rb") as f:
        sock.sendall(head)
        for _ in range(5):
            sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
        status, _, data = read_response(f)
        assert status == 413, data
        assert closed(sock)
    assert fake.calls == []


def test_expect_100_continue_is_honoured(server: Server) -> None:
    data = body("prompt=4")
    with connect(server) as sock, sock.makefile("rb") as f:
        sock.sendall(request(data, extra="expect: 100-continue\r\n")[: -len(data)])
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert f.readline() == b"\r\n"
        sock.sendall(data)
        status, _, answer = read_response(f)
    assert status == 200, answer
    assert prompt_tokens(answer) == 4


def test_query_strings_are_ignored_and_other_methods_get_405(server: Server) -> None:
    with connect(server) as sock, sock.makefile("rb") as f:
        sock.sendall(request(body("prompt=9"), path=PATH + "?trace=1"))
        status, _, data = read_response(f)
        assert status == 200, data
        assert prompt_tokens(data) == 9
        sock.sendall(request(b"", method="GET"))
        status, headers, data = read_response(f)
        assert status == 405
        assert headers["allow"] == "POST"
        assert json.loads(data)["error"]["code"] == "method_not_allowed"


def test_request_ids_and_errors_come_back_in_the_openai_format(server: Server) -> None:
    with connect(server) as sock, sock.makefile("rb") as f:
        sock.sendall(request(b"{not json", extra="x-request-id: caller-id-1\r\n"))
        status, headers, data = read_response(f)
        assert status == 400
        assert headers["x-request-id"] == "caller-id-1"
        assert headers["content-type"] == "application/json"
        assert "not valid JSON" in json.loads(data)["error"]["message"]
        # The connection stays usable after an error.
        sock.sendall(request(body()))
        status, headers, _ = read_response(f)
        assert status == 200
        assert len(headers["x-request-id"]) == 32


def test_streams_are_chunked_end_cleanly_and_keep_the_connection(server: Server) -> None:
    with connect(server) as sock, sock.makefile("rb") as f:
        sock.sendall(request(body("tokens=4", stream=True)))
        status, headers, data = read_response(f)
        assert status == 200
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["transfer-encoding"] == "chunked"
        assert headers["cache-control"] == "no-cache"
        events = [e for e in data.decode().split("\n\n") if e]
        assert events[-1] == "data: [DONE]"
        text = "".join(
            json.loads(e[6:])["choices"][0]["delta"].get("content") or ""
            for e in events[:-1]
            if json.loads(e[6:])["choices"]
        )
        assert text == "t0 t1 t2 t3 "
        sock.sendall(request(body("prompt=3")))
        assert read_response(f)[0] == 200


def test_the_openai_sdk_streams_through_it(server: Server) -> None:
    stream = server.openai().chat.completions.create(
        model="a", messages=[{"role": "user", "content": "tokens=3"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "t0 t1 t2 "


def test_a_client_that_leaves_is_noticed_at_once(server: Server, fake: FakeUpstream) -> None:
    fake.reset("gate")
    with connect(server) as sock:
        sock.sendall(request(body(), extra="x-request-id: leaver-1\r\n"))
        eventually(lambda: len(fake.calls) == 1, timeout=10, what="the upstream call")
    # Recorded as 499 (the client closed the connection) while the upstream still holds
    # the request: the exchange was cancelled, not left waiting for the upstream.

    def recorded() -> bool:
        errors = server.http.get("/api/stats/errors").json()["data"]
        return any(e["request_id"] == "leaver-1" and e["status"] == 499 for e in errors)

    eventually(recorded, timeout=5, what="the departed client's 499")
    assert not fake.gate.is_set()


def test_graceful_shutdown_finishes_requests_in_flight(tmp_path: Path, fake: FakeUpstream) -> None:
    srv = _serve(tmp_path / "home", fake)
    fake.reset("gate")
    answers: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: answers.append(
            httpx.post(
                srv.base_url + PATH,
                content=body(),
                headers={"authorization": f"Bearer {ADMIN_KEY}"},
                timeout=30,
            )
        )
    )
    try:
        thread.start()
        eventually(lambda: len(fake.calls) == 1, timeout=10, what="the upstream call")
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        # The server stops accepting, but answers what it already took.
        eventually(lambda: _refused(srv), timeout=10, what="the listener to close")
        fake.gate.set()
        thread.join(30)
        assert [a.status_code for a in answers] == [200]
        assert answers[0].json()["choices"][0]["message"]["content"] == "hello from a"
        assert srv.proc.wait(30) in (0, -signal.SIGTERM)
    finally:
        fake.gate.set()
        srv.close()


def _refused(srv: Server) -> bool:
    try:
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
    except OSError:
        return True
    return False


def _exchange(keep_alive: bool) -> Exchange:
    exchange = Exchange.__new__(Exchange)
    state = SimpleNamespace(default_headers=[(b"server", b"modelplane")])
    exchange.protocol = SimpleNamespace(server_state=state)  # type: ignore[assignment]
    exchange.keep_alive = keep_alive
    return exchange


@pytest.mark.parametrize("keep_alive", [True, False])
def test_answer_heads_are_written_whole_and_refuse_line_breaks(keep_alive: bool) -> None:
    exchange = _exchange(keep_alive)
    head = exchange._head(200, [(b"content-type", b"application/json"), (b"x-a", b"1")])
    close = b"" if keep_alive else b"connection: close\r\n"
    assert head == (
        b"HTTP/1.1 200 OK\r\nserver: modelplane\r\ncontent-type: application/json\r\n"
        b"x-a: 1\r\n" + close + b"\r\n"
    )
    # A value that would smuggle in a header of its own is refused, whichever break.
    for smuggled in (b"1\r\nset-cookie: x", b"1\nset-cookie: x", b"1\rset-cookie: x"):
        with pytest.raises(ValueError, match="'x-b' has a line break"):
            exchange._head(200, [(b"x-a", b"1"), (b"x-b", smuggled)])
