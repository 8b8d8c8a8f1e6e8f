"""Any OpenAI-compatible server: OpenAI, Azure OpenAI, vLLM, SGLang, TGI, llama.cpp's
server, LM Studio, Together… and modelplane's own engine replicas.

Bodies and SSE frames pass through as bytes. The body is re-encoded only when the
upstream knows the model by another name than the client used.

Options: ``api_key_header`` (default ``authorization``, sent as ``Bearer <key>``; Azure
wants ``api-key``), ``query`` (e.g. ``{"api-version": "2024-10-21"}`` for Azure),
``headers`` (extra static headers).
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import aiohttp
import yarl

from modelplane.providers.base import PATHS, Call, Kind, Reply, Target
from modelplane.providers.wire import envelope, error_message, error_reply, passed_headers, sse

log = logging.getLogger(__name__)


class OpenAIProvider:
    name: ClassVar[str] = "openai"
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"
    kinds: ClassVar[frozenset[Kind]] = frozenset({"chat", "completions", "embeddings"})

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

    async def send(self, session: aiohttp.ClientSession, target: Target, call: Call) -> Reply:
        body = call.body
        if call.obj.get("model") != call.model:
            body = json.dumps({**call.obj, "model": call.model}).encode()
        url = _url(target.base_url, call.kind)
        resp: aiohttp.ClientResponse | None = await session.post(
            url, data=body, headers=self._headers(target, call), params=target.options.get("query")
        )
        try:
            assert resp is not None
            ctype = resp.headers.get("content-type", "application/json")
            if resp.status >= 400:
                return _error(resp.status, await resp.read(), passed_headers(resp.headers))
            if call.stream and ctype.startswith("text/event-stream"):
                stream = _relay(resp, call.request_id)
                resp = None  # the stream owns it now
                return Reply(200, ctype, None, stream)
            return Reply(resp.status, ctype, await resp.read(), None)
        finally:
            if resp is not None:
                resp.release()

    async def models(self, session: aiohttp.ClientSession, target: Target) -> list[str]:
        url = target.base_url.rstrip("/") + "/models"
        headers = self._headers(target, Call("chat", b"", {}, "", False, uuid.uuid4().hex))
        async with session.get(url, headers=headers, params=target.options.get("query")) as resp:
            if resp.status != 200:
                return []
            data: Any = await resp.json(content_type=None)
        return [m["id"] for m in data.get("data", []) if isinstance(m, dict) and "id" in m]


@functools.lru_cache(maxsize=1024)
def _url(base_url: str, kind: Kind) -> yarl.URL:
    """Parsed once per upstream and kind: URL parsing is a visible share of the gateway's
    per-request CPU."""
    return yarl.URL(base_url.rstrip("/") + PATHS[kind].removeprefix("/v1"))


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


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


async def _relay(resp: aiohttp.ClientResponse, request_id: str) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.content.iter_any():
            yield chunk
    except (TimeoutError, aiohttp.ClientError) as exc:
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
