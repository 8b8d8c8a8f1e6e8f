"""API keys: minted once, stored as a SHA-256 hash, checked from an in-process cache.

Keys carry 32 random bytes, so a plain SHA-256 is a safe verifier (no salt or slow
hash needed: there is nothing to brute-force), and the lookup is by hash, so no
comparison against a secret leaks timing. The cache is reloaded whenever the ``keys``
or the ``accounts`` revision in the database changes (the process's revision watcher
looks once a second), so a key revoked, or an account disabled or deleted, through any
server process stops working everywhere within about a second; there is no database
query per request.

A key may act for a user or service account (``account_id``): it is in the account's
team, and its effective role is the lower of its own and the account's, at creation
and again whenever the account changes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from modelplane.control.audit import AuditLog
from modelplane.control.jwt import looks_like_jwt
from modelplane.control.snapshot import Snapshot
from modelplane.errors import (
    AuthenticationError,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
)
from modelplane.identity import ROLES, SCOPES, Caller, Role, lower_role
from modelplane.store.accounts import AccountRepo
from modelplane.store.db import Database
from modelplane.store.records import Account, ApiKey
from modelplane.store.repos import KeyRepo
from modelplane.tasks import Loop

log = logging.getLogger(__name__)

KEY_PREFIX = "mp-"


BOOTSTRAP = Caller("system:bootstrap", "admin")


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def mint() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class NewKey:
    key: ApiKey
    secret: str


def _role(value: str) -> Role:
    return ROLES[ROLES.index(value)]


def caller_of(k: ApiKey, account: Account | None = None) -> Caller:
    """The caller a key stands for; with its account, at the lower of the two roles."""
    role = _role(k.role)
    if account is None:
        return Caller(f"key:{k.id}", role, k.team_id, k.id, frozenset(k.scopes))
    role = lower_role(role, _role(account.role))
    return Caller(f"key:{k.id}", role, k.team_id, k.id, frozenset(k.scopes), account.label)


def key_view(k: ApiKey, team: str | None = None, account: str | None = None) -> dict[str, object]:
    return {
        "id": k.id,
        "name": k.name,
        "prefix": k.prefix,
        "role": k.role,
        "team": team,
        "account": account,
        "scopes": list(k.scopes),
        "created_at": k.created_at.isoformat(),
        "expires_at": k.expires_at.isoformat() if k.expires_at else None,
        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
        "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
    }


def audited(k: ApiKey) -> dict[str, object]:
    """A key as the audit log records it: its API view (no hash, no secret), with the
    team's and the account's ids, as this service does not know their names."""
    view = key_view(k)
    del view["team"], view["account"]
    return {**view, "team_id": k.team_id, "account_id": k.account_id}


class KeyService(Snapshot):
    """Live keys, rebuilt when keys or accounts change."""

    def __init__(self, db: Database, flush_interval_s: float = 1.0) -> None:
        super().__init__(db)
        self.repo = KeyRepo(db)
        self.accounts = AccountRepo(db)
        self.audit = AuditLog(db)
        self.flush_interval_s = flush_interval_s
        """How often the keys' last use is written (no query while none was used)."""
        self._by_hash: dict[str, tuple[ApiKey, Caller, str | None, float]] = {}
        """Live keys by hash: the key, its caller, why it is refused (its account is
        disabled) if it is, and when it expires (a POSIX time: comparing one costs less
        than making a ``datetime`` per request)."""
        self._used: dict[str, float] = {}
        """Keys used since the last flush, and when (POSIX time)."""
        self._flusher = Loop("recording the keys' last use", self._flush_used, flush_interval_s)

    async def start(self) -> None:
        await super().start()
        self._flusher.start()

    async def close(self) -> None:
        await self._flusher.close()
        await self._flush_used()

    @property
    def watches(self) -> tuple[str, ...]:
        return ("keys", "accounts")

    async def load(self) -> None:
        keys = await self.repo.all()
        accounts = {a.id: a for a in await self.accounts.all()}
        by_hash: dict[str, tuple[ApiKey, Caller, str | None, float]] = {}
        for k in keys:
            account = accounts.get(k.account_id) if k.account_id else None
            if k.revoked_at is not None or (k.account_id and account is None):
                continue
            refusal = None
            if account is not None and account.disabled:
                refusal = (
                    f"this API key belongs to {account.label}, which is disabled; "
                    "ask an admin to enable it"
                )
            expires = math.inf if k.expires_at is None else k.expires_at.timestamp()
            by_hash[k.key_hash] = (k, caller_of(k, account), refusal, expires)
        self._by_hash = by_hash

    async def _flush_used(self) -> None:
        used, self._used = self._used, {}
        if used:
            await self.repo.touch({k: datetime.fromtimestamp(t, UTC) for k, t in used.items()})

    def authenticate(self, authorization: str | None) -> Caller:
        """The key behind an ``Authorization: Bearer …`` header, or 401."""
        if not authorization:
            raise AuthenticationError("missing API key: send it as 'Authorization: Bearer <key>'")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("malformed Authorization header: expected 'Bearer <key>'")
        found = self._by_hash.get(hash_key(token))
        if found is None:
            if looks_like_jwt(token):
                raise AuthenticationError(
                    "this server does not accept JWTs (no issuer is configured: see the "
                    "'jwt' setting); use an API key"
                )
            raise AuthenticationError("invalid API key: it is unknown or has been revoked")
        key, caller, refusal, expires = found
        if refusal is not None:
            raise AuthenticationError(refusal)
        now = time.time()
        if expires <= now:
            raise AuthenticationError("this API key has expired; create a new one")
        self._used[key.id] = now
        return caller

    async def create(
        self,
        caller: Caller,
        name: str,
        role: str = "member",
        expires_at: datetime | None = None,
        *,
        team_id: str | None = None,
        scopes: tuple[str, ...] = (),
        secret: str | None = None,
        account: str | None = None,
    ) -> NewKey:
        """Admins mint any key; team admins mint keys of their own team, up to their own
        role; nobody else mints keys. A key for an ``account`` (its name) is in the
        account's team, at no more than the account's role."""
        if role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", param="role")
        bad = sorted(set(scopes) - set(SCOPES))
        if bad:
            raise InvalidRequest(
                f"unknown scope {bad[0]!r}; scopes are {', '.join(SCOPES)}", param="scopes"
            )
        if not caller.allows("write") or not (caller.is_admin or caller.role == "team_admin"):
            raise PermissionDenied("creating keys needs an admin or team_admin key")
        if not caller.is_admin:
            if role == "admin":
                raise PermissionDenied("only an admin can create admin keys")
            if team_id not in (None, caller.team_id):
                raise PermissionDenied("you can only create keys for your own team")
            team_id = caller.team_id
        if expires_at is not None and expires_at <= datetime.now(UTC):
            raise InvalidRequest("expires_at is in the past", param="expires_at")
        owner = None
        if account is not None:
            owner, team_id = await self._account_for(caller, account, team_id)
            role = lower_role(_role(role), _role(owner.role))
        token = secret or mint()
        async with self.db.transaction():
            key = await self.repo.add(
                name=name,
                prefix=token[:10],
                key_hash=hash_key(token),
                role=role,
                expires_at=expires_at,
                team_id=team_id,
                scopes=tuple(dict.fromkeys(scopes)),
                account_id=owner.id if owner else None,
            )
            await self.audit.record(
                caller, "key.create", "key", key.id, None, audited(key), key.team_id
            )
        await self.reload()
        return NewKey(key, token)

    async def _account_for(
        self, caller: Caller, name: str, team_id: str | None
    ) -> tuple[Account, str | None]:
        """The account a new key will act for, and the key's team (the account's). Read
        from the database: an account created through another process a moment ago
        counts. Another team's account is as unknown as a missing one."""
        found = await self.accounts.get(name)
        visible = found is not None and (
            caller.is_admin or (found.team_id is not None and found.team_id == caller.team_id)
        )
        if found is None or not visible:
            raise InvalidRequest(f"no account named '{name}'", param="account")
        if found.disabled:
            raise Conflict(f"{found.label} is disabled; enable it before giving it keys")
        if team_id is not None and team_id != found.team_id:
            raise InvalidRequest(
                f"a key of {found.label} belongs to the account's team; leave 'team' out",
                param="team",
            )
        return found, found.team_id

    def _visible(self, caller: Caller, key: ApiKey) -> bool:
        return caller.is_admin or (
            caller.role == "team_admin"
            and caller.team_id is not None
            and key.team_id == caller.team_id
        )

    async def list(self, caller: Caller) -> list[ApiKey]:
        if not (caller.is_admin or caller.role == "team_admin") or not caller.allows("read"):
            raise PermissionDenied("listing keys needs an admin or team_admin key")
        return [k for k in await self.repo.all() if self._visible(caller, k)]

    async def revoke(self, caller: Caller, key_id: str) -> ApiKey:
        if not caller.allows("write"):
            raise PermissionDenied("revoking keys needs a key with the 'write' scope")
        key = await self.repo.get(key_id)
        if key is None or not self._visible(caller, key):
            raise NotFound(f"no API key with id '{key_id}'")
        async with self.db.transaction():
            revoked = await self.repo.revoke(key_id)
            assert revoked is not None
            await self.audit.record(
                caller, "key.revoke", "key", key_id, audited(key), audited(revoked), key.team_id
            )
        await self.reload()
        return revoked

    async def rotate(self, caller: Caller, key_id: str) -> NewKey:
        """A new secret for the same key (id, name, role, team, limits, budget): the old
        secret stops working on every server within about a second."""
        if not caller.allows("write"):
            raise PermissionDenied("rotating keys needs a key with the 'write' scope")
        key = await self.repo.get(key_id)
        if key is None or not self._visible(caller, key):
            raise NotFound(f"no API key with id '{key_id}'")
        if key.revoked_at is not None:
            raise InvalidRequest(f"key '{key_id}' is revoked; create a new one", param="key_id")
        token = mint()
        async with self.db.transaction():
            rotated = await self.repo.rotate(key_id, token[:10], hash_key(token))
            if rotated is None:
                raise NotFound(f"no API key with id '{key_id}'")
            await self.audit.record(
                caller, "key.rotate", "key", key_id, audited(key), audited(rotated), key.team_id
            )
        await self.reload()
        return NewKey(rotated, token)

    async def bootstrap_admin(self, path: Path, preset: str | None = None) -> str | None:
        """On first start (no keys at all): mint an admin key, write it to ``path`` with
        mode 0600 and return it, so the caller can print it once."""
        if await self.repo.count() > 0:
            return None
        new = await self.create(BOOTSTRAP, "admin", role="admin", secret=preset)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new.secret + "\n")
        os.chmod(path, 0o600)
        return new.secret
