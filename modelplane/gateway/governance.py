"""The seam between the request path and governance (limits, budgets, usage).

``Proxy.forward`` asks the governor to ``admit`` each request before anything is sent
upstream (which may refuse it: 429 for a rate limit or a spent budget), and hands the
answer to the permit's ``complete`` (or the failure to ``fail``) afterwards. A permit
adds its headers (``x-ratelimit-*``), may wrap a stream to see its usage at the end,
and records usage off the request path. Nothing here may wait on the database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from modelplane.providers.base import Reply

if TYPE_CHECKING:
    from modelplane.gateway.inbound import Inbound
    from modelplane.gateway.routes import ResolvedRoute


class Permit(Protocol):
    def complete(self, reply: Reply) -> Reply:
        """The answer on its way to the client; ``x-modelplane-target`` names the endpoint
        that served it (absent for cache hits)."""
        ...

    def fail(self, error: BaseException) -> None:
        """The request failed before an answer (the error is about to be rendered)."""
        ...


class Governor(Protocol):
    async def admit(self, req: Inbound, route: ResolvedRoute) -> Permit: ...


class _OpenPermit:
    def complete(self, reply: Reply) -> Reply:
        return reply

    def fail(self, error: BaseException) -> None:
        pass


class Open:
    """No limits, no accounting: governance switched off."""

    _permit = _OpenPermit()

    async def admit(self, req: Inbound, route: ResolvedRoute) -> Permit:
        return self._permit
