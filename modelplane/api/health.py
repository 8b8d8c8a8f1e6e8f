"""``/healthz`` (the process is alive) and ``/readyz`` (it can do its job)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from modelplane.api.deps import PlatformDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(p: PlatformDep) -> Any:
    checks: dict[str, str] = {}
    try:
        await p.db.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable ({type(exc).__name__})"
    checks["reconciler"] = "ok" if p.reconciler.running else "not running"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )
