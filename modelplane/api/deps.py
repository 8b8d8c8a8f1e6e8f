"""Request dependencies: the platform, and who is calling with what permission.

Route functions ask for the permission they need (``Inference``, ``Read``, ``Write``);
which resources the caller may touch is decided by the services, per resource.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from modelplane.errors import PermissionDenied
from modelplane.identity import Caller

if TYPE_CHECKING:
    # The server assembles the platform and mounts these routers; routers only name its
    # type (the layers run server → api, never back).
    from modelplane.server.platform import Platform


# Every dependency is ``async``: FastAPI runs plain functions in a thread pool, which
# costs two thread hops per request on the hot path (see bench/README.md).
async def platform(request: Request) -> Any:
    p: Platform = request.app.state.platform
    return p


async def caller(request: Request) -> Caller:
    p: Platform = request.app.state.platform
    return p.authenticate(request.headers.get("authorization"))


def _needs(scope: str, what: str) -> Callable[[Caller], Awaitable[Caller]]:
    async def check(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if not who.allows(scope):
            raise PermissionDenied(f"this key cannot {what} (role {who.role}, needs '{scope}')")
        return who

    return check


async def admin(who: Annotated[Caller, Depends(caller)]) -> Caller:
    if not who.is_admin:
        raise PermissionDenied("this action needs an admin key")
    return who


if TYPE_CHECKING:
    PlatformDep = Annotated[Platform, Depends(platform)]
else:  # FastAPI reads the annotation at run time; the dependency is what it uses
    PlatformDep = Annotated[Any, Depends(platform)]
CallerDep = Annotated[Caller, Depends(caller)]
InferenceDep = Annotated[Caller, Depends(_needs("inference", "call models"))]
ReadDep = Annotated[Caller, Depends(_needs("read", "read the control API"))]
WriteDep = Annotated[Caller, Depends(_needs("write", "change anything"))]
AdminDep = Annotated[Caller, Depends(admin)]
