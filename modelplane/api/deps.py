"""Request dependencies: the platform, and who is calling with what permission.

Route functions ask for the permission they need (``Inference``, ``Read``, ``Write``);
which resources the caller may touch is decided by the services, per resource.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from modelplane.api.platform import Platform
from modelplane.errors import PermissionDenied
from modelplane.identity import Caller


def platform(request: Request) -> Platform:
    p: Platform = request.app.state.platform
    return p


def caller(request: Request) -> Caller:
    return platform(request).authenticate(request.headers.get("authorization"))


def _needs(scope: str, what: str) -> Callable[[Caller], Caller]:
    def check(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if not who.allows(scope):
            raise PermissionDenied(f"this key cannot {what} (role {who.role}, needs '{scope}')")
        return who

    return check


def admin(who: Annotated[Caller, Depends(caller)]) -> Caller:
    if not who.is_admin:
        raise PermissionDenied("this action needs an admin key")
    return who


PlatformDep = Annotated[Platform, Depends(platform)]
CallerDep = Annotated[Caller, Depends(caller)]
InferenceDep = Annotated[Caller, Depends(_needs("inference", "call models"))]
ReadDep = Annotated[Caller, Depends(_needs("read", "read the control API"))]
WriteDep = Annotated[Caller, Depends(_needs("write", "change anything"))]
AdminDep = Annotated[Caller, Depends(admin)]
