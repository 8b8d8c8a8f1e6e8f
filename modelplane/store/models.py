"""Tables. Changing one means writing a migration in ``migrations/versions``."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
    }


class TeamRow(Base):
    __tablename__ = "teams"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime]


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    team_id: Mapped[str | None] = mapped_column(String(32))
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    # Deleting an account revokes its keys first (control/accounts.py), in the same
    # transaction; the database then only unlinks them.
    account_id: Mapped[str | None] = mapped_column(
        String(32),
        ForeignKey("accounts.id", name="fk_api_keys_account_id", ondelete="SET NULL"),
        index=True,
    )


class AccountRow(Base):
    """A user or a service account. A team with accounts cannot be deleted."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100), unique=True)
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    team_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("teams.id", name="fk_accounts_team_id")
    )
    role: Mapped[str] = mapped_column(String(32))
    disabled_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(200))


class EndpointRow(Base):
    __tablename__ = "endpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    engine: Mapped[str] = mapped_column(String(50))
    provider: Mapped[str | None] = mapped_column(String(50))
    model: Mapped[str] = mapped_column(Text)
    replicas: Mapped[int] = mapped_column(Integer)
    options: Mapped[dict[str, Any]]
    resources: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    autoscaling: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    adapters: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    team_id: Mapped[str | None] = mapped_column(String(32))
    shared_with: Mapped[list[str]] = mapped_column(JSON, default=list)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    node: Mapped[str | None] = mapped_column(String(63))
    """The node whose servers run its replicas (none: the first server to reconcile it
    claims it)."""


class ReplicaRow(Base):
    """A replica as its node published it, for servers of other nodes to route to.
    Written when the replica changes, and touched now and then so that readers can
    tell a node that went away (``control/placement.py``)."""

    __tablename__ = "replicas"
    __table_args__ = (Index("ix_replicas_endpoint", "endpoint"),)

    node: Mapped[str] = mapped_column(String(63), primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(100))
    machine: Mapped[str] = mapped_column(String(200))
    """The publishing machine, so that a reader knows whether a loopback address is its own."""
    generation: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16))
    restarts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]


class RouteRow(Base):
    __tablename__ = "routes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    spec: Mapped[dict[str, Any]]
    source: Mapped[str] = mapped_column(String(20))
    team_id: Mapped[str | None] = mapped_column(String(32))
    shared_with: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SecretRow(Base):
    """A provider credential, encrypted with the master secret (never stored in clear)."""

    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class RevisionRow(Base):
    """A counter per cached collection, bumped on every write, polled by caches."""

    __tablename__ = "revisions"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class AuditEventRow(Base):
    """One control-plane change: who, what, when, the resource before and after (secrets
    removed) and the request that made it. Written in the change's own transaction."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_resource", "resource_type", "resource_name"),
    )

    # SQLite only auto-increments an INTEGER primary key.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    actor_team_id: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_name: Mapped[str] = mapped_column(String(200))
    team_id: Mapped[str | None] = mapped_column(String(32))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    request_id: Mapped[str | None] = mapped_column(String(128))


class LimitRow(Base):
    """Rate limits of one key or team (an endpoint's live in its ``options.limits``)."""

    __tablename__ = "limits"

    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    subject: Mapped[str] = mapped_column(String(32), primary_key=True)
    """The key's or the team's id."""
    spec: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class BudgetRow(Base):
    __tablename__ = "budgets"

    scope: Mapped[str] = mapped_column(String(8), primary_key=True)
    subject: Mapped[str] = mapped_column(String(32), primary_key=True)
    period: Mapped[str] = mapped_column(String(8))
    soft_usd: Mapped[float | None] = mapped_column(Float)
    hard_usd: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class UsageRow(Base):
    """One answered (or failed) gateway request; written in batches, never updated."""

    __tablename__ = "usage"
    __table_args__ = (
        Index("ix_usage_at", "at"),
        Index("ix_usage_team_at", "team_id", "at"),
        Index("ix_usage_key_at", "key_id", "at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    at: Mapped[datetime]
    request_id: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str | None] = mapped_column(String(32))
    team_id: Mapped[str | None] = mapped_column(String(32))
    route: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[int] = mapped_column(Integer)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)
    cached: Mapped[bool] = mapped_column(Boolean)
    estimated: Mapped[bool] = mapped_column(Boolean)
