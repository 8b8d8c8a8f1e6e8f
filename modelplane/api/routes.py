"""``/api/routes``: public model names → weighted targets, fallbacks, policies."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from modelplane.api.deps import PlatformDep, ReadDep, WriteDep
from modelplane.control.routes import route_view

router = APIRouter(prefix="/api/routes", tags=["routes"])


@router.get("")
async def list_(p: PlatformDep, who: ReadDep) -> dict[str, Any]:
    return {"data": [route_view(r, p.teams) for r in await p.routes.list(who)]}


@router.get("/{name}")
async def get(name: str, p: PlatformDep, who: ReadDep) -> dict[str, Any]:
    return route_view(await p.routes.get(who, name), p.teams)


@router.put("/{name}")
async def put(
    name: str, body: dict[str, Any], p: PlatformDep, who: WriteDep, response: Response
) -> dict[str, Any]:
    route, created = await p.routes.put(who, name, body, p.reconciler.endpoints)
    response.status_code = 201 if created else 200
    return route_view(route, p.teams)


@router.delete("/{name}", status_code=204)
async def delete(name: str, p: PlatformDep, who: WriteDep) -> Response:
    await p.routes.delete(who, name)
    return Response(status_code=204)
