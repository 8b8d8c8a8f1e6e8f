"""``GET /metrics``: Prometheus metrics of the gateway and the control plane (with
``serve --workers N``, of every worker together). Open by default, for Prometheus;
``metrics_require_key`` asks for a key with the ``read`` scope."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from modelplane.api.deps import PlatformDep
from modelplane.errors import NotFound, PermissionDenied
from modelplane.telemetry.metrics import CONTENT_TYPE

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(p: PlatformDep, request: Request) -> Response:
    if p.metrics is None:
        raise NotFound("metrics are switched off (MODELPLANE_METRICS_ENABLED=false)")
    if p.settings.metrics_require_key:
        caller = p.authenticate(request.headers.get("authorization"))
        if not caller.allows("read"):
            raise PermissionDenied(f"reading metrics needs the 'read' scope (role {caller.role})")
    if p.gauges is not None:
        await p.gauges.budgets()
    p.metrics.flush()
    # In multiprocess mode this reads every worker's files: off the event loop.
    body = await asyncio.to_thread(p.metrics.render)
    return Response(body, media_type=CONTENT_TYPE)
