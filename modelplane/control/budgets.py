"""Budgets of keys and teams: set, read (with what was spent), delete; and the snapshot
of them the gateway checks requests against."""

from __future__ import annotations

from typing import Any

from modelplane.control.audit import AuditLog
from modelplane.control.snapshot import Snapshot
from modelplane.control.subjects import Scope, Subject, Subjects
from modelplane.errors import InvalidRequest, NotFound, PermissionDenied
from modelplane.governance.budgets import PERIODS, BudgetRule, Spend
from modelplane.identity import Caller
from modelplane.store.db import Database
from modelplane.store.governance import BudgetRepo
from modelplane.store.records import Budget


def _settings(b: Budget) -> dict[str, Any]:
    return {"period": b.period, "soft_usd": b.soft_usd, "hard_usd": b.hard_usd}


class BudgetService(Snapshot):
    collection = "budgets"

    def __init__(self, db: Database, subjects: Subjects) -> None:
        super().__init__(db)
        self.repo = BudgetRepo(db)
        self.audit = AuditLog(db)
        self.subjects = subjects
        self.rules: dict[tuple[str, str], BudgetRule] = {}
        self.spend: Spend | None = None
        """Set by whoever runs the gateway's spend tracking (for views and refreshes)."""

    async def load(self) -> None:
        budgets = await self.repo.all()
        names = await self.subjects.all() if budgets else {}
        rules = {}
        for b in budgets:
            who = names.get((b.scope, b.subject))
            label = who.label if who else f"{b.scope} {b.subject}"
            rules[b.scope, b.subject] = BudgetRule(b, label)
        self.rules = rules

    async def put(
        self,
        caller: Caller,
        scope: Scope,
        ref: str,
        *,
        period: str,
        soft_usd: float | None,
        hard_usd: float | None,
    ) -> tuple[dict[str, Any], bool]:
        if period not in PERIODS:
            raise InvalidRequest(f"period must be one of {', '.join(PERIODS)}", param="period")
        if soft_usd is None and hard_usd is None:
            raise InvalidRequest("set soft_usd, hard_usd or both", param="hard_usd")
        if soft_usd is not None and hard_usd is not None and soft_usd > hard_usd:
            raise InvalidRequest("soft_usd must not be above hard_usd", param="soft_usd")
        who = await self.subjects.resolve(caller, scope, ref, change=True)
        before = await self.repo.get(scope, who.id)
        async with self.db.transaction():
            budget, created = await self.repo.put(
                scope, who.id, period=period, soft_usd=soft_usd, hard_usd=hard_usd
            )
            await self.audit.record(
                caller,
                "budget.put",
                "budget",
                f"{scope}/{ref}",
                _settings(before) if before else None,
                _settings(budget),
                who.team_id,
            )
        await self._changed()
        return await self._view(BudgetRule(budget, who.label), who), created

    async def get(self, caller: Caller, scope: Scope, ref: str) -> dict[str, Any]:
        who = await self.subjects.resolve(caller, scope, ref, change=False)
        budget = await self.repo.get(scope, who.id)
        if budget is None:
            raise NotFound(f"{who.label} has no budget")
        return await self._view(BudgetRule(budget, who.label), who)

    async def delete(self, caller: Caller, scope: Scope, ref: str) -> None:
        who = await self.subjects.resolve(caller, scope, ref, change=True)
        before = await self.repo.get(scope, who.id)
        if before is None:
            raise NotFound(f"{who.label} has no budget")
        async with self.db.transaction():
            await self.repo.delete(scope, who.id)
            await self.audit.record(
                caller,
                "budget.delete",
                "budget",
                f"{scope}/{ref}",
                _settings(before),
                None,
                who.team_id,
            )
        await self._changed()

    async def list(self, caller: Caller) -> list[dict[str, Any]]:
        if not caller.allows("read"):
            raise PermissionDenied("reading budgets needs the 'read' scope")
        names = await self.subjects.all()
        out = []
        for b in sorted(await self.repo.all(), key=lambda b: (b.scope, b.subject)):
            who = names.get((b.scope, b.subject))
            if who is None or not self.subjects.readable(caller, b.scope, who.team_id):
                continue
            out.append(await self._view(BudgetRule(b, who.label), who))
        return out

    async def _changed(self) -> None:
        await self.reload()
        if self.spend is not None:
            await self.spend.refresh()  # enforced in this process at once

    async def _view(self, rule: BudgetRule, who: Subject) -> dict[str, Any]:
        b = rule.budget
        view: dict[str, Any] = {
            "scope": b.scope,
            "team": self.subjects.teams.name_of(who.team_id),
            "key": {"id": who.id, "name": who.name} if b.scope == "key" else None,
            **_settings(b),
            "updated_at": b.updated_at.isoformat(),
        }
        if self.spend is not None:
            status = await self.spend.status(rule)
            view.update(
                spent_usd=round(status.spent_usd, 6),
                period_start=status.period_start.isoformat(),
                resets_at=status.resets_at.isoformat() if status.resets_at else None,
                soft_exceeded=status.soft_exceeded,
                hard_exceeded=status.hard_exceeded,
            )
        return view
