"""``/api/teams``: the tenants. Admins manage them; others see their own."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from modelplane.api.deps import AdminDep, PlatformDep, ReadDep
from modelplane.api.schemas import TeamCreate

router = APIRouter(prefix="/api/teams", tags=["teams"])


@router.post("", status_code=201)
async def create(body: TeamCreate, p: PlatformDep, who: AdminDep) -> dict[str, Any]:
    return p.teams.view(await p.teams.create(who, body.name))


@router.get("")
async def list_(p: PlatformDep, who: ReadDep) -> dict[str, Any]:
    return {"data": [p.teams.view(t) for t in p.teams.list(who)]}


@router.delete("/{name}", status_code=204)
async def delete(name: str, p: PlatformDep, who: AdminDep) -> Response:
    await p.teams.delete(who, name)
    return Response(status_code=204)
