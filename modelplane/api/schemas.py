"""Control-API bodies. Unlike OpenAI bodies, unknown fields are refused."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from modelplane.identity import Role, Scope
from modelplane.spec import Adapter, Autoscaling, GatewayOptions, RateLimits, Resources


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_options(options: dict[str, Any] | None) -> dict[str, Any] | None:
    """The gateway's own options (``balancing``, ``queue``, ``limits``, ``price``,
    ``log_prompts``, ``health_check``), by the spec; the endpoint service checks the rest
    (the engine's or the provider's) when the endpoint is written."""
    if options:
        GatewayOptions.parse(options)
    return options


_SECTIONS: dict[str, Any] = {"resources": {}, "autoscaling": None, "adapters": []}
"""The spec's sections of an endpoint body, and what each is when absent."""


def _sections(body: BaseModel) -> dict[str, Any]:
    """``resources``, ``autoscaling`` and ``adapters`` as stored: only what was set."""
    out: dict[str, Any] = {}
    for name in _SECTIONS:
        value = getattr(body, name)
        if isinstance(value, list):
            out[name] = [a.model_dump(exclude_none=True) for a in value]
        elif isinstance(value, BaseModel):
            out[name] = value.model_dump(exclude_defaults=name == "resources")
        else:
            out[name] = value
    return out


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
    resources: Resources | None = None
    """What one replica needs: ``cpu`` (cores), ``memory`` (``4Gi`` or bytes), ``gpus``,
    ``gpu_type``, ``node_selector``, ``tolerations``."""
    autoscaling: Autoscaling | None = None
    """Replica bounds for whoever scales the endpoint: ``min_replicas``,
    ``max_replicas``, ``target_in_flight`` per replica, ``scale_down_idle_s``."""
    adapters: list[Adapter] | None = None
    """LoRA adapters served beside the model: ``name`` (unique), ``source`` (a path,
    ``file:<id>`` or ``hf://owner/repo``), ``scale``; needs an engine that serves them."""
    node: str | None = Field(default=None, max_length=63)
    """The node whose servers run its replicas (``MODELPLANE_NODE_NAME``); default: the
    node of the server that creates it."""

    _options = field_validator("options")(_check_options)

    def fields(self) -> dict[str, Any]:
        """The body as the endpoint service takes it (the spec's sections as JSON)."""
        return {**self.model_dump(exclude=set(_SECTIONS)), **_sections(self)}


class EndpointPatch(_Strict):
    model: str | None = Field(default=None, min_length=1)
    engine: str | None = None
    replicas: int | None = Field(default=None, ge=0)
    options: dict[str, Any] | None = None
    shared_with: list[str] | None = None
    resources: Resources | None = None
    """Replaces what one replica needs; ``null`` or ``{}``: nothing asked for."""
    autoscaling: Autoscaling | None = None
    """Replaces the replica bounds; ``null`` removes them."""
    adapters: list[Adapter] | None = None
    """Replaces the adapters; ``[]`` or ``null`` removes them."""

    _options = field_validator("options")(_check_options)

    def changes(self) -> dict[str, Any]:
        changes = self.model_dump(exclude_none=True, exclude=set(_SECTIONS))
        for name, value in _sections(self).items():
            if name in self.model_fields_set:  # sent as null: cleared, not left alone
                changes[name] = _SECTIONS[name] if value is None else value
        return changes


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
