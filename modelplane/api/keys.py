"""``/api/keys``: mint (the secret is shown once, optionally for a user or service
account), list, set rate limits, revoke."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from modelplane.api.deps import PlatformDep, ReadDep, WriteDep
from modelplane.api.schemas import KeyCreate, LimitsPatch
from modelplane.control.keys import caller_of, key_view
from modelplane.errors import InvalidRequest, NotFound
from modelplane.store.records import ApiKey

if TYPE_CHECKING:
    from modelplane.server.platform import Platform

router = APIRouter(prefix="/api/keys", tags=["keys"])


@router.post("", status_code=201)
async def create(body: KeyCreate, p: PlatformDep, who: WriteDep) -> dict[str, Any]:
    team_id = None
    if body.team is not None:
        team_id = p.teams.id_of(body.team)
        if team_id is None:
            raise InvalidRequest(f"no team named '{body.team}'", param="team")
    new = await p.keys.create(
        who,
        body.name,
        body.role,
        body.expires_at,
        team_id=team_id,
        scopes=tuple(body.scopes),
        account=body.account,
    )
    if body.limits:
        await p.governance.limits.set(who, "key", new.key.id, body.limits)
    return {**_view(p, new.key), "key": new.secret}


@router.get("")
async def list_(p: PlatformDep, who: ReadDep) -> dict[str, Any]:
    keys = await p.keys.list(who)
    return {"data": [_view(p, k) for k in keys]}


@router.patch("/{key_id}")
async def patch(key_id: str, body: LimitsPatch, p: PlatformDep, who: WriteDep) -> dict[str, Any]:
    """Set a key's rate limits (admins, and team admins for their team's keys)."""
    await p.governance.limits.set(who, "key", key_id, body.limits)
    key = await p.keys.repo.get(key_id)
    if key is None:
        raise NotFound(f"no API key with id '{key_id}'")
    return _view(p, key)


@router.delete("/{key_id}")
async def revoke(key_id: str, p: PlatformDep, who: WriteDep) -> dict[str, Any]:
    k = await p.keys.revoke(who, key_id)
    return _view(p, k)


@router.post("/{key_id}/rotate")
async def rotate(key_id: str, p: PlatformDep, who: WriteDep) -> dict[str, Any]:
    """A new secret for the key, shown once; the old one stops working."""
    new = await p.keys.rotate(who, key_id)
    return {**_view(p, new.key), "key": new.secret}


def _view(p: Platform, k: ApiKey) -> dict[str, Any]:
    limits = p.governance.limits.view("key", k.id)
    view = key_view(k, p.teams.name_of(k.team_id), p.accounts.name_of(k.account_id))
    # What the key can do now: its own role, lowered to its account's if that is lower.
    effective = caller_of(k, p.accounts.by_id.get(k.account_id) if k.account_id else None)
    return {**view, "effective_role": effective.role, "limits": limits}
