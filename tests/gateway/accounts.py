"""Teams, keys and usage records for governance tests, through the real API and the
real database."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from modelplane.config import Settings
from modelplane.store.db import Database
from modelplane.store.governance import UsageRepo
from modelplane.store.records import Usage
from tests.helpers import Server


@dataclass(frozen=True)
class Key:
    id: str
    name: str
    secret: str

    def http(self, server: Server) -> httpx.Client:
        return httpx.Client(
            base_url=server.base_url,
            headers={"authorization": f"Bearer {self.secret}"},
            timeout=30,
        )


def make_team(server: Server, *, limits: dict[str, int] | None = None) -> str:
    name = f"team-{uuid.uuid4().hex[:8]}"
    resp = server.http.post("/api/teams", json={"name": name})
    assert resp.status_code == 201, resp.text
    if limits:
        resp = server.http.patch(f"/api/teams/{name}", json={"limits": limits})
        assert resp.status_code == 200, resp.text
    return name


def make_key(
    server: Server,
    *,
    team: str | None = None,
    role: str = "member",
    limits: dict[str, int] | None = None,
) -> Key:
    name = f"key-{uuid.uuid4().hex[:8]}"
    body: dict[str, Any] = {"name": name, "role": role, "team": team}
    if limits:
        body["limits"] = limits
    resp = server.http.post("/api/keys", json=body)
    assert resp.status_code == 201, resp.text
    data = resp.json()
    assert data["limits"] == (limits or None)
    return Key(data["id"], name, data["key"])


def chat_body(content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "up", "messages": [{"role": "user", "content": content}], **extra}


def usage_records(database_url: str) -> list[Usage]:
    """Every usage record in the server's database, read directly."""

    async def read() -> list[Usage]:
        db = Database(Settings(database_url=database_url).sqlalchemy_url)
        try:
            return await UsageRepo(db).all()
        finally:
            await db.close()

    return asyncio.run(read())
