"""Who a rate limit or a budget is about: a key (by id) or a team (by name), and who
may read or set it.

- A team's limits and budget are the ceiling set by whoever pays for the platform:
  admins set them; the team's members may read them.
- A key's limits and budget divide a team's allowance among its keys: admins, and the
  team admins of the key's team, set and read them (as they manage its keys).

Another team's key or team is a 404, as if it did not exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from modelplane.control.teams import TeamService
from modelplane.errors import NotFound, PermissionDenied
from modelplane.identity import Caller
from modelplane.store.db import Database
from modelplane.store.repos import KeyRepo

Scope = Literal["key", "team"]
SCOPES: tuple[Scope, ...] = ("key", "team")


@dataclass(frozen=True, slots=True)
class Subject:
    scope: Scope
    id: str
    name: str
    team_id: str | None

    @property
    def label(self) -> str:
        return f"{self.scope} '{self.name}'"


class Subjects:
    def __init__(self, db: Database, teams: TeamService) -> None:
        self.keys = KeyRepo(db)
        self.teams = teams

    async def resolve(self, caller: Caller, scope: Scope, ref: str, *, change: bool) -> Subject:
        """The key (``ref`` is its id) or team (its name) ``caller`` may read, or with
        ``change``, set limits and budgets of; 404 or 403 otherwise."""
        if scope == "team":
            team_id = self.teams.id_of(ref)
            if team_id is None or not (caller.is_admin or caller.team_id == team_id):
                raise NotFound(f"no team named '{ref}'")
            if change and not (caller.is_admin and caller.allows("write")):
                raise PermissionDenied(
                    f"only an admin can set team '{ref}''s limits and budget; a team "
                    "admin can set those of the team's keys"
                )
            return Subject("team", team_id, ref, team_id)
        key = await self.keys.get(ref)
        mine = (
            key is not None
            and caller.role == "team_admin"
            and caller.team_id is not None
            and key.team_id == caller.team_id
        )
        if key is None or not (caller.is_admin or mine):
            raise NotFound(f"no API key with id '{ref}'")
        if change and not caller.allows("write"):
            raise PermissionDenied("changing a key's limits or budget needs the 'write' scope")
        return Subject("key", key.id, key.name, key.team_id)

    def readable(self, caller: Caller, scope: str, team_id: str | None) -> bool:
        """Whether ``caller`` may see a limit or budget of a ``scope`` whose team is
        ``team_id`` (for lists)."""
        if caller.is_admin:
            return True
        if caller.team_id is None or team_id != caller.team_id:
            return False
        return scope == "team" or caller.role == "team_admin"

    async def all(self) -> dict[tuple[str, str], Subject]:
        """Every key and team, by (scope, id): names for messages and views. Read from
        the database, not the team snapshot, which may not have caught up with a team
        created through another process a moment ago."""
        out: dict[tuple[str, str], Subject] = {
            ("team", t.id): Subject("team", t.id, t.name, t.id) for t in await self.teams.repo.all()
        }
        for k in await self.keys.all():
            out["key", k.id] = Subject("key", k.id, k.name, k.team_id)
        return out
