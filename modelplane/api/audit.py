"""``/api/audit``: the control-plane changes, newest first, filtered and paged."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter

from modelplane.api.deps import PlatformDep, ReadDep
from modelplane.control.audit import event_view

router = APIRouter(prefix="/api/audit", tags=["audit"])


@router.get("")
async def list_(
    p: PlatformDep,
    who: ReadDep,
    actor: str | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource_name: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: int | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """``actor`` and ``action`` may end in ``*`` for a prefix (``user:alice*``,
    ``endpoint.*``); ``since`` is inclusive, ``until`` exclusive; pass ``next_cursor``
    back as ``cursor`` for the next page."""
    events, next_cursor = await p.audit.list(
        who,
        actor=actor,
        action=action,
        resource_type=resource_type,
        resource_name=resource_name,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
    return {"data": [event_view(e, p.teams.name_of) for e in events], "next_cursor": next_cursor}
