"""Users and service accounts: who keys and JWTs stand for.

Both kinds live in one table under one namespace (a name is unique across users and
service accounts) and follow the tenancy of every other resource:

- admins manage every account, including platform admins (role ``admin``, the only
  accounts that may have no team);
- a team admin manages its own team's accounts, up to ``team_admin``: it cannot grant
  ``admin``, nor change or delete an admin account of its team;
- members and viewers read their own team's accounts;
- another team's account is a 404, as if it did not exist.

Disabling an account refuses its keys (and, for a user, its JWTs) on every server
process within about a second; deleting one revokes its keys in the same transaction.
Every change is one audit event (``user.create``, ``service_account.update``…), written
in the change's own transaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from modelplane.control.audit import AuditLog
from modelplane.control.keys import KeyService, audited
from modelplane.control.names import NAME
from modelplane.control.snapshot import Snapshot
from modelplane.control.teams import TeamService
from modelplane.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from modelplane.identity import ROLES, Caller
from modelplane.store.accounts import AccountRepo
from modelplane.store.db import Database
from modelplane.store.records import Account, AccountKind
from modelplane.store.repos import DuplicateName, KeyRepo

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_NOUN: dict[AccountKind, str] = {"user": "user", "service": "service account"}
_RESOURCE: dict[AccountKind, str] = {"user": "user", "service": "service_account"}
CHANGES = frozenset({"role", "email", "disabled"})


def normal_email(email: str) -> str:
    """Emails are compared case-insensitively: stored and matched in lower case."""
    email = email.strip().lower()
    if len(email) > 254 or not _EMAIL.match(email):
        raise InvalidRequest(f"'{email[:64]}' is not an email address", param="email")
    return email


class AccountService(Snapshot):
    """Accounts by name and email, in memory (for JWTs and key listings), and the
    control-plane operations on them."""

    collection = "accounts"

    def __init__(self, db: Database, teams: TeamService, keys: KeyService) -> None:
        super().__init__(db)
        self.repo = AccountRepo(db)
        self.key_repo = KeyRepo(db)
        self.teams = teams
        self.keys = keys
        self.audit = AuditLog(db)
        self.by_id: dict[str, Account] = {}
        self.by_name: dict[str, Account] = {}
        self.by_email: dict[str, Account] = {}

    async def load(self) -> None:
        accounts = await self.repo.all()
        self.by_id = {a.id: a for a in accounts}
        self.by_name = {a.name: a for a in accounts}
        self.by_email = {a.email: a for a in accounts if a.email and a.kind == "user"}

    def name_of(self, account_id: str | None) -> str | None:
        account = self.by_id.get(account_id) if account_id else None
        return account.name if account else None

    def user_for(self, subject: str, email: str | None) -> Account | None:
        """The user a JWT names: by its subject (the account's name), else by its email."""
        user = self.by_name.get(subject)
        if user is not None and user.kind == "user":
            return user
        return self.by_email.get(email.lower()) if email else None

    def view(self, a: Account) -> dict[str, Any]:
        out: dict[str, Any] = {"id": a.id, "kind": a.kind, "name": a.name}
        if a.kind == "user":
            out["email"] = a.email
        return {
            **out,
            "team": self.teams.name_of(a.team_id),
            "role": a.role,
            "disabled": a.disabled,
            "disabled_at": a.disabled_at.isoformat() if a.disabled_at else None,
            "created_at": a.created_at.isoformat(),
            "created_by": a.created_by,
        }

    def _audited(self, a: Account) -> dict[str, Any]:
        return {**self.view(a), "team_id": a.team_id}

    @staticmethod
    def _visible(caller: Caller, a: Account) -> bool:
        return caller.is_admin or (a.team_id is not None and a.team_id == caller.team_id)

    @staticmethod
    def _may_manage(caller: Caller, kind: AccountKind, verb: str) -> None:
        if not caller.allows("write") or not (caller.is_admin or caller.role == "team_admin"):
            raise PermissionDenied(f"{verb} {_NOUN[kind]}s needs an admin or team_admin key")

    async def _find(self, caller: Caller, kind: AccountKind, name: str) -> Account:
        """The account ``caller`` may see (from the database, not the snapshot, so a
        change made through another process a moment ago counts), or 404."""
        found = await self.repo.get(name)
        if found is None or found.kind != kind or not self._visible(caller, found):
            raise NotFound(f"no {_NOUN[kind]} named '{name}'")
        return found

    async def list(self, caller: Caller, kind: AccountKind) -> list[Account]:
        if not caller.allows("read"):
            raise PermissionDenied(f"reading {_NOUN[kind]}s needs the 'read' scope")
        return [a for a in await self.repo.all() if a.kind == kind and self._visible(caller, a)]

    async def get(self, caller: Caller, kind: AccountKind, name: str) -> Account:
        if not caller.allows("read"):
            raise PermissionDenied(f"reading {_NOUN[kind]}s needs the 'read' scope")
        return await self._find(caller, kind, name)

    async def create(
        self,
        caller: Caller,
        kind: AccountKind,
        name: str,
        *,
        role: str = "member",
        team: str | None = None,
        email: str | None = None,
    ) -> Account:
        noun = _NOUN[kind]
        if not NAME.match(name):
            raise InvalidRequest(
                f"a {noun} name is 1-63 characters of a-z, 0-9, '.', '_' or '-', starting "
                "with a letter or digit",
                param="name",
            )
        if role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", param="role")
        if email is not None:
            if kind != "user":
                raise InvalidRequest("service accounts have no email", param="email")
            email = normal_email(email)
        self._may_manage(caller, kind, "creating")
        if caller.is_admin:
            team_id = None
            if team is not None and (team_id := self.teams.id_of(team)) is None:
                raise InvalidRequest(f"no team named '{team}'", param="team")
            if team_id is None and role != "admin":
                raise InvalidRequest(
                    f"a {noun} needs a team, unless its role is admin", param="team"
                )
        else:
            if role == "admin":
                raise PermissionDenied(f"only an admin can create admin {noun}s")
            if team is not None and team != self.teams.name_of(caller.team_id):
                raise PermissionDenied(f"you can only create {noun}s for your own team")
            team_id = caller.team_id
            if team_id is None:
                raise PermissionDenied(f"a team admin without a team cannot create {noun}s")
        try:
            async with self.db.transaction():
                account = await self.repo.add(
                    kind=kind,
                    name=name,
                    email=email,
                    team_id=team_id,
                    role=role,
                    created_by=caller.actor[:200],
                )
                await self._record(caller, account, "create", None, account)
        except DuplicateName:
            if email is None or await self.repo.get(name) is not None:
                raise Conflict(f"an account named '{name}' already exists") from None
            raise Conflict("another user already has this email address") from None
        await self._changed()
        return account

    async def update(
        self, caller: Caller, kind: AccountKind, name: str, changes: Mapping[str, Any]
    ) -> Account:
        """Change ``role``, ``email`` (users; ``None`` clears it) or ``disabled``."""
        unknown = sorted(set(changes) - CHANGES)
        if unknown:
            raise InvalidRequest(f"'{unknown[0]}' cannot be changed", param=unknown[0])
        account = await self._find(caller, kind, name)
        self._may_manage(caller, kind, "changing")
        role = changes.get("role")
        if role is not None and role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", param="role")
        if not caller.is_admin:
            if account.role == "admin":
                raise PermissionDenied(f"only an admin can change admin {_NOUN[kind]}s")
            if role == "admin":
                raise PermissionDenied("only an admin can grant the admin role")
        if role is not None and role != "admin" and account.team_id is None:
            raise InvalidRequest(
                f"{account.label} has no team, so its role must stay admin", param="role"
            )
        todo: dict[str, Any] = {}
        if role is not None and role != account.role:
            todo["role"] = role
        if "email" in changes:
            email = changes["email"]
            if email is not None:
                if kind != "user":
                    raise InvalidRequest("service accounts have no email", param="email")
                email = normal_email(email)
            if email != account.email:
                todo["email"] = email
        disabled = changes.get("disabled")
        if disabled is not None and disabled != account.disabled:
            todo["disabled"] = disabled
        if not todo:
            return account
        try:
            async with self.db.transaction():
                changed = await self.repo.update(name, todo)
                if changed is None:
                    raise NotFound(f"no {_NOUN[kind]} named '{name}'")
                await self._record(caller, changed, "update", account, changed)
        except DuplicateName:
            raise Conflict("another user already has this email address") from None
        await self._changed()
        return changed

    async def delete(self, caller: Caller, kind: AccountKind, name: str) -> None:
        """Delete an account and revoke its keys, in one transaction."""
        account = await self._find(caller, kind, name)
        self._may_manage(caller, kind, "deleting")
        if not caller.is_admin and account.role == "admin":
            raise PermissionDenied(f"only an admin can delete admin {_NOUN[kind]}s")
        async with self.db.transaction():
            for before, after in await self.key_repo.revoke_account(account.id):
                await self.audit.record(
                    caller,
                    "key.revoke",
                    "key",
                    after.id,
                    audited(before),
                    audited(after),
                    after.team_id,
                )
            if not await self.repo.delete(account.id):
                raise NotFound(f"no {_NOUN[kind]} named '{name}'")
            await self._record(caller, account, "delete", account, None)
        await self._changed()

    async def _record(
        self, caller: Caller, a: Account, verb: str, before: Account | None, after: Account | None
    ) -> None:
        resource = _RESOURCE[a.kind]
        await self.audit.record(
            caller,
            f"{resource}.{verb}",
            resource,
            a.name,
            self._audited(before) if before else None,
            self._audited(after) if after else None,
            a.team_id,
        )

    async def _changed(self) -> None:
        """This process's caches see a change at once; the others within a second."""
        await self.reload()
        await self.keys.reload()
