"""Control-API bodies. Unlike OpenAI bodies, unknown fields are refused."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointCreate(_Strict):
    name: str = Field(min_length=1, max_length=63)
    engine: str = "llamacpp"
    model: str = Field(min_length=1)
    replicas: int = Field(default=1, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)


class EndpointPatch(_Strict):
    model: str | None = Field(default=None, min_length=1)
    engine: str | None = None
    replicas: int | None = Field(default=None, ge=0)
    options: dict[str, Any] | None = None

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class KeyCreate(_Strict):
    name: str = Field(min_length=1, max_length=200)
    role: Literal["admin", "member"] = "member"
    expires_at: datetime | None = None
