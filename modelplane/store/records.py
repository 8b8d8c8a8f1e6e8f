"""Plain records the store hands to services (ORM rows stay inside ``store``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from modelplane.identity import UNSHARED, Owned
from modelplane.spec import EndpointSpec
from modelplane.values import value


@dataclass(frozen=True, slots=True)
class Team:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    key_hash: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    team_id: str | None = None
    scopes: tuple[str, ...] = ()
    account_id: str | None = None
    """The user or service account the key acts for, if any."""


AccountKind = Literal["user", "service"]


@dataclass(frozen=True, slots=True)
class Account:
    """A user or a service account: who a key or a JWT stands for."""

    id: str
    kind: AccountKind
    name: str
    email: str | None
    """Users only; lower-case."""
    team_id: str | None
    """``None`` only for platform admins."""
    role: str
    disabled_at: datetime | None
    created_at: datetime
    created_by: str

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    @property
    def label(self) -> str:
        """``user:alice`` or ``service:ci-bot``: how callers and audit events name it."""
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    name: str
    engine: str
    provider: str | None
    """Set for endpoints served by an external provider (no local replicas)."""
    model: str
    replicas: int
    options: dict[str, Any]
    """As written (the API shows them so); the gateway reads ``spec``."""
    generation: int
    created_at: datetime
    updated_at: datetime
    owner: Owned = UNSHARED
    resources: dict[str, Any] = field(default_factory=dict)
    autoscaling: dict[str, Any] | None = None
    adapters: list[dict[str, Any]] = field(default_factory=list)
    spec: EndpointSpec = field(init=False, repr=False, compare=False)
    """Everything above parsed, once, when the record is made (``modelplane.spec``)."""

    def __post_init__(self) -> None:
        spec = EndpointSpec.load(
            self.name,
            external=self.provider is not None,
            options=self.options,
            resources=self.resources,
            autoscaling=self.autoscaling,
            adapters=self.adapters,
        )
        object.__setattr__(self, "spec", spec)

    node: str | None = None
    """The node that runs its replicas (local endpoints; none until one claims it)."""

    def engine_options(self) -> dict[str, Any]:
        """The options the engine gets (every option the gateway does not read)."""
        return self.spec.engine_options


@dataclass(frozen=True, slots=True)
class Route:
    id: str
    name: str
    spec: dict[str, Any]
    source: str
    """``api`` (written through the control API) or ``config`` (declared in the YAML)."""
    created_at: datetime
    updated_at: datetime
    owner: Owned = UNSHARED


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    at: datetime
    actor: str
    actor_team_id: str | None
    action: str
    resource_type: str
    resource_name: str
    team_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Budget:
    scope: str
    """``key`` or ``team``."""
    subject: str
    """The key's or the team's id."""
    period: str
    """``day`` or ``month`` (calendar, UTC), or ``total``."""
    soft_usd: float | None
    hard_usd: float | None
    created_at: datetime
    updated_at: datetime


@value
class Usage:
    """What one request used; one record per request."""

    id: str
    at: datetime
    """When the request arrived."""
    request_id: str
    key_id: str | None
    team_id: str | None
    route: str
    """The public model name the client asked for."""
    endpoint: str | None
    """The endpoint that answered (None: a cache hit, or nothing answered)."""
    status: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    cached: bool
    estimated: bool
    """Token counts were estimated (the answer carried no ``usage``)."""
