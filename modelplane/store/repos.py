"""Queries, one small class per collection. Every write bumps that collection's
revision in the same transaction, which is how caches in every process learn of it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from modelplane.identity import UNSHARED, Owned
from modelplane.store.db import Database, aware, utc_now
from modelplane.store.models import (
    ApiKeyRow,
    AuditEventRow,
    EndpointRow,
    RouteRow,
    SecretRow,
    TeamRow,
)
from modelplane.store.records import (
    ApiKey,
    AuditEvent,
    Endpoint,
    Route,
    Team,
)
from modelplane.store.revisions import bump


class DuplicateName(Exception):
    pass


class InUse(Exception):
    """A row others still refer to (a team with accounts) cannot be deleted."""


def _key(r: ApiKeyRow) -> ApiKey:
    return ApiKey(
        r.id,
        r.name,
        r.prefix,
        r.key_hash,
        r.role,
        aware(r.created_at) or utc_now(),
        aware(r.expires_at),
        aware(r.revoked_at),
        aware(r.last_used_at),
        r.team_id,
        tuple(r.scopes or ()),
        r.account_id,
    )


def _owner(r: EndpointRow | RouteRow) -> Owned:
    return Owned(r.team_id, tuple(r.shared_with or ()))


def _endpoint(r: EndpointRow) -> Endpoint:
    return Endpoint(
        r.id,
        r.name,
        r.engine,
        r.provider,
        r.model,
        r.replicas,
        dict(r.options),
        r.generation,
        aware(r.created_at) or utc_now(),
        aware(r.updated_at) or utc_now(),
        _owner(r),
        dict(r.resources or {}),
        dict(r.autoscaling) if r.autoscaling is not None else None,
        list(r.adapters or ()),
        r.node,
    )


class KeyRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self,
        *,
        name: str,
        prefix: str,
        key_hash: str,
        role: str,
        expires_at: datetime | None,
        team_id: str | None = None,
        scopes: tuple[str, ...] = (),
        account_id: str | None = None,
    ) -> ApiKey:
        row = ApiKeyRow(
            id=uuid.uuid4().hex,
            name=name,
            prefix=prefix,
            key_hash=key_hash,
            role=role,
            team_id=team_id,
            scopes=list(scopes),
            created_at=utc_now(),
            expires_at=expires_at,
            account_id=account_id,
        )
        async with self.db.session() as s:
            s.add(row)
            await bump(s, "keys")
        return _key(row)

    async def all(self) -> list[ApiKey]:
        async with self.db.session() as s:
            rows = (await s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at))).all()
            return [_key(r) for r in rows]

    async def get(self, key_id: str) -> ApiKey | None:
        async with self.db.session() as s:
            row = await s.get(ApiKeyRow, key_id)
            return _key(row) if row else None

    async def revoke(self, key_id: str) -> ApiKey | None:
        async with self.db.session() as s:
            row = await s.get(ApiKeyRow, key_id)
            if row is None:
                return None
            if row.revoked_at is None:
                row.revoked_at = utc_now()
                await bump(s, "keys")
            return _key(row)

    async def revoke_account(self, account_id: str) -> list[tuple[ApiKey, ApiKey]]:
        """Revoke every live key of an account; each as (before, after)."""
        async with self.db.session() as s:
            rows = (
                await s.scalars(
                    select(ApiKeyRow)
                    .where(ApiKeyRow.account_id == account_id, ApiKeyRow.revoked_at.is_(None))
                    .order_by(ApiKeyRow.created_at)
                    .with_for_update()
                )
            ).all()
            out = []
            for row in rows:
                before = _key(row)
                row.revoked_at = utc_now()
                out.append((before, _key(row)))
            if out:
                await s.flush()
                await bump(s, "keys")
            return out

    async def rotate(self, key_id: str, prefix: str, key_hash: str) -> ApiKey | None:
        """Give a live key a new secret; the old one stops working."""
        async with self.db.session() as s:
            row = await s.get(ApiKeyRow, key_id)
            if row is None or row.revoked_at is not None:
                return None
            row.prefix, row.key_hash = prefix, key_hash
            await bump(s, "keys")
            return _key(row)

    async def count(self) -> int:
        return len(await self.all())

    async def touch(self, used: dict[str, datetime]) -> None:
        """Record last-used times, batched off the request path."""
        if not used:
            return
        async with self.db.session() as s:
            for key_id, at in used.items():
                await s.execute(
                    update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(last_used_at=at)
                )


class EndpointRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self,
        *,
        name: str,
        engine: str,
        model: str,
        replicas: int,
        options: dict[str, Any],
        provider: str | None = None,
        owner: Owned = UNSHARED,
        resources: dict[str, Any] | None = None,
        autoscaling: dict[str, Any] | None = None,
        adapters: list[dict[str, Any]] | None = None,
        node: str | None = None,
    ) -> Endpoint:
        now = utc_now()
        row = EndpointRow(
            node=node,
            id=uuid.uuid4().hex,
            name=name,
            engine=engine,
            provider=provider,
            team_id=owner.team_id,
            shared_with=list(owner.shared_with),
            model=model,
            replicas=replicas,
            options=options,
            resources=resources or {},
            autoscaling=autoscaling,
            adapters=adapters or [],
            generation=1,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self.db.session() as s:
                s.add(row)
                await s.flush()
                await bump(s, "endpoints")
        except IntegrityError:
            raise DuplicateName(name) from None
        return _endpoint(row)

    async def all(self) -> list[Endpoint]:
        async with self.db.session() as s:
            rows = (await s.scalars(select(EndpointRow).order_by(EndpointRow.name))).all()
            return [_endpoint(r) for r in rows]

    async def get(self, name: str) -> Endpoint | None:
        async with self.db.session() as s:
            row = await s.scalar(select(EndpointRow).where(EndpointRow.name == name))
            return _endpoint(row) if row else None

    async def update(self, name: str, changes: dict[str, Any]) -> Endpoint | None:
        """Apply ``changes``; a change to anything but ``replicas`` or ``autoscaling``
        (how many replicas, not what they run) rolls the replicas."""
        async with self.db.session() as s:
            row = await s.scalar(
                select(EndpointRow).where(EndpointRow.name == name).with_for_update()
            )
            if row is None:
                return None
            respec = False
            for field, value in changes.items():
                if field == "shared_with":
                    row.shared_with = list(value)
                    continue
                if getattr(row, field) != value:
                    setattr(row, field, value)
                    respec = respec or field not in ("replicas", "autoscaling")
            if respec:
                row.generation += 1
            row.updated_at = utc_now()
            await bump(s, "endpoints")
            return _endpoint(row)

    async def claim(self, names: list[str], node: str) -> bool:
        """Make ``node`` the node of those of ``names`` that have none; whether any had."""
        async with self.db.session() as s:
            res = await s.execute(
                update(EndpointRow)
                .where(EndpointRow.name.in_(names), EndpointRow.node.is_(None))
                .values(node=node)
            )
            claimed = bool(getattr(res, "rowcount", 0))
            if claimed:
                await bump(s, "endpoints")
            return claimed

    async def delete(self, name: str) -> bool:
        async with self.db.session() as s:
            row = await s.scalar(select(EndpointRow).where(EndpointRow.name == name))
            if row is None:
                return False
            await s.delete(row)
            await bump(s, "endpoints")
            return True


def _route(r: RouteRow) -> Route:
    return Route(
        r.id,
        r.name,
        dict(r.spec),
        r.source,
        aware(r.created_at) or utc_now(),
        aware(r.updated_at) or utc_now(),
        _owner(r),
    )


class RouteRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> list[Route]:
        async with self.db.session() as s:
            rows = (await s.scalars(select(RouteRow).order_by(RouteRow.name))).all()
            return [_route(r) for r in rows]

    async def get(self, name: str) -> Route | None:
        async with self.db.session() as s:
            row = await s.scalar(select(RouteRow).where(RouteRow.name == name))
            return _route(row) if row else None

    async def put(
        self, name: str, spec: dict[str, Any], source: str, owner: Owned = UNSHARED
    ) -> tuple[Route, bool]:
        """Create or replace; returns the route and whether it was created."""
        now = utc_now()
        shared = list(owner.shared_with)
        async with self.db.session() as s:
            row = await s.scalar(select(RouteRow).where(RouteRow.name == name).with_for_update())
            created = row is None
            if row is None:
                row = RouteRow(
                    id=uuid.uuid4().hex,
                    name=name,
                    spec=spec,
                    source=source,
                    team_id=owner.team_id,
                    shared_with=shared,
                    created_at=now,
                    updated_at=now,
                )
                s.add(row)
            elif (row.spec, row.source, row.team_id, row.shared_with) == (
                spec,
                source,
                owner.team_id,
                shared,
            ):
                return _route(row), False
            else:
                row.spec, row.source, row.updated_at = spec, source, now
                row.team_id, row.shared_with = owner.team_id, shared
            await s.flush()
            await bump(s, "routes")
            return _route(row), created

    async def delete(self, name: str) -> bool:
        async with self.db.session() as s:
            row = await s.scalar(select(RouteRow).where(RouteRow.name == name))
            if row is None:
                return False
            await s.delete(row)
            await bump(s, "routes")
            return True


class SecretRepo:
    """Ciphertexts by name; encryption happens above, in ``control/secrets.py``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> list[tuple[str, str, datetime, datetime]]:
        async with self.db.session() as s:
            rows = (await s.scalars(select(SecretRow).order_by(SecretRow.name))).all()
            return [
                (
                    r.name,
                    r.ciphertext,
                    aware(r.created_at) or utc_now(),
                    aware(r.updated_at) or utc_now(),
                )
                for r in rows
            ]

    async def put(self, name: str, ciphertext: str) -> bool:
        """Create or replace; returns whether it was created."""
        now = utc_now()
        async with self.db.session() as s:
            row = await s.get(SecretRow, name, with_for_update=True)
            if row is None:
                s.add(SecretRow(name=name, ciphertext=ciphertext, created_at=now, updated_at=now))
            else:
                row.ciphertext, row.updated_at = ciphertext, now
            await bump(s, "secrets")
            return row is None

    async def delete(self, name: str) -> bool:
        async with self.db.session() as s:
            row = await s.get(SecretRow, name)
            if row is None:
                return False
            await s.delete(row)
            await bump(s, "secrets")
            return True


class TeamRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> list[Team]:
        async with self.db.session() as s:
            rows = (await s.scalars(select(TeamRow).order_by(TeamRow.name))).all()
            return [Team(r.id, r.name, aware(r.created_at) or utc_now()) for r in rows]

    async def add(self, name: str) -> Team:
        row = TeamRow(id=uuid.uuid4().hex, name=name, created_at=utc_now())
        try:
            async with self.db.session() as s:
                s.add(row)
                await s.flush()
                await bump(s, "teams")
        except IntegrityError:
            raise DuplicateName(name) from None
        return Team(row.id, row.name, row.created_at)

    async def delete(self, team_id: str) -> bool:
        """Delete a team; ``InUse`` while accounts still belong to it."""
        async with self.db.session() as s:
            row = await s.get(TeamRow, team_id)
            if row is None:
                return False
            await s.delete(row)
            try:
                await s.flush()
            except IntegrityError:
                raise InUse(team_id) from None
            await bump(s, "teams")
            return True


def _event(r: AuditEventRow) -> AuditEvent:
    return AuditEvent(
        r.id,
        aware(r.at) or utc_now(),
        r.actor,
        r.actor_team_id,
        r.action,
        r.resource_type,
        r.resource_name,
        r.team_id,
        r.before,
        r.after,
        r.request_id,
    )


class AuditRepo:
    """Append-only. Inside ``Database.transaction()`` an event commits (or not) with the
    change it describes."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(
        self,
        *,
        actor: str,
        actor_team_id: str | None,
        action: str,
        resource_type: str,
        resource_name: str,
        team_id: str | None,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        request_id: str | None,
    ) -> None:
        async with self.db.session() as s:
            s.add(
                AuditEventRow(
                    at=utc_now(),
                    actor=actor,
                    actor_team_id=actor_team_id,
                    action=action,
                    resource_type=resource_type,
                    resource_name=resource_name,
                    team_id=team_id,
                    before=before,
                    after=after,
                    request_id=request_id,
                )
            )

    async def find(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        resource_type: str | None = None,
        resource_name: str | None = None,
        team_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """Newest first. ``actor`` or ``action`` ending in ``*`` matches a prefix
        (``user:alice*``, ``endpoint.*``); ``before_id`` continues a listing after its
        last event."""
        q = select(AuditEventRow)
        for column, value in (
            (AuditEventRow.resource_type, resource_type),
            (AuditEventRow.resource_name, resource_name),
            (AuditEventRow.team_id, team_id),
        ):
            if value is not None:
                q = q.where(column == value)
        for column, pattern in ((AuditEventRow.actor, actor), (AuditEventRow.action, action)):
            if pattern is not None:
                q = q.where(
                    column.startswith(pattern[:-1], autoescape=True)
                    if pattern.endswith("*")
                    else column == pattern
                )
        if since is not None:
            q = q.where(AuditEventRow.at >= since)
        if until is not None:
            q = q.where(AuditEventRow.at < until)
        if before_id is not None:
            q = q.where(AuditEventRow.id < before_id)
        async with self.db.session() as s:
            rows = (await s.scalars(q.order_by(AuditEventRow.id.desc()).limit(limit))).all()
            return [_event(r) for r in rows]
