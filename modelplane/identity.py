"""Who is calling: one ``Caller`` for API keys and JWTs alike.

Roles, from most to least powerful:

- ``admin``: everything, on every team's resources, and the platform itself;
- ``team_admin``: manage its own team's endpoints, routes, keys and budgets;
- ``member``: use (inference) and read its team's resources and those shared with it;
- ``viewer``: read only.

Scopes narrow a credential below its role (a key for a CI bot may be ``inference``
only): ``inference`` (``/v1``), ``read`` (``GET /api``), ``write`` (changes through
``/api``). An empty set means "whatever the role allows".

A caller may act for an account (a user or a service account, ``user:alice``): an API
key minted for it, or a JWT whose subject or email names it. Audit events name both the
account and the credential (``Caller.actor``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["admin", "team_admin", "member", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "team_admin", "member", "viewer")
Scope = Literal["inference", "read", "write"]
SCOPES: tuple[Scope, ...] = ("inference", "read", "write")


@dataclass(frozen=True, slots=True)
class Owned:
    """Who owns a resource and who else may use it: ``shared_with`` holds team ids, or
    ``"*"`` for every team. ``team_id`` ``None`` means the platform owns it."""

    team_id: str | None = None
    shared_with: tuple[str, ...] = ()


UNSHARED = Owned()
"""The platform's, shared with no team: only admins see it."""

_ROLE_SCOPES: dict[str, frozenset[str]] = {
    "admin": frozenset(SCOPES),
    "team_admin": frozenset(SCOPES),
    "member": frozenset({"inference", "read"}),
    "viewer": frozenset({"read"}),
}


def lower_role(a: Role, b: Role) -> Role:
    """The less powerful of two roles."""
    return a if ROLES.index(a) >= ROLES.index(b) else b


@dataclass(frozen=True, slots=True)
class Caller:
    subject: str
    """``key:<id>`` or ``jwt:<issuer>#<sub>``: stable, never a secret."""
    role: Role
    team_id: str | None = None
    """The caller's team; ``None`` only for platform admins outside any team."""
    key_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    account: str | None = None
    """``user:<name>`` or ``service:<name>`` when the credential belongs to an account."""

    @property
    def actor(self) -> str:
        """Who did it, as the audit log records it: ``user:alice (key:<id>)``, or the
        bare subject for a credential of no account."""
        return f"{self.account} ({self.subject})" if self.account else self.subject

    def allows(self, scope: str) -> bool:
        """Whether the role and the credential's scopes both permit ``scope``."""
        return scope in _ROLE_SCOPES[self.role] and (not self.scopes or scope in self.scopes)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def can_read(self, owner: Owned) -> bool:
        """Whether this caller may see (and, with ``inference``, use) a resource. Another
        team's private resource is invisible: callers get 404, as if it did not exist."""
        if self.is_admin:
            return True
        if owner.team_id is not None and owner.team_id == self.team_id:
            return True
        return "*" in owner.shared_with or (
            self.team_id is not None and self.team_id in owner.shared_with
        )

    def can_manage(self, owner: Owned) -> bool:
        """Whether this caller may change or delete a resource."""
        if not self.allows("write"):
            return False
        if self.is_admin:
            return True
        return (
            self.role == "team_admin"
            and owner.team_id is not None
            and owner.team_id == self.team_id
        )
