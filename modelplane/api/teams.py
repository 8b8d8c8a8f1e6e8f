"""``/api/teams``: the tenants. Admins manage them (and set their rate limits); others
see their own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Response

from modelplane.api.deps import AdminDep, PlatformDep, ReadDep, WriteDep
from modelplane.api.schemas import LimitsPatch, TeamCreate
from modelplane.store.records import Team

if TYPE_CHECKING:
    from modelplane.server.platform import Platform

router = APIRouter(prefix="/api/teams", tags=["teams"])


@router.post("", status_code=201)
async def create(body: TeamCreate, p: PlatformDep, who: AdminDep) -> dict[str, Any]:
    return _view(p, await p.teams.create(who, body.name))


@router.get("")
async def list_(p: PlatformDep, who: ReadDep) -> dict[str, Any]:
    return {"data": [_view(p, t) for t in p.teams.list(who)]}


@router.patch("/{name}")
async def patch(name: str, body: LimitsPatch, p: PlatformDep, who: WriteDep) -> dict[str, Any]:
    """Set a team's rate limits (admins only: they bound the whole team)."""
    await p.governance.limits.set(who, "team", name, body.limits)
    return _view(p, p.teams.by_name[name])


@router.delete("/{name}", status_code=204)
async def delete(name: str, p: PlatformDep, who: AdminDep) -> Response:
    await p.teams.delete(who, name)
    return Response(status_code=204)


def _view(p: Platform, t: Team) -> dict[str, Any]:
    return {**p.teams.view(t), "limits": p.governance.limits.view("team", t.id)}
