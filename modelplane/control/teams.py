"""Teams, and turning the team names people write into the ids resources store."""

from __future__ import annotations

from collections.abc import Iterable

from modelplane.control.audit import AuditLog
from modelplane.control.names import NAME
from modelplane.control.snapshot import Snapshot
from modelplane.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from modelplane.identity import Caller, Owned
from modelplane.store.db import Database
from modelplane.store.records import Team
from modelplane.store.repos import DuplicateName, InUse, TeamRepo

EVERYONE = "*"


class TeamService(Snapshot):
    collection = "teams"

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.repo = TeamRepo(db)
        self.audit = AuditLog(db)
        self.by_id: dict[str, Team] = {}
        self.by_name: dict[str, Team] = {}

    async def load(self) -> None:
        teams = await self.repo.all()
        self.by_id = {t.id: t for t in teams}
        self.by_name = {t.name: t for t in teams}

    def id_of(self, name: str) -> str | None:
        team = self.by_name.get(name)
        return team.id if team else None

    def name_of(self, team_id: str | None) -> str | None:
        team = self.by_id.get(team_id) if team_id else None
        return team.name if team else None

    def view(self, team: Team) -> dict[str, str]:
        return {"id": team.id, "name": team.name, "created_at": team.created_at.isoformat()}

    async def create(self, caller: Caller, name: str) -> Team:
        if not caller.is_admin:
            raise PermissionDenied("creating teams needs an admin key")
        if not NAME.match(name):
            raise InvalidRequest(
                "a team name is 1-63 characters of a-z, 0-9, '.', '_' or '-'", param="name"
            )
        try:
            async with self.db.transaction():
                team = await self.repo.add(name)
                await self.audit.record(
                    caller, "team.create", "team", name, None, self.view(team), team.id
                )
        except DuplicateName:
            raise Conflict(f"a team named '{name}' already exists") from None
        await self.reload()
        return team

    def list(self, caller: Caller) -> list[Team]:
        teams = sorted(self.by_id.values(), key=lambda t: t.name)
        return teams if caller.is_admin else [t for t in teams if t.id == caller.team_id]

    async def delete(self, caller: Caller, name: str) -> None:
        if not caller.is_admin:
            raise PermissionDenied("deleting teams needs an admin key")
        team = self.by_name.get(name)
        if team is None:
            raise NotFound(f"no team named '{name}'")
        try:
            async with self.db.transaction():
                if not await self.repo.delete(team.id):
                    raise NotFound(f"no team named '{name}'")
                await self.audit.record(
                    caller, "team.delete", "team", name, self.view(team), None, team.id
                )
        except InUse:
            raise Conflict(
                f"team '{name}' still has users or service accounts; delete them first"
            ) from None
        await self.reload()

    def owner(self, caller: Caller, team: str | None, shared_with: Iterable[str] | None) -> Owned:
        """Who will own a new resource. Admins may give it to any team (or to none: the
        platform); everyone else creates for their own team. Platform resources are
        shared with every team unless said otherwise; team resources with none."""
        if caller.is_admin:
            team_id = None
            if team is not None:
                team_id = self.id_of(team)
                if team_id is None:
                    raise InvalidRequest(f"no team named '{team}'", param="team")
        else:
            if team is not None and team != self.name_of(caller.team_id):
                raise PermissionDenied("you can only create resources for your own team")
            team_id = caller.team_id
        if shared_with is None:
            return Owned(team_id, (EVERYONE,) if team_id is None else ())
        return Owned(team_id, self.share_ids(shared_with))

    def share_ids(self, names: Iterable[str]) -> tuple[str, ...]:
        out = []
        for name in names:
            if name == EVERYONE:
                out.append(EVERYONE)
                continue
            team_id = self.id_of(name)
            if team_id is None:
                raise InvalidRequest(f"no team named '{name}' to share with", param="shared_with")
            out.append(team_id)
        return tuple(dict.fromkeys(out))

    def owner_view(self, owner: Owned) -> dict[str, object]:
        return {
            "team": self.name_of(owner.team_id),
            "shared_with": [
                s if s == EVERYONE else (self.name_of(s) or s) for s in owner.shared_with
            ],
        }
