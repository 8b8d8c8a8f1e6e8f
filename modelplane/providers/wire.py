"""Pieces every provider needs to speak OpenAI back to the gateway."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import aiohttp
import yarl

from modelplane.errors import UpstreamError
from modelplane.providers.base import Reply, Target, Timeouts
from modelplane.providers.client import client_timeout

DONE = b"data: [DONE]\n\n"
SSE = "text/event-stream"

_CONTEXT = re.compile(
    r"context[ _-]?(length|window|size)|maximum context|too many tokens|prompt is too long"
    r"|exceeds? the (model'?s )?(maximum|context)|input is too long",
    re.IGNORECASE,
)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def sse(obj: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def is_context_length(message: str) -> bool:
    """Whether an upstream's error message says the prompt does not fit the model."""
    return bool(_CONTEXT.search(message))


def envelope(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """An OpenAI error envelope for an upstream's error, normalising the two codes the
    gateway acts on (``context_length_exceeded``, ``rate_limit_exceeded``)."""
    if status == 400 and is_context_length(message):
        code = "context_length_exceeded"
    elif status == 429:
        code = code or "rate_limit_exceeded"
    kind = _TYPES.get(status, "upstream_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def error_reply(
    status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None
) -> Reply:
    body = json.dumps(envelope(status, message, code)).encode()
    return Reply(status, "application/json", body, None, dict(headers or {}))


def error_message(body: bytes, fallback: str) -> str:
    """The human message inside an upstream error body, whatever its shape."""
    try:
        obj: Any = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or fallback
    for path in (("error", "message"), ("message",), ("error",), ("detail",), ("Message",)):
        cur: Any = obj
        for part in path:
            cur = cur.get(part) if isinstance(cur, dict) else None
        if isinstance(cur, str) and cur:
            return cur[:500]
    return fallback


PASS_HEADERS = ("retry-after", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests")


def passed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {h: headers[h] for h in PASS_HEADERS if h in headers}


def error_event(status: int, message: str, code: str | None = None) -> bytes:
    """The SSE event that ends a stream which failed after it started."""
    return sse(envelope(status, message, code or ("upstream_error" if status >= 500 else None)))


def probe_path(target: Target, default: str | None) -> str:
    """The path a health check GETs: ``options.health_check.path``, else ``default``
    (endpoint validation refuses a check with neither)."""
    path = (target.options.get("health_check") or {}).get("path") or default
    if not path:
        raise UpstreamError("the health check has no path to GET (options.health_check.path)")
    return str(path)


async def probe(
    session: aiohttp.ClientSession,
    url: str | yarl.URL,
    path: str,
    headers: Mapping[str, str],
    params: Mapping[str, str] | None = None,
    *,
    timeouts: Timeouts,
) -> None:
    """GET ``url`` for a health check: 2xx passes, anything else raises ``UpstreamError``
    naming ``path`` and the status. Neither the URL (it may carry credentials) nor the
    body (an upstream may echo part of a wrong key) goes into the message. Redirects are
    not followed, so credentials never travel to another host."""
    async with session.get(
        url,
        headers=headers,
        params=params,
        allow_redirects=False,
        timeout=client_timeout(timeouts),
    ) as resp:
        if not 200 <= resp.status < 300:
            raise UpstreamError(f"GET {path.split('?')[0]} answered HTTP {resp.status}")
