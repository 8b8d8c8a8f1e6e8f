"""The seam between the request path and governance (limits, budgets, usage).

Data flows one way. ``Proxy.forward`` asks the governor to ``admit`` each request before
anything is sent upstream, which may refuse it (429 for a rate limit or a spent budget)
or hands back a :class:`Permit`: plain data, whose ``headers`` (``x-ratelimit-*``) go on
the answer or the error. Once the request's one answer reader
(:mod:`modelplane.telemetry.answers`) has read the answer, or the request failed, the
permit is handed to ``settle`` with that :class:`~modelplane.telemetry.answers.Answer`,
exactly once; settling queues the usage record and gives back what the permit held, off
the request path. Nothing here may wait on the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from modelplane.identity import Caller
from modelplane.telemetry.answers import Answer


class Peeked(Protocol):
    @property
    def body(self) -> Mapping[str, Any]: ...


class Request(Protocol):
    """What governance reads of a request (``gateway.inbound.Inbound``)."""

    @property
    def request_id(self) -> str: ...

    @property
    def body(self) -> bytes: ...

    @property
    def peeked(self) -> Peeked: ...

    @property
    def caller(self) -> Caller: ...


class Route(Protocol):
    """What governance reads of a resolved route (``gateway.routes.ResolvedRoute``)."""

    @property
    def name(self) -> str: ...

    @property
    def first(self) -> str:
        """The endpoint whose limits the request counts against."""
        ...


class Permit(Protocol):
    @property
    def headers(self) -> Mapping[str, str]:
        """Headers for the client's answer or error (``x-ratelimit-*``)."""
        ...


P = TypeVar("P", bound=Permit)


class Governor(Protocol[P]):
    """What the gateway sees of governance: nothing else than these two."""

    async def admit(self, req: Request, route: Route) -> P:
        """A permit for ``req``, or ``RateLimited`` / ``BudgetExceeded``."""
        ...

    def settle(self, permit: P, answer: Answer) -> None:
        """How the request admitted under ``permit`` was answered (once per permit)."""
        ...


class _OpenPermit:
    __slots__ = ()
    headers: Mapping[str, str] = {}


class Open:
    """No limits, no accounting: governance switched off."""

    _permit = _OpenPermit()

    async def admit(self, req: Request, route: Route) -> _OpenPermit:
        return self._permit

    def settle(self, permit: _OpenPermit, answer: Answer) -> None:
        pass
