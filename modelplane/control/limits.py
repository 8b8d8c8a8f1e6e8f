"""Rate limits of keys and teams (an endpoint's are in its ``options.limits``), and the
snapshot of them the gateway admits requests by (no database query per request)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from modelplane.control.audit import AuditLog
from modelplane.control.snapshot import Snapshot
from modelplane.control.subjects import Scope, Subject, Subjects
from modelplane.governance.limits import LimitRule
from modelplane.identity import Caller
from modelplane.spec import RateLimits
from modelplane.store.db import Database
from modelplane.store.governance import LimitRepo


class LimitService(Snapshot):
    collection = "limits"

    def __init__(self, db: Database, subjects: Subjects) -> None:
        super().__init__(db)
        self.repo = LimitRepo(db)
        self.audit = AuditLog(db)
        self.subjects = subjects
        self.rules: dict[tuple[str, str], LimitRule] = {}

    async def load(self) -> None:
        specs = await self.repo.all()
        names = await self.subjects.all() if specs else {}
        rules: dict[tuple[str, str], LimitRule] = {}
        for (scope, subject), spec in specs.items():
            try:
                limits = RateLimits.model_validate(spec)
            except ValidationError:
                continue  # written by a newer version; nothing this one can enforce
            who = names.get((scope, subject))
            label = who.label if who else f"{scope} {subject}"
            if limits:
                rules[scope, subject] = LimitRule(f"{scope}:{subject}", label, limits)
        self.rules = rules

    def view(self, scope: Scope, subject_id: str) -> dict[str, Any] | None:
        rule = self.rules.get((scope, subject_id))
        return rule.limits.model_dump(exclude_none=True) if rule else None

    async def set(
        self, caller: Caller, scope: Scope, ref: str, limits: RateLimits | None
    ) -> Subject:
        """Set the limits of the key (id) or team (name) ``ref``; None or all-empty
        limits remove them."""
        who = await self.subjects.resolve(caller, scope, ref, change=True)
        spec = limits.model_dump(exclude_none=True) if limits else None
        before = await self.repo.get(scope, who.id)
        if before != spec:
            async with self.db.transaction():
                await self.repo.put(scope, who.id, spec)
                await self.audit.record(
                    caller,
                    f"{scope}.set_limits",
                    scope,
                    who.name if scope == "team" else who.id,
                    {"limits": before},
                    {"limits": spec},
                    who.team_id,
                )
        await self.reload()
        return who
