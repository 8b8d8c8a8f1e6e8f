"""``/api/routes``: public model names → weighted targets, fallbacks, policies."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from modelplane.api.deps import AdminDep, CallerDep, PlatformDep
from modelplane.control.routes import route_view

router = APIRouter(prefix="/api/routes", tags=["routes"])


@router.get("")
async def list_(p: PlatformDep, _: CallerDep) -> dict[str, Any]:
    return {"data": [route_view(r) for r in await p.routes.list()]}


@router.get("/{name}")
async def get(name: str, p: PlatformDep, _: CallerDep) -> dict[str, Any]:
    return route_view(await p.routes.get(name))


@router.put("/{name}")
async def put(
    name: str, body: dict[str, Any], p: PlatformDep, _: AdminDep, response: Response
) -> dict[str, Any]:
    route, created = await p.routes.put(name, body, p.reconciler.endpoints)
    response.status_code = 201 if created else 200
    return route_view(route)


@router.delete("/{name}", status_code=204)
async def delete(name: str, p: PlatformDep, _: AdminDep) -> Response:
    await p.routes.delete(name)
    return Response(status_code=204)
