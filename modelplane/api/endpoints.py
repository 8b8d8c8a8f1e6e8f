"""``/api/endpoints``: create, list, read, change, delete model endpoints."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from modelplane.api.deps import AdminDep, PlatformDep, ReadDep, WriteDep
from modelplane.api.schemas import EndpointCreate, EndpointPatch, PullRequest
from modelplane.errors import ModelplaneError

router = APIRouter(prefix="/api/endpoints", tags=["endpoints"])


@router.post("", status_code=201)
async def create(body: EndpointCreate, p: PlatformDep, who: WriteDep) -> dict[str, Any]:
    ep = await p.endpoints.create(who, **body.fields())
    return p.endpoints.view(ep)


@router.get("")
async def list_(p: PlatformDep, who: ReadDep) -> dict[str, Any]:
    return {"data": [p.endpoints.view(ep) for ep in await p.endpoints.list(who)]}


@router.get("/{name}")
async def get(name: str, p: PlatformDep, who: ReadDep) -> dict[str, Any]:
    return p.endpoints.view(await p.endpoints.get(who, name))


@router.patch("/{name}")
async def patch(name: str, body: EndpointPatch, p: PlatformDep, who: WriteDep) -> dict[str, Any]:
    return p.endpoints.view(await p.endpoints.update(who, name, body.changes()))


@router.delete("/{name}", status_code=204)
async def delete(name: str, p: PlatformDep, who: WriteDep) -> Response:
    await p.endpoints.delete(who, name)
    return Response(status_code=204)


@router.get("/{name}/upstream-models")
async def upstream_models(name: str, p: PlatformDep, who: ReadDep) -> dict[str, Any]:
    """The models an external endpoint's provider offers (e.g. Ollama's local models)."""
    await p.endpoints.get(who, name)
    return {"data": await p.proxy.upstream_models(name)}


@router.post("/{name}/pull")
async def pull(name: str, body: PullRequest, p: PlatformDep, _: AdminDep) -> StreamingResponse:
    """Download a model into an external endpoint's provider (Ollama); the progress
    streams back as NDJSON, ending with ``{"status": "success"}`` or an ``error``."""
    progress = await p.proxy.pull(name, body.model)
    # The first answer decides the status code: a model Ollama cannot find is an error
    # response, not a 200 with an error inside.
    first = await anext(progress)

    async def lines() -> AsyncIterator[bytes]:
        yield json.dumps(first).encode() + b"\n"
        try:
            async for item in progress:
                yield json.dumps(item).encode() + b"\n"
        except ModelplaneError as exc:
            yield json.dumps({"error": exc.message}).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")
