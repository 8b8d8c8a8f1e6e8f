"""``/v1``: the OpenAI-compatible surface. The POST routes that carry the traffic are
served by ``server/fastpath.py`` before FastAPI routing; this router has the rest."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from modelplane.api.deps import InferenceDep, PlatformDep
from modelplane.api.openai_schema import Model, ModelList
from modelplane.api.openapi import BEARER, TAG
from modelplane.errors import ModelNotFound

router = APIRouter(prefix="/v1", tags=[TAG])


@router.get(
    "/models", openapi_extra=BEARER, response_model=None, responses={200: {"model": ModelList}}
)
async def models(platform: PlatformDep, caller: InferenceDep) -> dict[str, Any]:
    created = {ep.name: int(ep.created_at.timestamp()) for ep in platform.router.models()}
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": created.get(name, 0),
                "owned_by": "modelplane",
            }
            for name in platform.proxy.routes.names(caller.can_read)
        ],
    }


@router.get(
    "/models/{model:path}",
    openapi_extra=BEARER,
    response_model=None,
    responses={200: {"model": Model}},
)
async def model(model: str, platform: PlatformDep, caller: InferenceDep) -> dict[str, Any]:
    """One model of ``GET /v1/models``; another team's private one reads as missing."""
    route = platform.proxy.routes.lookup(model)
    if route is None or not caller.can_read(route.owner):
        raise ModelNotFound(model)
    try:
        created = int(platform.router.endpoint(model).created_at.timestamp())
    except ModelNotFound:
        created = 0  # a route or an alias, not an endpoint: as GET /v1/models says
    return {"id": model, "object": "model", "created": created, "owned_by": "modelplane"}
