"""``GET /api/usage``: requests, errors, tokens, cost and latency, added up per
``group_by`` (team, key, endpoint, route or day), as JSON or CSV (``format=csv``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Response

from modelplane.api.deps import PlatformDep, ReadDep
from modelplane.control.usage import to_csv

router = APIRouter(prefix="/api/usage", tags=["usage"])


@router.get("", response_model=None)
async def usage(
    p: PlatformDep,
    who: ReadDep,
    group_by: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    team: str | None = None,
    format: Literal["json", "csv"] = "json",
) -> dict[str, Any] | Response:
    """``since`` (inclusive) and ``until`` (exclusive) are ISO 8601 dates or times, UTC
    unless they say otherwise; ``team`` narrows an admin's report to one team."""
    report = await p.governance.usage.report(
        who, group_by=group_by, since=since, until=until, team=team
    )
    if format == "csv":
        return Response(
            to_csv(report),
            media_type="text/csv",
            headers={"content-disposition": 'attachment; filename="usage.csv"'},
        )
    return report
