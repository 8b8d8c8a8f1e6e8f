"""``/api/keys``: mint (the secret is shown once), list, revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from modelplane.api.deps import AdminDep, PlatformDep
from modelplane.api.schemas import KeyCreate
from modelplane.control.keys import key_view

router = APIRouter(prefix="/api/keys", tags=["keys"])


@router.post("", status_code=201)
async def create(body: KeyCreate, p: PlatformDep, _: AdminDep) -> dict[str, Any]:
    new = await p.keys.create(body.name, body.role, body.expires_at)
    return {**key_view(new.key), "key": new.secret}


@router.get("")
async def list_(p: PlatformDep, _: AdminDep) -> dict[str, Any]:
    return {"data": [key_view(k) for k in await p.keys.list()]}


@router.delete("/{key_id}")
async def revoke(key_id: str, p: PlatformDep, _: AdminDep) -> dict[str, Any]:
    return key_view(await p.keys.revoke(key_id))
