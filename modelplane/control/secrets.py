"""Provider credentials, encrypted at rest, readable only by the gateway.

Values are encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``)
under a key derived from the master secret: ``MODELPLANE_SECRET_KEY``, else a random
one generated on first start into ``$MODELPLANE_HOME/secret.key`` (mode 0600). The API
takes values and never returns them; endpoints refer to them as ``secret:NAME``.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import secrets
from datetime import datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modelplane.control.audit import AuditLog
from modelplane.control.snapshot import Snapshot
from modelplane.errors import InvalidRequest, NotFound
from modelplane.identity import Caller
from modelplane.store.db import Database
from modelplane.store.repos import SecretRepo

log = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")


def master_secret(preset: str | None, path: Path) -> str:
    """The configured master secret, else the one in ``path`` (created when missing)."""
    if preset:
        return preset
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    log.warning("created a master secret for encrypting credentials in %s (mode 0600)", path)
    return value


def _fernet(master: str) -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"modelplane secrets v1"
    ).derive(master.encode())
    return Fernet(base64.urlsafe_b64encode(key))


class SecretService(Snapshot):
    collection = "secrets"

    def __init__(self, db: Database, master: str) -> None:
        super().__init__(db)
        self.repo = SecretRepo(db)
        self.audit = AuditLog(db)
        self._box = _fernet(master)
        self._values: dict[str, str] = {}
        self._meta: dict[str, tuple[datetime, datetime]] = {}

    async def load(self) -> None:
        values, meta = {}, {}
        for name, ciphertext, created, updated in await self.repo.all():
            try:
                values[name] = self._box.decrypt(ciphertext.encode()).decode()
            except InvalidToken:
                log.error(
                    "secret '%s' cannot be decrypted with the current master secret; "
                    "set it again or restore MODELPLANE_SECRET_KEY",
                    name,
                )
            meta[name] = (created, updated)
        self._values, self._meta = values, meta

    def get(self, name: str) -> str | None:
        """A decrypted value, for the gateway; ``None`` when there is none."""
        return self._values.get(name)

    def list(self) -> list[dict[str, str]]:
        return [
            {"name": name, "created_at": c.isoformat(), "updated_at": u.isoformat()}
            for name, (c, u) in sorted(self._meta.items())
        ]

    async def put(self, caller: Caller, name: str, value: str) -> bool:
        if not NAME.match(name):
            raise InvalidRequest(
                "a secret name is 1-128 characters of letters, digits, '_', '.' or '-', "
                "starting with a letter or '_'",
                param="name",
            )
        if not value:
            raise InvalidRequest("value must not be empty", param="value")
        async with self.db.transaction():
            created = await self.repo.put(name, self._box.encrypt(value.encode()).decode())
            # The value never reaches the log: only that it was set.
            await self.audit.record(
                caller,
                "secret.put",
                "secret",
                name,
                None if created else {"name": name},
                {"name": name, "value_changed": True},
            )
        await self.reload()
        return created

    async def delete(self, caller: Caller, name: str) -> None:
        async with self.db.transaction():
            if not await self.repo.delete(name):
                raise NotFound(f"no secret named '{name}'")
            await self.audit.record(caller, "secret.delete", "secret", name, {"name": name}, None)
        await self.reload()
