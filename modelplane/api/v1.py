"""``/v1``: the OpenAI-compatible surface. The POST routes that carry the traffic are
served by ``server/fastpath.py`` before FastAPI routing; this router has the rest."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from modelplane.api.deps import InferenceDep, PlatformDep
from modelplane.api.openai_schema import ModelList
from modelplane.api.openapi import BEARER, TAG

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
