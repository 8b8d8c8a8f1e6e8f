"""The server's ASGI app: ``create_app(settings)``, no work at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from modelplane.api import endpoints, errors, health, keys, routes, secrets, teams, v1
from modelplane.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from modelplane.api.platform import Platform
from modelplane.config import Settings


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        platform = await Platform.open(settings)
        app.state.platform = platform
        try:
            yield
        finally:
            await platform.close()

    app = FastAPI(title="modelplane", version="0.1.0", lifespan=lifespan)
    errors.install(app)
    for r in (
        v1.router,
        endpoints.router,
        routes.router,
        secrets.router,
        teams.router,
        keys.router,
        health.router,
    ):
        app.include_router(r)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    return app


def create_app_from_env() -> FastAPI:
    """For ``uvicorn --factory`` and ``serve --workers``: settings from the environment."""
    return create_app(Settings())
