"""The opt-in response cache: an identical request to the same route gets the stored
answer instead of a new generation.

Requests match exactly on their normalised body (see :meth:`ResponseCache.key`).
Streams and plain answers are cached apart (``stream`` is part of the key): a stream
is stored as the SSE bytes the upstream sent and replayed frame by frame, a plain
answer as its JSON body. Deriving one form from the other would mean re-assembling
deltas (tool calls, logprobs, ``n`` choices, usage) into a JSON body or cutting one
into chunks: JSON work on the hot path, and answers that differ from what the model
server would have sent.

Only complete, successful answers are stored: the caller passes 200 answers only, and
a body with an ``"error"`` member, a stream that ends without ``data: [DONE]``, breaks,
or is abandoned by its client, is never stored. The cache fails open: when the
coordination backend is down, a lookup is a miss and a store is skipped.

Entries are a fixed header (magic, version, flags, content-type length), the content
type and the body: no pickle, nothing executable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from modelplane.coord import Cache, CoordError

log = logging.getLogger(__name__)

IGNORED_FIELDS = frozenset({"model", "user"})
"""Request fields that do not change the answer: the route already names the model,
and ``user`` only tags the request for the provider. ``stream_options`` stays in the
key: ``include_usage`` adds a usage chunk to the stream."""

_HEADER = struct.Struct(">4sBBH")
_MAGIC = b"MPRC"
_VERSION = 1
_MAX_CTYPE = 1024
_STREAM = 0x01

_ERROR_MEMBER = re.compile(rb'"error"\s*:\s*(?!null\b)')
"""An ``"error"`` object member that is not null. Inside a JSON string the quotes would be escaped
(``\\"error\\"``), so generated text that mentions errors does not match."""
_DONE_AT_END = re.compile(rb"data: ?\[DONE\]\s*\Z")
_FRAME = re.compile(rb".*?(?:\r\n\r\n|\n\n|\r\r)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Hit:
    """A stored answer."""

    content_type: str
    body: bytes
    stream: bool
    status: int = 200


def is_event_stream(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


def cacheable(body: bytes, stream: bool) -> bool:
    """Whether a 200 answer is complete and error-free, so worth storing."""
    if not body or _ERROR_MEMBER.search(body):
        return False
    return not stream or _DONE_AT_END.search(body) is not None


class ResponseCache:
    def __init__(self, backend: Cache, *, max_entry_bytes: int = 1 << 20) -> None:
        self.backend = backend
        self.max_entry_bytes = max_entry_bytes

    def key(self, route: str, kind: str, body: Mapping[str, Any]) -> str:
        """The cache key of a request: a SHA-256 over the route, the kind of request
        (``chat``, ``completions``, ``embeddings``…) and the canonical JSON (sorted keys,
        no whitespace) of the body without :data:`IGNORED_FIELDS`. Key order and the
        ``user`` tag do not matter; every other field, ``stream`` included, does."""
        kept = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
        canonical = json.dumps(kept, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256()
        for part in (route, kind, canonical):
            digest.update(part.encode())
            digest.update(b"\0")
        return f"resp:v{_VERSION}:{digest.hexdigest()}"

    async def get(self, key: str) -> Hit | None:
        try:
            entry = await self.backend.get(key)
        except CoordError as exc:
            log.warning("response cache unavailable, serving a miss: %s", exc.message)
            return None
        return None if entry is None else _decode(entry)

    def replay(self, hit: Hit) -> AsyncGenerator[bytes, None]:
        """The stored answer as a body iterator: a stream frame by frame (so the client
        sees a real stream), a plain answer in one piece."""
        return _frames(hit.body) if hit.stream else _once(hit.body)

    async def put(self, key: str, content_type: str, body: bytes, ttl_s: float) -> None:
        """Store a 200 answer for ``ttl_s`` seconds, unless it is an error, an
        incomplete stream or larger than ``max_entry_bytes``."""
        stream = is_event_stream(content_type)
        if ttl_s <= 0 or len(body) > self.max_entry_bytes or len(content_type) > _MAX_CTYPE:
            return
        if not cacheable(body, stream):
            return
        try:
            await self.backend.set(key, _encode(content_type, body, stream), ttl_s)
        except CoordError as exc:
            log.warning("response cache unavailable, answer not stored: %s", exc.message)

    def tee(
        self, key: str, stream: AsyncIterator[bytes], content_type: str, ttl_s: float
    ) -> AsyncGenerator[bytes, None]:
        """Pass a 200 upstream answer through unchanged and store it once it has ended
        normally (see :meth:`put`). Closing the returned iterator early (the client
        went away) closes ``stream`` and stores nothing; past ``max_entry_bytes`` the
        answer is no longer buffered."""
        return self._tee(key, stream, content_type, ttl_s)

    async def _tee(
        self, key: str, stream: AsyncIterator[bytes], content_type: str, ttl_s: float
    ) -> AsyncGenerator[bytes, None]:
        buffer: bytearray | None = bytearray()
        try:
            async for chunk in stream:
                if buffer is not None:
                    if len(buffer) + len(chunk) > self.max_entry_bytes:
                        buffer = None
                    else:
                        buffer += chunk
                yield chunk
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        if buffer is not None:
            await self.put(key, content_type, bytes(buffer), ttl_s)


def _encode(content_type: str, body: bytes, stream: bool) -> bytes:
    ctype = content_type.encode("latin-1", "replace")
    return _HEADER.pack(_MAGIC, _VERSION, _STREAM if stream else 0, len(ctype)) + ctype + body


def _decode(entry: bytes) -> Hit | None:
    if len(entry) < _HEADER.size:
        return None
    magic, version, flags, ctype_len = _HEADER.unpack_from(entry)
    if magic != _MAGIC or version != _VERSION:
        return None
    start = _HEADER.size + ctype_len
    content_type = entry[_HEADER.size : start].decode("latin-1")
    return Hit(content_type, entry[start:], bool(flags & _STREAM))


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


async def _frames(body: bytes) -> AsyncGenerator[bytes, None]:
    end = 0
    for match in _FRAME.finditer(body):
        end = match.end()
        yield match.group()
    if end < len(body):
        yield body[end:]
