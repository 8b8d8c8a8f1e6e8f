"""The gateway's own options of an endpoint (``balancing``, ``queue``, ``limits``,
``price``, ``health_check``, ``log_prompts`` in its ``options``): what the router, the
gatekeeper and the health checker read, parsed once per version of the endpoint.

Which balancing strategies exist is the balancer registry's to say
(``gateway/balancing.py``); here a strategy is only a name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelplane.errors import first_invalid


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BalancingConfig(_Frozen):
    """``options.balancing``: a strategy name, or ``{"strategy": name, ...settings}``."""

    strategy: str = "least_outstanding"
    prefix_chars: int = Field(default=256, ge=1, le=100_000)
    """prefix_cache: how much of the prompt decides where it goes."""
    load_factor: float = Field(default=1.25, ge=1.0, le=10.0)
    """prefix_cache: how far above the average load one replica may go."""
    affinity_header: str = "x-session-id"
    """session_affinity: the request header that names the session (any case)."""

    @field_validator("affinity_header")
    @classmethod
    def _lower(cls, v: str) -> str:
        return v.lower()  # request headers are looked up by their lowercase names

    @classmethod
    def parse(cls, value: object) -> BalancingConfig:
        """From an endpoint's ``balancing`` option (absent, a name, or an object)."""
        if value is None:
            return cls()
        if isinstance(value, str):
            return cls(strategy=value)
        if isinstance(value, dict):
            return cls.model_validate(value)
        raise ValueError("balancing must be a strategy name or an object")


class QueueConfig(_Frozen):
    """``options.queue`` of an endpoint."""

    max_concurrency: int | None = Field(default=None, ge=1)
    """In-flight requests per replica; unset means no cap (the replica's own queue)."""
    max_waiting: int = Field(default=100, ge=0)
    """Requests that may wait for a slot when every replica is at its cap."""
    timeout_s: float = Field(default=30.0, gt=0)
    """How long one request may wait for a slot."""


class RateLimits(_Frozen):
    """The ``limits`` of a key, a team (``PATCH /api/keys/{id}``, ``PATCH
    /api/teams/{name}``) or an endpoint (``options.limits``); each is optional."""

    rpm: int | None = Field(default=None, ge=1)
    """Requests per minute."""
    tpm: int | None = Field(default=None, ge=1)
    """Tokens (prompt + completion) per minute."""
    concurrency: int | None = Field(default=None, ge=1)
    """Requests in flight at once (a stream counts until it ends)."""

    def __bool__(self) -> bool:
        return bool(self.rpm or self.tpm or self.concurrency)


class Price(_Frozen):
    """An endpoint's ``options.price``: US dollars per million tokens."""

    input_per_1m: float = Field(default=0.0, ge=0)
    output_per_1m: float = Field(default=0.0, ge=0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6


class HealthCheck(_Frozen):
    """``options.health_check`` of an external endpoint (``{}``: the defaults)."""

    interval_s: float = Field(default=10.0, ge=0.1)
    """Time between the end of one check and the start of the next."""
    timeout_s: float = Field(default=3.0, gt=0)
    """A check without an answer within this long fails."""
    unhealthy_after: int = Field(default=2, ge=1)
    """Failed checks in a row that take the endpoint out of service."""
    healthy_after: int = Field(default=1, ge=1)
    """Passed checks in a row that put it back."""
    path: str | None = Field(default=None, max_length=500, pattern=r"^/\S*$")
    """GET ``base_url`` + this instead of the provider's own check (required for
    ``bedrock`` and ``vertex``)."""


def _log_prompts(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


_PARSERS: dict[str, Callable[[Any], object]] = {
    "balancing": BalancingConfig.parse,
    "queue": QueueConfig.model_validate,
    "limits": RateLimits.model_validate,
    "price": Price.model_validate,
    "health_check": HealthCheck.model_validate,
    "log_prompts": _log_prompts,
}

GATEWAY_OPTIONS = frozenset(_PARSERS)
"""Endpoint options that the gateway reads; every other option goes to the engine (or
to the provider)."""


class GatewayOptions(_Frozen):
    """The gateway's options of one endpoint, every one with its default when absent."""

    balancing: BalancingConfig = BalancingConfig()
    queue: QueueConfig = QueueConfig()
    limits: RateLimits = RateLimits()
    price: Price = Price()
    health_check: HealthCheck | None = None
    """Set only for external endpoints that asked for active checks."""
    log_prompts: bool = False

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> GatewayOptions:
        """The gateway's options among an endpoint's ``options`` (the others are left
        alone); ``ValueError("<option>.<field>: why")`` for the first bad one."""
        return cls(**{name: _parse_one(name, options[name]) for name in _present(options)})

    @classmethod
    def load(cls, options: Mapping[str, Any], warn: Callable[[str, str], None]) -> GatewayOptions:
        """Like :meth:`parse`, for options already stored: one that no longer parses
        (written around the API's checks) keeps its default, and ``warn`` hears why."""
        parsed: dict[str, object] = {}
        for name in _present(options):
            try:
                parsed[name] = _parse_one(name, options[name])
            except ValueError as exc:
                warn(name, str(exc))
        return cls(**parsed)


def _present(options: Mapping[str, Any]) -> list[str]:
    return [n for n in _PARSERS if options.get(n) is not None]


def _parse_one(name: str, value: object) -> object:
    try:
        return _PARSERS[name](value)
    except ValidationError as exc:
        where, why = first_invalid(exc.errors())
        raise ValueError(
            f"{name}.{where}: {why}" if where != "body" else f"{name}: {why}"
        ) from None
    except ValueError as exc:
        msg = str(exc)
        raise ValueError(msg if msg.startswith(name) else f"{name}: {msg}") from None
