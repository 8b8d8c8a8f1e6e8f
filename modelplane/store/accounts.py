"""Queries for users and service accounts. Every write bumps the ``accounts`` revision,
which both the account snapshot and the key cache watch."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from modelplane.store.db import Database, aware, utc_now
from modelplane.store.models import AccountRow
from modelplane.store.records import Account
from modelplane.store.repos import DuplicateName
from modelplane.store.revisions import bump

UPDATABLE = frozenset({"role", "email", "disabled"})


def _account(r: AccountRow) -> Account:
    return Account(
        r.id,
        "service" if r.kind == "service" else "user",
        r.name,
        r.email,
        r.team_id,
        r.role,
        aware(r.disabled_at),
        aware(r.created_at) or utc_now(),
        r.created_by,
    )


class AccountRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> list[Account]:
        async with self.db.session() as s:
            rows = (await s.scalars(select(AccountRow).order_by(AccountRow.name))).all()
            return [_account(r) for r in rows]

    async def get(self, name: str) -> Account | None:
        async with self.db.session() as s:
            row = await s.scalar(select(AccountRow).where(AccountRow.name == name))
            return _account(row) if row else None

    async def add(
        self,
        *,
        kind: str,
        name: str,
        email: str | None,
        team_id: str | None,
        role: str,
        created_by: str,
    ) -> Account:
        """``DuplicateName`` when the name (or a user's email) is taken."""
        row = AccountRow(
            id=uuid.uuid4().hex,
            kind=kind,
            name=name,
            email=email,
            team_id=team_id,
            role=role,
            disabled_at=None,
            created_at=utc_now(),
            created_by=created_by,
        )
        try:
            async with self.db.session() as s:
                s.add(row)
                await s.flush()
                await bump(s, "accounts")
        except IntegrityError:
            raise DuplicateName(name) from None
        return _account(row)

    async def update(self, name: str, changes: dict[str, Any]) -> Account | None:
        """Apply ``changes`` (``role``, ``email``, ``disabled``: a bool); ``None`` if
        there is no such account, ``DuplicateName`` if the new email is taken."""
        assert set(changes) <= UPDATABLE, changes
        try:
            async with self.db.session() as s:
                row = await s.scalar(
                    select(AccountRow).where(AccountRow.name == name).with_for_update()
                )
                if row is None:
                    return None
                if "role" in changes:
                    row.role = changes["role"]
                if "email" in changes:
                    row.email = changes["email"]
                if "disabled" in changes and changes["disabled"] != (row.disabled_at is not None):
                    row.disabled_at = utc_now() if changes["disabled"] else None
                await s.flush()
                await bump(s, "accounts")
                return _account(row)
        except IntegrityError:
            raise DuplicateName(changes.get("email") or name) from None

    async def delete(self, account_id: str) -> bool:
        async with self.db.session() as s:
            row = await s.get(AccountRow, account_id)
            if row is None:
                return False
            await s.delete(row)
            await s.flush()
            await bump(s, "accounts")
            return True
