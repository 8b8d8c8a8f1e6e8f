"""Usage reports: requests, errors, tokens, cost and latency, added up per team, key,
endpoint, route or day. Admins see every team's; everyone else their own team's."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from modelplane.control.subjects import Subject, Subjects
from modelplane.errors import InvalidRequest, NotFound, PermissionDenied
from modelplane.identity import Caller
from modelplane.store.db import Database
from modelplane.store.governance import GROUPS, Totals, UsageRepo

METRICS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "avg_latency_ms",
)
_LABELS: dict[str, tuple[str, ...]] = {
    "team": ("team", "team_id"),
    "key": ("key", "key_id"),
    "endpoint": ("endpoint",),
    "route": ("route",),
    "day": ("day",),
}


def _metrics(t: Totals) -> dict[str, Any]:
    return {
        "requests": t.requests,
        "errors": t.errors,
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.completion_tokens,
        "total_tokens": t.prompt_tokens + t.completion_tokens,
        "cost_usd": round(t.cost_usd, 9),
        "avg_latency_ms": round(t.avg_latency_ms, 1),
    }


class UsageService:
    def __init__(self, db: Database, subjects: Subjects) -> None:
        self.repo = UsageRepo(db)
        self.subjects = subjects

    async def report(
        self,
        caller: Caller,
        *,
        group_by: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        team: str | None = None,
    ) -> dict[str, Any]:
        if not caller.allows("read"):
            raise PermissionDenied("reading usage needs the 'read' scope")
        if group_by is not None and group_by not in GROUPS:
            raise InvalidRequest(f"group_by must be one of {', '.join(GROUPS)}", param="group_by")
        team_ids = self._teams(caller, team)
        rows = []
        if group_by is not None:
            rows = await self.repo.totals(group_by, since=since, until=until, team_ids=team_ids)
        overall = await self.repo.totals(None, since=since, until=until, team_ids=team_ids)
        names = await self.subjects.all() if group_by in ("team", "key") else {}
        return {
            "group_by": group_by,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "team": team,
            "data": [{**self._group(group_by, t.group, names), **_metrics(t)} for t in rows],
            "total": _metrics(overall[0]) if overall else _metrics(Totals(None, 0, 0, 0, 0, 0, 0)),
        }

    def _teams(self, caller: Caller, team: str | None) -> list[str | None] | None:
        """The teams whose usage ``caller`` asked for and may read (None: all)."""
        if team is not None:
            team_id = self.subjects.teams.id_of(team)
            if team_id is None or not (caller.is_admin or team_id == caller.team_id):
                raise NotFound(f"no team named '{team}'")
            return [team_id]
        if caller.is_admin:
            return None
        return [caller.team_id] if caller.team_id else []

    def _group(
        self, group_by: str | None, value: str | None, names: dict[tuple[str, str], Subject]
    ) -> dict[str, Any]:
        if group_by in ("team", "key"):
            who = names.get((group_by, value)) if value else None
            return {group_by: who.name if who else None, f"{group_by}_id": value}
        return {group_by: value} if group_by else {}


def to_csv(report: dict[str, Any]) -> str:
    """A report as CSV: one row per group, with a header row."""
    group_by = report["group_by"]
    columns = [*(_LABELS[group_by] if group_by else ()), *METRICS]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    rows = report["data"] if group_by else [report["total"]]
    writer.writerows(rows)
    return out.getvalue()
