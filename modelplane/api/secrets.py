"""``/api/secrets``: write-only provider credentials (names are listed, values never)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from modelplane.api.deps import AdminDep, PlatformDep
from modelplane.api.schemas import SecretPut

router = APIRouter(prefix="/api/secrets", tags=["secrets"])


@router.get("")
async def list_(p: PlatformDep, _: AdminDep) -> dict[str, Any]:
    return {"data": p.secrets.list()}


@router.put("/{name}", status_code=204)
async def put(name: str, body: SecretPut, p: PlatformDep, who: AdminDep) -> Response:
    created = await p.secrets.put(who, name, body.value.get_secret_value())
    return Response(status_code=201 if created else 204)


@router.delete("/{name}", status_code=204)
async def delete(name: str, p: PlatformDep, who: AdminDep) -> Response:
    await p.secrets.delete(who, name)
    return Response(status_code=204)
