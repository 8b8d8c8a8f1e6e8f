"""Control-API bodies. Unlike OpenAI bodies, unknown fields are refused."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from modelplane.errors import first_invalid
from modelplane.gateway.balancing import BalancingConfig
from modelplane.gateway.health import HealthCheck
from modelplane.gateway.router import QueueConfig
from modelplane.governance.gatekeeper import Price
from modelplane.governance.limits import RateLimits
from modelplane.identity import Role, Scope


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_balancing(options: dict[str, Any] | None) -> dict[str, Any] | None:
    """The gateway's own options (``balancing``, ``queue``, ``limits``, ``price``,
    ``log_prompts``, ``health_check``) are checked here; the engine's are checked by the
    engine when the endpoint is written, and whether a provider's health check needs a
    ``path`` by the endpoint service, which knows the provider."""
    for name, parse in (
        ("balancing", BalancingConfig.parse),
        ("queue", QueueConfig.model_validate),
        ("limits", RateLimits.model_validate),
        ("price", Price.model_validate),
        ("health_check", HealthCheck.model_validate),
    ):
        if options and name in options:
            try:
                parse(options[name])
            except ValidationError as exc:
                where, why = first_invalid(exc.errors())
                raise ValueError(f"{name}.{where}: {why}" if where else f"{name}: {why}") from None
    if options and not isinstance(options.get("log_prompts", False), bool):
        raise ValueError("log_prompts: must be true or false")
    return options


class EndpointCreate(_Strict):
    name: str = Field(min_length=1, max_length=63)
    engine: str | None = None
    """A built-in engine run by modelplane (default ``llamacpp``)…"""
    provider: str | None = None
    """…or an external provider (``openai``, ``ollama``, ``anthropic``, ``bedrock``,
    ``vertex``); its address and credential references go in ``options``."""
    model: str = Field(min_length=1)
    replicas: int = Field(default=1, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)
    team: str | None = None
    """The owning team (admins choose; team admins get their own; none: the platform)."""
    shared_with: list[str] | None = None
    """Team names that may use it too, or ``["*"]`` for all; default: the platform's
    endpoints are shared with everyone, a team's with nobody."""

    _balancing = field_validator("options")(_check_balancing)


class EndpointPatch(_Strict):
    model: str | None = Field(default=None, min_length=1)
    engine: str | None = None
    replicas: int | None = Field(default=None, ge=0)
    options: dict[str, Any] | None = None
    shared_with: list[str] | None = None

    _balancing = field_validator("options")(_check_balancing)

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class KeyCreate(_Strict):
    name: str = Field(min_length=1, max_length=200)
    role: Role = "member"
    team: str | None = None
    """The team the key belongs to (admins choose; team admins get their own)."""
    scopes: list[Scope] = Field(default_factory=list)
    """Narrow the key below its role, e.g. ``["inference"]``; empty: what the role allows."""
    expires_at: datetime | None = None
    limits: RateLimits | None = None
    """Rate limits of this key (``rpm``, ``tpm``, ``concurrency``)."""
    account: str | None = Field(default=None, min_length=1, max_length=100)
    """The user or service account (its name) the key acts for: the key is in the
    account's team, with at most the account's role."""


class LimitsPatch(_Strict):
    limits: RateLimits | None
    """The new rate limits (``rpm``, ``tpm``, ``concurrency``, each optional); ``null``
    removes them."""


class BudgetPut(_Strict):
    period: Literal["day", "month", "total"] = "month"
    """``day`` or ``month`` (calendar, UTC), or ``total``."""
    soft_usd: float | None = Field(default=None, ge=0)
    """Past this, the budget reports ``soft_exceeded`` (and the server logs it once)."""
    hard_usd: float | None = Field(default=None, ge=0)
    """At this, requests are refused (429 ``insufficient_quota``) until the period ends."""


class TeamCreate(_Strict):
    name: str = Field(min_length=1, max_length=63)


class ServiceAccountCreate(_Strict):
    name: str = Field(min_length=1, max_length=63)
    """Unique across users and service accounts; a-z, 0-9, '.', '_', '-'."""
    team: str | None = None
    """Its team (admins choose; team admins get their own); none only for admins."""
    role: Role = "member"
    """The most its keys may do: a key's role is never above its account's."""


class UserCreate(ServiceAccountCreate):
    email: str | None = Field(default=None, min_length=3, max_length=254)
    """Matched (case-insensitively) against the email claim of JWTs."""


class ServiceAccountPatch(_Strict):
    role: Role | None = None
    disabled: bool | None = None
    """``true``: its keys (and a user's JWTs) are refused until it is enabled again."""

    def changes(self) -> dict[str, Any]:
        """The fields the body sets (``null`` included: it clears a user's email)."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class UserPatch(ServiceAccountPatch):
    email: str | None = Field(default=None, min_length=3, max_length=254)
    """``null`` removes it."""


class SecretPut(_Strict):
    value: SecretStr = Field(min_length=1)


class PullRequest(_Strict):
    model: str = Field(min_length=1, max_length=300)
