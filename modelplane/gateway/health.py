"""Active health checks of external endpoints (``options.health_check``; opt-in).

Local replicas are checked by their runtime (``/health``). An external endpoint has one
address, which passive outlier ejection only learns is dead from requests that failed
on it. With ``health_check`` set, one loop per endpoint asks the provider's ``health``
(a cheap read-only GET, e.g. the model list) every ``interval_s``: after
``unhealthy_after`` failures in a row the endpoint is out of service (its replica reads
failed, so a route falls back at once without trying it) and after ``healthy_after``
passes in a row it is back. An endpoint counts as healthy until checks say otherwise.

The checks follow the endpoints snapshot (whoever replaces it calls
:meth:`HealthChecker.sync`): a loop starts when an endpoint gets a ``health_check``,
restarts when it changes and stops when it goes. Each server process checks on its
own, so ``serve --workers N`` sends N checks per interval.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from modelplane.errors import ModelplaneError
from modelplane.gateway.router import Router
from modelplane.providers.base import Provider, Target, Timeouts
from modelplane.spec import HealthCheck
from modelplane.store.records import Endpoint
from modelplane.tasks import Loop, cancel

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Health:
    """What the checks of one endpoint have seen."""

    healthy: bool = True
    failures: int = 0
    """Failed checks in a row."""
    successes: int = 0
    """Passed checks in a row."""
    checked_at: datetime | None = None
    last_error: str | None = None
    """Why the latest failed check failed (kept after the endpoint recovers)."""

    def record(self, error: str | None, check: HealthCheck, at: datetime) -> bool:
        """Count one check (``error``: why it failed, ``None``: it passed); True when
        this one flipped the endpoint in or out of service."""
        self.checked_at = at
        if error is None:
            self.failures = 0
            self.successes += 1
            flip = not self.healthy and self.successes >= check.healthy_after
        else:
            self.successes = 0
            self.failures += 1
            self.last_error = error
            flip = self.healthy and self.failures >= check.unhealthy_after
        if flip:
            self.healthy = not self.healthy
        return flip

    def view(self) -> dict[str, Any]:
        if self.checked_at is None:
            status = "unchecked"
        else:
            status = "healthy" if self.healthy else "unhealthy"
        return {
            "status": status,
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
            "last_error": self.last_error,
            "consecutive_failures": self.failures,
            "consecutive_successes": self.successes,
        }


Upstream = Callable[[str], tuple[Provider, Target]]
"""An external endpoint's provider and address, credentials resolved (``Proxy.upstream``)."""


class HealthChecker:
    """The check loops of one server process (see the module docstring)."""

    def __init__(
        self,
        endpoints: Callable[[], Mapping[str, Endpoint]],
        router: Router,
        upstream: Upstream,
    ) -> None:
        self._endpoints = endpoints
        self._router = router
        self._upstream = upstream
        self._seen: Mapping[str, Endpoint] | None = None
        self._loops: dict[str, tuple[str, HealthCheck, Loop]] = {}
        self._health: dict[str, Health] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    def state(self, name: str) -> Health | None:
        """The checks' view of an endpoint, or ``None`` while none has started."""
        return self._health.get(name)

    async def close(self) -> None:
        loops = [entry[2] for entry in self._loops.values()]
        self._loops.clear()
        for loop in loops:
            await loop.close()
        for task in list(self._stopping):
            await cancel(task)

    def sync(self) -> None:
        """Start, restart and stop check loops to match the endpoints snapshot."""
        snapshot = self._endpoints()
        if snapshot is self._seen:  # the reconciler replaces the mapping on change
            return
        self._seen = snapshot
        wanted: dict[str, tuple[str, HealthCheck]] = {}
        for ep in snapshot.values():
            check = ep.spec.gateway.health_check
            if ep.provider is not None and check is not None:
                wanted[ep.name] = (ep.id, check)
        for name, (ep_id, check, loop) in list(self._loops.items()):
            if wanted.get(name) != (ep_id, check):
                task = loop.stop()  # cancelled now: no check of the old kind runs after this
                if task is not None:
                    self._stopping.add(task)
                    task.add_done_callback(self._stopping.discard)
                del self._loops[name]
                if name not in wanted or wanted[name][0] != ep_id:  # gone, or another one
                    self._health.pop(name, None)
                    self._router.set_health(name, None)
        for name, (ep_id, check) in wanted.items():
            if name not in self._loops:
                health = self._health.setdefault(name, Health())
                health.failures = health.successes = 0  # counted again under the new check
                loop = Loop(
                    f"check {name}",
                    functools.partial(self._check, name, check, health),
                    check.interval_s,
                    first_now=True,
                )
                loop.start()
                self._loops[name] = (ep_id, check, loop)

    async def _check(self, name: str, check: HealthCheck, health: Health) -> None:
        error = await self._probe(name, check)
        if health.record(error, check, datetime.now(UTC)):
            if health.healthy:
                log.info("endpoint '%s' passes its health check again; back in service", name)
            else:
                log.warning(
                    "endpoint '%s' failed %d health checks in a row (%s); out of service",
                    name,
                    health.failures,
                    error,
                )
            self._router.set_health(name, None if health.healthy else error)

    async def _probe(self, name: str, check: HealthCheck) -> str | None:
        """One check; why it failed, or ``None``. Reasons name statuses and exception
        classes only, never a URL, header or upstream body (they may hold secrets)."""
        try:
            provider, target = self._upstream(name)
            limit = Timeouts(connect_s=check.timeout_s, read_s=check.timeout_s)
            async with asyncio.timeout(check.timeout_s):
                await provider.health(target, timeouts=limit)
        except TimeoutError:
            return f"no answer within {check.timeout_s:g} s"
        except ModelplaneError as exc:
            return exc.message
        except (aiohttp.ClientError, OSError) as exc:
            return f"the request failed ({type(exc).__name__})"
        except Exception as exc:  # a provider's bug must not end the loop
            log.warning("the health check of '%s' raised %s", name, type(exc).__name__)
            return f"the check raised {type(exc).__name__}"
        return None
