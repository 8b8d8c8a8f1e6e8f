"""``/v1``: the OpenAI-compatible surface. Parse two fields, forward bytes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from modelplane.api.deps import CallerDep, PlatformDep
from modelplane.asgi import until_disconnect
from modelplane.gateway.proxy import peek

router = APIRouter(prefix="/v1")


async def _forward(request: Request, platform: PlatformDep, path: str) -> Response:
    body = await request.body()
    peeked = peek(body)
    rid: str = request.scope["state"]["request_id"]
    _, up = await until_disconnect(
        request.receive, platform.proxy.forward(path, body, peeked, rid, request.headers)
    )
    if up is None:  # the client left: the upstream request was cancelled with it
        return Response(status_code=499)
    if up.stream is not None:
        return StreamingResponse(
            up.stream,
            status_code=up.status,
            media_type=up.content_type,
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
    return Response(up.body, status_code=up.status, media_type=up.content_type)


@router.post("/chat/completions")
async def chat_completions(request: Request, platform: PlatformDep, _: CallerDep) -> Response:
    return await _forward(request, platform, "/v1/chat/completions")


@router.post("/completions")
async def completions(request: Request, platform: PlatformDep, _: CallerDep) -> Response:
    return await _forward(request, platform, "/v1/completions")


@router.get("/models")
async def models(platform: PlatformDep, _: CallerDep) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": ep.name,
                "object": "model",
                "created": int(ep.created_at.timestamp()),
                "owned_by": "modelplane",
            }
            for ep in platform.router.models()
        ],
    }
