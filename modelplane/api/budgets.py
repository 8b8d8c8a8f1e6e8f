"""``/api/budgets``: spending limits of keys and teams, with what was spent.

``/api/budgets/team/{name}`` and ``/api/budgets/key/{id}``: ``PUT`` (admins for teams;
admins and the team's admins for keys), ``GET``, ``DELETE``; ``GET /api/budgets`` lists
the budgets the caller may see.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from modelplane.api.deps import PlatformDep, ReadDep, WriteDep
from modelplane.api.schemas import BudgetPut
from modelplane.control.subjects import Scope

router = APIRouter(prefix="/api/budgets", tags=["budgets"])


@router.get("")
async def list_(p: PlatformDep, who: ReadDep) -> dict[str, Any]:
    return {"data": await p.governance.budgets.list(who)}


@router.put("/{scope}/{ref}")
async def put(
    scope: Scope, ref: str, body: BudgetPut, p: PlatformDep, who: WriteDep, response: Response
) -> dict[str, Any]:
    view, created = await p.governance.budgets.put(who, scope, ref, **body.model_dump())
    response.status_code = 201 if created else 200
    return view


@router.get("/{scope}/{ref}")
async def get(scope: Scope, ref: str, p: PlatformDep, who: ReadDep) -> dict[str, Any]:
    return await p.governance.budgets.get(who, scope, ref)


@router.delete("/{scope}/{ref}", status_code=204)
async def delete(scope: Scope, ref: str, p: PlatformDep, who: WriteDep) -> Response:
    await p.governance.budgets.delete(who, scope, ref)
    return Response(status_code=204)
