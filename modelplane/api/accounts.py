"""``/api/users`` and ``/api/service-accounts``: who keys and JWTs stand for. Admins
manage every account, team admins their team's, members and viewers read their team's.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from modelplane.api.deps import PlatformDep, ReadDep, WriteDep
from modelplane.api.schemas import (
    ServiceAccountCreate,
    ServiceAccountPatch,
    UserCreate,
    UserPatch,
)

users = APIRouter(prefix="/api/users", tags=["users"])
services = APIRouter(prefix="/api/service-accounts", tags=["service accounts"])


@users.post("", status_code=201)
async def create_user(body: UserCreate, p: PlatformDep, who: WriteDep) -> dict[str, Any]:
    a = await p.accounts.create(
        who, "user", body.name, role=body.role, team=body.team, email=body.email
    )
    return p.accounts.view(a)


@users.get("")
async def list_users(p: PlatformDep, who: ReadDep) -> dict[str, Any]:
    return {"data": [p.accounts.view(a) for a in await p.accounts.list(who, "user")]}


@users.get("/{name}")
async def get_user(name: str, p: PlatformDep, who: ReadDep) -> dict[str, Any]:
    return p.accounts.view(await p.accounts.get(who, "user", name))


@users.patch("/{name}")
async def patch_user(name: str, body: UserPatch, p: PlatformDep, who: WriteDep) -> dict[str, Any]:
    """Change a user's ``role``, ``email`` or ``disabled``."""
    return p.accounts.view(await p.accounts.update(who, "user", name, body.changes()))


@users.delete("/{name}", status_code=204)
async def delete_user(name: str, p: PlatformDep, who: WriteDep) -> Response:
    """Delete a user and revoke its keys."""
    await p.accounts.delete(who, "user", name)
    return Response(status_code=204)


@services.post("", status_code=201)
async def create_service(
    body: ServiceAccountCreate, p: PlatformDep, who: WriteDep
) -> dict[str, Any]:
    a = await p.accounts.create(who, "service", body.name, role=body.role, team=body.team)
    return p.accounts.view(a)


@services.get("")
async def list_services(p: PlatformDep, who: ReadDep) -> dict[str, Any]:
    return {"data": [p.accounts.view(a) for a in await p.accounts.list(who, "service")]}


@services.get("/{name}")
async def get_service(name: str, p: PlatformDep, who: ReadDep) -> dict[str, Any]:
    return p.accounts.view(await p.accounts.get(who, "service", name))


@services.patch("/{name}")
async def patch_service(
    name: str, body: ServiceAccountPatch, p: PlatformDep, who: WriteDep
) -> dict[str, Any]:
    """Change a service account's ``role`` or ``disabled``."""
    return p.accounts.view(await p.accounts.update(who, "service", name, body.changes()))


@services.delete("/{name}", status_code=204)
async def delete_service(name: str, p: PlatformDep, who: WriteDep) -> Response:
    """Delete a service account and revoke its keys."""
    await p.accounts.delete(who, "service", name)
    return Response(status_code=204)
