"""``/api/keys``: mint (the secret is shown once), list, revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from modelplane.api.deps import PlatformDep, ReadDep, WriteDep
from modelplane.api.schemas import KeyCreate
from modelplane.control.keys import key_view
from modelplane.errors import InvalidRequest

router = APIRouter(prefix="/api/keys", tags=["keys"])


@router.post("", status_code=201)
async def create(body: KeyCreate, p: PlatformDep, who: WriteDep) -> dict[str, Any]:
    team_id = None
    if body.team is not None:
        team_id = p.teams.id_of(body.team)
        if team_id is None:
            raise InvalidRequest(f"no team named '{body.team}'", param="team")
    new = await p.keys.create(
        who, body.name, body.role, body.expires_at, team_id=team_id, scopes=tuple(body.scopes)
    )
    return {**key_view(new.key, p.teams.name_of(new.key.team_id)), "key": new.secret}


@router.get("")
async def list_(p: PlatformDep, who: ReadDep) -> dict[str, Any]:
    keys = await p.keys.list(who)
    return {"data": [key_view(k, p.teams.name_of(k.team_id)) for k in keys]}


@router.delete("/{key_id}")
async def revoke(key_id: str, p: PlatformDep, who: WriteDep) -> dict[str, Any]:
    k = await p.keys.revoke(who, key_id)
    return key_view(k, p.teams.name_of(k.team_id))
