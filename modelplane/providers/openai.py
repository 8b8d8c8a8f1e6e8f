"""Any OpenAI-compatible server: OpenAI, Azure OpenAI, vLLM, SGLang, TGI, llama.cpp's
server, LM Studio, Together… and modelplane's own engine replicas.

Bodies and SSE frames pass through as bytes. The body is re-encoded only when the
upstream knows the model by another name than the client used.

Options: ``api_key_header`` (default ``authorization``, sent as ``Bearer <key>``; Azure
wants ``api-key``), ``query`` (e.g. ``{"api-version": "2024-10-21"}`` for Azure),
``headers`` (extra static headers).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import aiohttp

from modelplane.providers.base import PATHS, Call, Kind, Reply, Target
from modelplane.providers.wire import error_message, error_reply, passed_headers, sse

log = logging.getLogger(__name__)


class OpenAIProvider:
    name: ClassVar[str] = "openai"
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"
    kinds: ClassVar[frozenset[Kind]] = frozenset({"chat", "completions", "embeddings"})

    def _headers(self, target: Target, call: Call) -> dict[str, str]:
        headers = {"content-type": "application/json", "x-request-id": call.request_id}
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
        url = target.base_url.rstrip("/") + PATHS[call.kind].removeprefix("/v1")
        resp: aiohttp.ClientResponse | None = await session.post(
            url, data=body, headers=self._headers(target, call), params=target.options.get("query")
        )
        try:
            assert resp is not None
            ctype = resp.headers.get("content-type", "application/json")
            if resp.status >= 400:
                data = await resp.read()
                message = error_message(data, f"the upstream answered HTTP {resp.status}")
                code = _code(data)
                return error_reply(resp.status, message, code, passed_headers(resp.headers))
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
        headers = self._headers(target, Call("chat", b"", {}, "", False, "models"))
        async with session.get(url, headers=headers, params=target.options.get("query")) as resp:
            if resp.status != 200:
                return []
            data: Any = await resp.json(content_type=None)
        return [m["id"] for m in data.get("data", []) if isinstance(m, dict) and "id" in m]


def _code(body: bytes) -> str | None:
    try:
        obj: Any = json.loads(body)
        code = obj["error"].get("code")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return code if isinstance(code, str) else None


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
