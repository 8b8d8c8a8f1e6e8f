"""Pure ASGI middleware for what every request needs: an id and a body-size bound."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelplane.api.errors import error_response
from modelplane.errors import PayloadTooLarge
from modelplane.telemetry import tracing
from modelplane.telemetry.logging import request_id_var


class RequestIdMiddleware:
    """Accepts ``x-request-id`` (or ``x-correlation-id``), else mints one; echoes it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        token = request_id_var.set(rid)
        raw = rid.encode("latin-1")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", raw)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


_ID_HEADERS = (b"x-request-id", b"x-correlation-id")


def request_id(scope: Scope) -> str:
    """The request's id, as ``given_request_id`` picks it, else a new one; kept in
    ``scope["state"]``."""
    given: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in _ID_HEADERS:
            given.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    rid = scope.setdefault("state", {})["request_id"] = mint_request_id(given_request_id(given))
    return rid


def given_request_id(headers: Mapping[str, str]) -> str | None:
    """The caller's id for a request (headers by lower-case name, the first of each):
    its ``x-request-id``, or without one its ``x-correlation-id``."""
    return headers.get("x-request-id") or headers.get("x-correlation-id")


def mint_request_id(given: str | None) -> str:
    """The caller's request id (at most 128 characters), else a new one."""
    return given[:128] if given else os.urandom(16).hex()  # as unique as a uuid4, 5x cheaper


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is larger than the {limit}-byte limit (MODELPLANE_MAX_BODY_BYTES)"
    )


def declares_too_much(headers: Iterable[tuple[bytes, bytes]], limit: int) -> bool:
    """Whether a request's ``content-length`` (in its raw headers) is over ``limit``."""
    for name, value in headers:
        if name == b"content-length":
            return length_over(value.decode("latin-1"), limit)
    return False


def length_over(content_length: str | None, limit: int) -> bool:
    """Whether a ``content-length`` value is over ``limit`` (not a number: no)."""
    return (
        content_length is not None
        and content_length.isascii()
        and content_length.isdigit()
        and int(content_length) > limit
    )


class BodyLimitMiddleware:
    """Refuses bodies over ``limit`` bytes: at once when Content-Length says so,
    otherwise as soon as the streamed body crosses the limit."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if declares_too_much(scope["headers"], self.limit):
            await error_response(too_large(self.limit), scope["path"])(scope, receive, send)
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise too_large(self.limit)
            return message

        await self.app(scope, bounded, send)


class TracingMiddleware:
    """One SERVER span per control-plane call (``/api/...``), named after the route that
    served it (``GET /api/endpoints/{name}``), a child of the caller's ``traceparent``.
    Without tracing it costs a prefix check and an attribute read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/api/"):
            await self.app(scope, receive, send)
            return
        platform = getattr(scope["app"].state, "platform", None)
        traces: tracing.Tracing | None = platform.tracing if platform is not None else None
        tracer = traces.tracer if traces is not None else None
        headers = {}
        if traces is not None and tracer is not None:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if traces is None or tracer is None or not traces.sampled(headers):
            await self.app(scope, receive, send)
            return
        rid = scope.get("state", {}).get("request_id", "")
        span, tokens = tracing.start_request(tracer, headers, rid, scope["path"], scope["method"])
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            tracing.fail(span, exc)
            raise
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or scope["path"]
            span.update_name(f"{scope['method']} {template}")
            span.set_attribute("http.route", template)
            tracing.end_status(span, status)
            span.end()
            tracing.detach(tokens)
