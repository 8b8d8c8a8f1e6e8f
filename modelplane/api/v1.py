"""``/v1``: the OpenAI-compatible surface. Parse two fields, forward bytes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from modelplane.api.deps import InferenceDep, PlatformDep
from modelplane.asgi import until_disconnect
from modelplane.gateway.proxy import Inbound, peek
from modelplane.identity import Caller
from modelplane.providers.base import Kind

router = APIRouter(prefix="/v1")


async def _forward(request: Request, platform: PlatformDep, caller: Caller, kind: Kind) -> Response:
    body = await request.body()
    inbound = Inbound(
        kind, body, peek(body), request.scope["state"]["request_id"], request.headers, caller
    )
    _, reply = await until_disconnect(request.receive, platform.proxy.forward(inbound))
    if reply is None:  # the client left: the upstream request was cancelled with it
        return Response(status_code=499)
    if reply.stream is not None:
        return StreamingResponse(
            reply.stream,
            status_code=reply.status,
            media_type=reply.content_type,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no", **reply.headers},
        )
    return Response(
        reply.body, status_code=reply.status, media_type=reply.content_type, headers=reply.headers
    )


@router.post("/chat/completions")
async def chat_completions(
    request: Request, platform: PlatformDep, caller: InferenceDep
) -> Response:
    return await _forward(request, platform, caller, "chat")


@router.post("/completions")
async def completions(request: Request, platform: PlatformDep, caller: InferenceDep) -> Response:
    return await _forward(request, platform, caller, "completions")


@router.post("/embeddings")
async def embeddings(request: Request, platform: PlatformDep, caller: InferenceDep) -> Response:
    return await _forward(request, platform, caller, "embeddings")


@router.get("/models")
async def models(platform: PlatformDep, caller: InferenceDep) -> dict[str, Any]:
    created = {ep.name: int(ep.created_at.timestamp()) for ep in platform.router.models()}
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": created.get(name, 0),
                "owned_by": "modelplane",
            }
            for name in platform.proxy.routes.names(caller.can_read)
        ],
    }
