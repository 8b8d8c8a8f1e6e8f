"""The server's ASGI app: ``create_app(settings)``, no work at import time."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from modelplane.api import (
    accounts,
    audit,
    budgets,
    endpoints,
    errors,
    health,
    keys,
    metrics,
    routes,
    secrets,
    stats,
    teams,
    usage,
    v1,
)
from modelplane.api.openapi import with_openai_routes
from modelplane.config import Settings
from modelplane.server.fastpath import KINDS, FastPath
from modelplane.server.middleware import BodyLimitMiddleware, RequestIdMiddleware, TracingMiddleware
from modelplane.server.platform import Platform
from modelplane.ui import STATIC

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


class ModelplaneApp(FastAPI):
    """FastAPI, except that the OpenAI POST routes skip its middleware stack and router
    for ``FastPath``, which keeps the same request ids and body limit (bench/README.md),
    and its OpenAPI document has them added (``api/openapi.py``)."""

    def __init__(self, *, fast_path: FastPath, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast_path = fast_path
        """Also called without ASGI by ``modelplane serve``'s protocol (``server/protocol.py``)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in KINDS:
            await self.fast_path(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        if not self.openapi_schema:
            self.openapi_schema = with_openai_routes(super().openapi())
        return self.openapi_schema


def create_app(settings: Settings, *, tracer_provider: TracerProvider | None = None) -> FastAPI:
    """The server's app. ``tracer_provider``: an OpenTelemetry provider of the embedding
    program's to trace into, instead of the one ``settings.otel_endpoint`` configures."""

    fast = FastPath(settings.max_body_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        platform = await Platform.open(settings, tracer_provider)
        app.state.platform = platform
        fast.platform = platform
        # Everything allocated so far lives as long as the process: keep it out of the
        # garbage collector's full passes, which otherwise stall every in-flight
        # request for 100+ ms every few seconds under load (bench/README.md).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await platform.close()

    app = ModelplaneApp(
        title="modelplane",
        version="0.1.0",
        lifespan=lifespan,
        fast_path=fast,
    )
    errors.install(app)
    for r in (
        v1.router,
        endpoints.router,
        routes.router,
        secrets.router,
        teams.router,
        accounts.users,
        accounts.services,
        keys.router,
        budgets.router,
        usage.router,
        audit.router,
        stats.router,
        health.router,
        metrics.router,
    ):
        app.include_router(r)
    app.mount("/ui", StaticFiles(directory=STATIC, html=True), name="ui")
    app.add_middleware(TracingMiddleware)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app


def create_app_from_env() -> FastAPI:
    """For ``uvicorn --factory`` and ``serve --workers``: settings from the environment."""
    return create_app(Settings())
