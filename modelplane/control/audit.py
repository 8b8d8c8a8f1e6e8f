"""The audit log: every control-plane change, who made it, and what it changed.

A service records a change inside the transaction that makes it::

    async with self.db.transaction():
        ep = await self.repo.add(...)
        await self.audit.record(caller, "endpoint.create", "endpoint", name, None, after, team)

so a change never commits without its event, nor an event without its change. A change
that fails (validation, a conflict, a database error) records nothing, and neither
does a write that changes nothing (``before == after``).

Events hold the resource as the API shows it, before and after, scrubbed twice over:
services never pass key hashes, minted keys or secret values, and every event is run
through :func:`scrub` anyway. Each event carries the id of the request that made it
(``x-request-id``), so a change can be found in the logs and traces.

The actor is the caller's subject (``key:<id>``, ``jwt:<issuer>#<sub>``), preceded by
the account it acts for when it has one: ``user:alice (key:<id>)``,
``service:ci-bot (key:<id>)``. ``actor`` filters match it exactly, or by prefix when
they end in ``*`` (``user:alice*``: everything alice did, with any credential).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from modelplane.errors import InvalidRequest, PermissionDenied
from modelplane.identity import Caller
from modelplane.store.db import Database
from modelplane.store.records import AuditEvent
from modelplane.store.repos import AuditRepo
from modelplane.telemetry.logging import redact, request_id_var

MAX_LIMIT = 1000
REDACTED = "[redacted]"

_SECRET_FIELD = re.compile(
    r"(?i)(^|[_-])(secret|secret_access_key|password|passwd|token|api_?key|key_hash|"
    r"ciphertext|authorization|private_key)$"
)
_REFERENCE = re.compile(r"^(env|secret):[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


def scrub(value: Any) -> Any:
    """A copy of ``value`` fit for the audit log: a string under a field named like a
    secret is blanked unless it is a credential reference (``env:X``, ``secret:Y``), and
    anything shaped like a bearer token or API key is blanked wherever it appears."""
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED
            if isinstance(v, str) and _SECRET_FIELD.search(str(k)) and not _REFERENCE.match(v)
            else scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


def _utc(at: datetime | None) -> datetime | None:
    if at is None:
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.repo = AuditRepo(db)

    async def record(
        self,
        caller: Caller,
        action: str,
        resource_type: str,
        name: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        team_id: str | None = None,
    ) -> None:
        """Record one change: ``action`` is ``<resource_type>.<verb>``; ``before`` and
        ``after`` are the resource's API views (``None`` when it did not or no longer
        exists); ``team_id`` is the team owning the resource, whose admins may read the
        event. Call it inside the ``Database.transaction()`` that makes the change."""
        if before is not None and before == after:
            return
        await self.repo.add(
            actor=caller.actor[:200],
            actor_team_id=caller.team_id,
            action=action,
            resource_type=resource_type,
            resource_name=name,
            team_id=team_id,
            before=scrub(before),
            after=scrub(after),
            request_id=request_id_var.get() or None,
        )

    async def list(
        self,
        caller: Caller,
        *,
        actor: str | None = None,
        action: str | None = None,
        resource_type: str | None = None,
        resource_name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: int | None = None,
        limit: int = 100,
    ) -> tuple[list[AuditEvent], int | None]:
        """Events newest first, and the cursor for the next page (``None`` at the end).
        Admins read every event; a team admin those about its own team's resources."""
        team_admin = caller.role == "team_admin" and caller.team_id is not None
        if not caller.allows("read") or not (caller.is_admin or team_admin):
            raise PermissionDenied("reading the audit log needs an admin or team_admin key")
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}", param="limit")
        events = await self.repo.find(
            actor=actor,
            action=action,
            resource_type=resource_type,
            resource_name=resource_name,
            team_id=None if caller.is_admin else caller.team_id,
            since=_utc(since),
            until=_utc(until),
            before_id=cursor,
            limit=limit + 1,
        )
        more = len(events) > limit
        events = events[:limit]
        return events, events[-1].id if more else None


def event_view(e: AuditEvent, team_name: Callable[[str | None], str | None]) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": e.at.isoformat(),
        "actor": e.actor,
        "actor_team_id": e.actor_team_id,
        "action": e.action,
        "resource_type": e.resource_type,
        "resource_name": e.resource_name,
        "team_id": e.team_id,
        "team": team_name(e.team_id),
        "before": e.before,
        "after": e.after,
        "request_id": e.request_id,
    }
