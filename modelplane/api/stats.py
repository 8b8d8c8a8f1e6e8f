"""``GET /api/stats``: live request statistics of this server process, for the dashboard."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query

from modelplane.api.deps import PlatformDep, ReadDep
from modelplane.identity import Caller

if TYPE_CHECKING:
    from modelplane.server.platform import Platform

router = APIRouter(prefix="/api/stats", tags=["stats"])


def _visible(p: Platform, who: Caller) -> Callable[[str], bool] | None:
    """Non-admins see the models and endpoints they may use, nothing of other teams'."""
    return None if who.is_admin else set(p.proxy.routes.names(who.can_read)).__contains__


@router.get("")
async def stats(
    p: PlatformDep,
    who: ReadDep,
    window: int = Query(300, ge=1, le=600),
    step: int | None = Query(None, ge=1, le=600),
    endpoint: str | None = None,
) -> dict[str, Any]:
    """Per-``step`` series over the last ``window`` seconds (default step: 1 s up to a
    two-minute window, else 5 s) of requests per second, error rate, p50/p95 latency,
    p50 time to first token and tokens per second, overall and for ``endpoint``; totals
    per endpoint; and the recent errors."""
    step = step or (1 if window <= 120 else 5)
    return p.stats.snapshot(window, step, endpoint, _visible(p, who))


@router.get("/errors")
async def errors(p: PlatformDep, who: ReadDep) -> dict[str, Any]:
    """The last errors answered by this server process, newest first."""
    return {"data": p.stats.recent_errors(_visible(p, who))}
