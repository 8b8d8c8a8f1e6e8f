"""API keys: minted once, stored as a SHA-256 hash, checked from an in-process cache.

Keys carry 32 random bytes, so a plain SHA-256 is a safe verifier (no salt or slow
hash needed: there is nothing to brute-force), and the lookup is by hash, so no
comparison against a secret leaks timing. The cache is reloaded whenever the ``keys``
revision in the database changes, polled once a second, so a key revoked through any
server process stops working everywhere within about a second; there is no database
query per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from modelplane.errors import AuthenticationError, InvalidRequest, NotFound
from modelplane.store.db import Database
from modelplane.store.records import ApiKey
from modelplane.store.repos import KeyRepo, revision

log = logging.getLogger(__name__)

KEY_PREFIX = "mp-"
ROLES = ("admin", "member")


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def mint() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class NewKey:
    key: ApiKey
    secret: str


def key_view(k: ApiKey) -> dict[str, object]:
    return {
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "role": k.role,
        "created_at": k.created_at.isoformat(),
        "expires_at": k.expires_at.isoformat() if k.expires_at else None,
        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
        "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
    }


class KeyService:
    def __init__(self, db: Database, refresh_interval_s: float = 1.0) -> None:
        self.repo = KeyRepo(db)
        self.db = db
        self.refresh_interval_s = refresh_interval_s
        self._by_hash: dict[str, ApiKey] = {}
        self._rev = -1
        self._used: dict[str, datetime] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.create_task(self._refresh_loop(), name="key cache")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._flush_used()

    async def reload(self) -> None:
        rev = await revision(self.db, "keys")
        keys = await self.repo.all()
        self._by_hash = {k.key_hash: k for k in keys if k.revoked_at is None}
        self._rev = rev

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval_s)
            try:
                if await revision(self.db, "keys") != self._rev:
                    await self.reload()
                await self._flush_used()
            except Exception:
                log.exception("refreshing the key cache failed; keeping the last one")

    async def _flush_used(self) -> None:
        used, self._used = self._used, {}
        if used:
            await self.repo.touch(used)

    def authenticate(self, authorization: str | None) -> ApiKey:
        """The key behind an ``Authorization: Bearer …`` header, or 401."""
        if not authorization:
            raise AuthenticationError("missing API key: send it as 'Authorization: Bearer <key>'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("malformed Authorization header: expected 'Bearer <key>'")
        key = self._by_hash.get(hash_key(token))
        if key is None:
            raise AuthenticationError("invalid API key: it is unknown or has been revoked")
        now = datetime.now(UTC)
        if key.expires_at is not None and key.expires_at <= now:
            raise AuthenticationError("this API key has expired; create a new one")
        self._used[key.id] = now
        return key

    async def create(
        self,
        name: str,
        role: str = "member",
        expires_at: datetime | None = None,
        secret: str | None = None,
    ) -> NewKey:
        if role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", param="role")
        if expires_at is not None and expires_at <= datetime.now(UTC):
            raise InvalidRequest("expires_at is in the past", param="expires_at")
        token = secret or mint()
        key = await self.repo.add(
            name=name, prefix=token[:10], key_hash=hash_key(token), role=role, expires_at=expires_at
        )
        await self.reload()
        return NewKey(key, token)

    async def list(self) -> list[ApiKey]:
        return await self.repo.all()

    async def revoke(self, key_id: str) -> ApiKey:
        key = await self.repo.revoke(key_id)
        if key is None:
            raise NotFound(f"no API key with id '{key_id}'")
        await self.reload()
        return key

    async def bootstrap_admin(self, path: Path, preset: str | None = None) -> str | None:
        """On first start (no keys at all): mint an admin key, write it to ``path`` with
        mode 0600 and return it, so the caller can print it once."""
        if await self.repo.count() > 0:
            return None
        new = await self.create("admin", role="admin", secret=preset)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new.secret + "\n")
        os.chmod(path, 0o600)
        return new.secret
