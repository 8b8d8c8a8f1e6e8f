"""Request dependencies: the platform, and the caller's key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from modelplane.api.platform import Platform
from modelplane.errors import PermissionDenied
from modelplane.store.records import ApiKey


def platform(request: Request) -> Platform:
    p: Platform = request.app.state.platform
    return p


def caller(request: Request) -> ApiKey:
    return platform(request).keys.authenticate(request.headers.get("authorization"))


def admin(key: Annotated[ApiKey, Depends(caller)]) -> ApiKey:
    if key.role != "admin":
        raise PermissionDenied("this action needs an admin key")
    return key


PlatformDep = Annotated[Platform, Depends(platform)]
CallerDep = Annotated[ApiKey, Depends(caller)]
AdminDep = Annotated[ApiKey, Depends(admin)]
