"""Control-API bodies. Unlike OpenAI bodies, unknown fields are refused."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelplane.errors import first_invalid
from modelplane.gateway.balancing import BalancingConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_balancing(options: dict[str, Any] | None) -> dict[str, Any] | None:
    if options and "balancing" in options:
        try:
            BalancingConfig.parse(options["balancing"])
        except ValidationError as exc:
            where, why = first_invalid(exc.errors())
            raise ValueError(f"balancing.{where}: {why}") from None
    return options


class EndpointCreate(_Strict):
    name: str = Field(min_length=1, max_length=63)
    engine: str = "llamacpp"
    model: str = Field(min_length=1)
    replicas: int = Field(default=1, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)

    _balancing = field_validator("options")(_check_balancing)


class EndpointPatch(_Strict):
    model: str | None = Field(default=None, min_length=1)
    engine: str | None = None
    replicas: int | None = Field(default=None, ge=0)
    options: dict[str, Any] | None = None

    _balancing = field_validator("options")(_check_balancing)

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class KeyCreate(_Strict):
    name: str = Field(min_length=1, max_length=200)
    role: Literal["admin", "member"] = "member"
    expires_at: datetime | None = None
