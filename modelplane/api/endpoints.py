"""``/api/endpoints``: create, list, read, change, delete model endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from modelplane.api.deps import AdminDep, CallerDep, PlatformDep
from modelplane.api.schemas import EndpointCreate, EndpointPatch

router = APIRouter(prefix="/api/endpoints", tags=["endpoints"])


@router.post("", status_code=201)
async def create(body: EndpointCreate, p: PlatformDep, _: AdminDep) -> dict[str, Any]:
    ep = await p.endpoints.create(**body.model_dump())
    return p.endpoints.view(ep)


@router.get("")
async def list_(p: PlatformDep, _: CallerDep) -> dict[str, Any]:
    return {"data": [p.endpoints.view(ep) for ep in await p.endpoints.list()]}


@router.get("/{name}")
async def get(name: str, p: PlatformDep, _: CallerDep) -> dict[str, Any]:
    return p.endpoints.view(await p.endpoints.get(name))


@router.patch("/{name}")
async def patch(name: str, body: EndpointPatch, p: PlatformDep, _: AdminDep) -> dict[str, Any]:
    return p.endpoints.view(await p.endpoints.update(name, body.changes()))


@router.delete("/{name}", status_code=204)
async def delete(name: str, p: PlatformDep, _: AdminDep) -> Response:
    await p.endpoints.delete(name)
    return Response(status_code=204)
