"""A fast mock OpenAI upstream for ``bench/gateway.py``: fixed answers, no model.

``POST /v1/chat/completions`` answers a fixed ``chat.completion``; with ``"stream": true``
in the body, a fixed SSE stream (8 content chunks, a finish chunk, ``data: [DONE]``) in
chunked transfer encoding, one write per frame. ``GET /v1/models`` lists ``mock``.
``POST /v1/traces`` takes OTLP/HTTP spans and drops them (the tracing side of
``bench/gateway.py --observability``).

A raw asyncio protocol with hand-written HTTP/1.1 keep-alive (on uvloop where installed),
so that the baseline costs as little CPU as possible: every microsecond it spends is
counted on both sides of the benchmark and hides what the gateway adds.

Run: ``.venv/bin/python bench/mock_upstream.py --port 9000 [--cpu 1]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from typing import cast

MODEL = "mock"
CHUNKS = 8


def _response(status: str, ctype: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n\r\n"
    return head.encode() + body


ANSWER = json.dumps(
    {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the mock upstream!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": CHUNKS, "total_tokens": 17},
    }
).encode()
"""The non-streaming answer's body."""
COMPLETION = _response("200 OK", "application/json", ANSWER)
MODELS = _response(
    "200 OK", "application/json", json.dumps({"object": "list", "data": [{"id": MODEL}]}).encode()
)
NOT_FOUND = _response("404 Not Found", "application/json", b'{"error": "not found"}')
# An empty ExportTraceServiceResponse: every span accepted.
TRACES = _response("200 OK", "application/x-protobuf", b"")


def _frames() -> list[bytes]:
    def chunk(delta: dict[str, str], finish: str | None) -> bytes:
        obj = {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    events = [chunk({"role": "assistant", "content": "Hello"}, None)]
    events += [chunk({"content": f" token{i}"}, None) for i in range(1, CHUNKS)]
    events += [chunk({}, "stop"), b"data: [DONE]\n\n"]
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    body = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
    return [head + body[0], *body[1:], b"0\r\n\r\n"]


STREAM = _frames()


class Upstream(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and Content-Length bodies (what aiohttp and wrk send)."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end].lower()
            length = 0
            if (at := head.find(b"\r\ncontent-length:")) >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else None])
            if len(self.buf) < end + 4 + length:
                return  # the rest of the body is still on its way
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self.answer(head, body)

    def answer(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        if head.startswith(b"post /v1/chat/completions "):
            if b'"stream": true' in body or b'"stream":true' in body:
                for frame in STREAM:
                    self.transport.write(frame)
            else:
                self.transport.write(COMPLETION)
        elif head.startswith(b"get /v1/models "):
            self.transport.write(MODELS)
        elif head.startswith(b"post /v1/traces "):
            self.transport.write(TRACES)
        else:
            self.transport.write(NOT_FOUND)
        if b"\r\nconnection: close" in head:
            self.transport.close()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=1024)
    print(f"mock upstream on http://127.0.0.1:{port}/v1", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--cpu", type=int, help="pin this process to one core")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:
            asyncio.run(serve(args.port))
        else:
            uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
