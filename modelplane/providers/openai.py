"""Any OpenAI-compatible server: OpenAI, Azure OpenAI, vLLM, SGLang, TGI, llama.cpp's
server, LM Studio, Together… and modelplane's own engine replicas.

Bodies and SSE frames pass through as bytes. The body is re-encoded only when the
upstream knows the model by another name than the client used. Requests go through the
provider's own keep-alive pool (``http1.Http1Pool``), the gateway's hottest path;
``models()`` and ``health()`` go through its aiohttp session.

Options: ``api_key_header`` (default ``authorization``, sent as ``Bearer <key>``; Azure
wants ``api-key``), ``query`` (e.g. ``{"api-version": "2024-10-21"}`` for Azure),
``headers`` (extra static headers).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, ClassVar, TypeVar

import yarl

from modelplane.providers.base import PATHS, Call, Kind, Reply, Target, Timeouts
from modelplane.providers.client import Client, client_timeout
from modelplane.providers.http1 import Http1Pool, Http1Response
from modelplane.providers.wire import (
    envelope,
    error_message,
    error_reply,
    passed_headers,
    probe,
    probe_path,
    sse,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class OpenAIProvider:
    name: ClassVar[str] = "openai"
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"
    kinds: ClassVar[frozenset[Kind]] = frozenset({"chat", "completions", "embeddings"})
    health_path: ClassVar[str | None] = "/models"

    def __init__(self) -> None:
        self._pool: Http1Pool | None = None
        self._client = Client()
        self._prepared: dict[tuple[Any, ...], _Prepared] = {}

    def _headers(self, target: Target, call: Call) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if _is_uuid(call.request_id):
            # Some servers (llama_cpp.server) refuse any other x-request-id with a 400.
            headers["x-request-id"] = call.request_id
        headers.update(call.headers)
        headers.update(target.options.get("headers") or {})
        key = target.credentials.get("api_key")
        if key:
            name = str(target.options.get("api_key_header") or "authorization").lower()
            headers[name] = f"Bearer {key}" if name == "authorization" else key
        return headers

    async def send(self, target: Target, call: Call, *, timeouts: Timeouts) -> Reply:
        body = call.body
        if call.obj.get("model") != call.model:
            body = json.dumps({**call.obj, "model": call.model}).encode()
        prep = self._prepare(target, call.kind)
        headers = [(b"content-type", b"application/json")] if prep.content_type else []
        if "x-request-id" not in prep.names and _is_uuid(call.request_id):
            # Some servers (llama_cpp.server) refuse any other x-request-id with a 400.
            headers.append((b"x-request-id", call.request_id.encode()))
        for name, value in call.headers.items():
            if name.lower() not in prep.names:
                headers.append((name.encode("latin-1"), value.encode()))
        headers += prep.headers
        pool = self._pool
        if pool is None or pool.loop is not asyncio.get_running_loop():
            pool = self._pool = Http1Pool()
        read_s = timeouts.read_s  # the gateway passes None: its deadlines bound the request
        sent = pool.request("POST", prep.url, headers, body, connect_timeout=timeouts.connect_s)
        # Awaited directly without a limit: a wrapping coroutine per await costs the
        # gateway's hottest path a frame each.
        resp: Http1Response | None = await (sent if read_s is None else _within(read_s, sent))
        try:
            assert resp is not None
            ctype = resp.headers.get("content-type", "application/json")
            if resp.status >= 400:
                data = await _within(read_s, resp.read())
                return _error(resp.status, data, passed_headers(resp.headers))
            if call.stream and ctype.startswith("text/event-stream"):
                stream = _relay(resp, call.request_id, read_s)
                resp = None  # the stream owns it now
                return Reply(200, ctype, None, stream)
            data = await (resp.read() if read_s is None else _within(read_s, resp.read()))
            return Reply(resp.status, ctype, data, None)
        finally:
            if resp is not None:
                resp.release()

    async def close(self) -> None:
        """Close the upstream connections; a later request opens new ones."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        await self._client.close()

    def _prepare(self, target: Target, kind: Kind) -> _Prepared:
        """The URL and static headers of one upstream, built once: per-request header and
        URL work is a visible share of the gateway's CPU."""
        opts = target.options
        key = (
            target.base_url,
            kind,
            target.credentials.get("api_key"),
            opts.get("api_key_header"),
            _frozen(opts.get("headers")),
            _frozen(opts.get("query")),
        )
        prep = self._prepared.get(key)
        if prep is None:
            if len(self._prepared) >= 1024:
                self._prepared.clear()
            prep = self._prepared[key] = _Prepared(target, kind)
        return prep

    async def models(self, target: Target, *, timeouts: Timeouts) -> list[str]:
        url = target.base_url.rstrip("/") + "/models"
        headers = self._headers(target, Call("chat", b"", {}, "", False, uuid.uuid4().hex))
        async with self._client.session().get(
            url,
            headers=headers,
            params=target.options.get("query"),
            timeout=client_timeout(timeouts),
        ) as resp:
            if resp.status != 200:
                return []
            data: Any = await resp.json(content_type=None)
        return [m["id"] for m in data.get("data", []) if isinstance(m, dict) and "id" in m]

    async def health(self, target: Target, *, timeouts: Timeouts) -> None:
        path = probe_path(target, self.health_path)
        headers = self._headers(target, Call("chat", b"", {}, "", False, uuid.uuid4().hex))
        url = target.base_url.rstrip("/") + path
        query = target.options.get("query")
        await probe(self._client.session(), url, path, headers, query, timeouts=timeouts)


class _Prepared:
    """What every request to one upstream and kind shares: the URL (with ``query``) and
    the headers from the options and the API key, which win over the request's own."""

    __slots__ = ("content_type", "headers", "names", "url")

    def __init__(self, target: Target, kind: Kind) -> None:
        url = yarl.URL(target.base_url.rstrip("/") + PATHS[kind].removeprefix("/v1"))
        query = target.options.get("query")
        if query:
            url = url.update_query({str(k): str(v) for k, v in query.items()})
        self.url = str(url)  # a str: the pool's parse of it is cached
        static = {str(k).lower(): str(v) for k, v in (target.options.get("headers") or {}).items()}
        key = target.credentials.get("api_key")
        if key:
            name = str(target.options.get("api_key_header") or "authorization").lower()
            static[name] = f"Bearer {key}" if name == "authorization" else key
        self.names = frozenset(static)
        self.content_type = "content-type" not in static
        self.headers = [(k.encode("latin-1"), v.encode()) for k, v in static.items()]


def _frozen(value: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...] | None:
    return tuple(sorted((str(k), str(v)) for k, v in value.items())) if value else None


_UUID = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def _is_uuid(value: str) -> bool:
    """Whether ``value`` is a UUID in one of the forms servers accept (hex, with or
    without dashes); a regular expression, since ``uuid.UUID`` costs several µs."""
    return _UUID.fullmatch(value) is not None


async def _within(limit_s: float | None, step: Awaitable[T]) -> T:
    """``await step``, for at most ``limit_s`` (``None``: no limit, and no timer)."""
    if limit_s is None:
        return await step
    async with asyncio.timeout(limit_s):
        return await step


def _error(status: int, body: bytes, headers: dict[str, str]) -> Reply:
    """An upstream's OpenAI error envelope passes through (``param`` and all), with the
    code normalised where the gateway acts on it; any other error body is wrapped."""
    try:
        obj: Any = json.loads(body)
        err = obj["error"]
        message = err["message"]
    except (ValueError, KeyError, TypeError):
        message = error_message(body, f"the upstream answered HTTP {status}")
        return error_reply(status, message, None, headers)
    normal = envelope(status, str(message), err.get("code"))["error"]
    if normal["code"] != err.get("code") or "type" not in err:
        # Normalised (context length, 429), or not quite OpenAI's shape (Azure's own).
        body = json.dumps({**obj, "error": {**normal, **err, "code": normal["code"]}}).encode()
    return Reply(status, "application/json", body, None, headers)


async def _relay(
    resp: Http1Response, request_id: str, read_s: float | None
) -> AsyncIterator[bytes]:
    try:
        if read_s is None:
            async for chunk in resp.iter_chunks():
                yield chunk
        else:
            chunks = aiter(resp.iter_chunks())
            while True:
                try:
                    chunk = await _within(read_s, anext(chunks))
                except StopAsyncIteration:
                    break
                yield chunk
    except (TimeoutError, OSError) as exc:
        log.warning("request %s: upstream stream broke (%s)", request_id, type(exc).__name__)
        yield sse(
            {
                "error": {
                    "message": "the upstream failed in the middle of the answer; retry the request",
                    "type": "upstream_error",
                    "param": None,
                    "code": "upstream_error",
                }
            }
        )
    finally:
        resp.release()
