"""Bearer JWTs from an OIDC issuer, verified against its JWKS and mapped to a ``Caller``.

The JWKS is loaded at start and refreshed in the background (and once, rate-limited,
when a token names a key id the cached set lacks, so key rotation needs no restart).
Verifying a token is CPU only: no I/O on the request path. Only asymmetric algorithms
are accepted, and each key is bound to the algorithms its JWK allows, so neither
``alg: none`` nor an HMAC "signed" with the public key gets through. PyJWT's exceptions
are translated into ``AuthenticationError`` here and nowhere else.

A token whose ``sub`` is the name of a modelplane user (or whose email claim is a
user's email) acts for that user: a disabled user is refused, and the user's role and
team fill in for claims the token lacks (claims it has win). Users are never created
from tokens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

from modelplane.config import ASYMMETRIC_ALGORITHMS, JwtSettings
from modelplane.errors import AuthenticationError, ModelplaneError
from modelplane.identity import ROLES, SCOPES, Caller, Role, lower_role
from modelplane.store.records import Account
from modelplane.tasks import Loop

log = logging.getLogger(__name__)

_EC_CURVES = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K"}
_ROLE_BY_NAME: dict[str, Role] = {r: r for r in ROLES}
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
UNKNOWN_KID_REFRESH_S = 30.0
"""A token with an unknown key id triggers a JWKS refresh at most this often."""


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments: cheap, so API keys (``mp-…``, no dots) skip JWT parsing."""
    return _JWT_SHAPE.fullmatch(token) is not None


def _short(value: object) -> str:
    return repr(str(value)[:64])


_FAILURES: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "the bearer token has expired; get a new one from the issuer"),
    (
        jwt.ImmatureSignatureError,
        "the bearer token is not valid yet (nbf or iat is in the future); "
        "check the clocks of the issuer and of this server",
    ),
    (jwt.InvalidIssuerError, "the bearer token was not issued by '{s.issuer}'"),
    (jwt.InvalidAudienceError, "the bearer token is not meant for audience '{s.audience}'"),
    (jwt.MissingRequiredClaimError, "the bearer token has no '{claim}' claim"),
    (
        jwt.InvalidSignatureError,
        "the bearer token's signature does not verify: it was altered or signed by another key",
    ),
    (jwt.InvalidAlgorithmError, "the bearer token's algorithm is not the one its key is for"),
    (jwt.DecodeError, "the bearer token is not a well-formed JWT"),
    (jwt.PyJWTError, "the bearer token is invalid: {exc}"),
)
"""PyJWT's failures as messages: subclasses before their bases."""


class JwtAuth:
    """Verifies bearer JWTs against the configured issuer's cached JWKS."""

    def __init__(
        self,
        settings: JwtSettings,
        team_id: Callable[[str], str | None],
        user: Callable[[str, str | None], Account | None] | None = None,
    ) -> None:
        """``team_id`` maps a team name to its id; ``user`` finds the user a token's
        subject and email name (from an in-memory snapshot: no I/O per request)."""
        self.settings = settings
        self._team_id = team_id
        self._user = user
        self._keys: dict[str | None, dict[str, jwt.PyJWK]] = {}
        self._client: httpx.AsyncClient | None = None
        self._refresher = Loop("jwks refresh", self._refresh_step, settings.jwks_refresh_s)
        self._kid_refresh_at = -math.inf

    @property
    def _source(self) -> str:
        return str(self.settings.jwks_url or self.settings.jwks_file)

    async def start(self) -> None:
        """Load the JWKS (raises ``ModelplaneError`` saying why it cannot) and keep it fresh."""
        try:
            await self.refresh()
        except BaseException:
            await self.close()
            raise
        self._refresher.start()

    async def close(self) -> None:
        await self._refresher.close()
        if self._client:
            await self._client.aclose()
            self._client = None

    async def refresh(self) -> None:
        """Re-read the JWKS now; on failure the cached keys stay in use."""
        self._keys = self._parse(await self._fetch())

    async def _fetch(self) -> object:
        try:
            if self.settings.jwks_file is not None:
                return json.loads(await asyncio.to_thread(self.settings.jwks_file.read_bytes))
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=5.0)
            r = await self._client.get(self._source)
            r.raise_for_status()
            return r.json()
        except httpx.HTTPStatusError as exc:
            raise ModelplaneError(
                f"the JWKS URL {self._source} answered HTTP {exc.response.status_code}; "
                "check jwt.jwks_url"
            ) from exc
        except httpx.HTTPError as exc:
            raise ModelplaneError(
                f"cannot fetch the JWKS from {self._source} ({exc or type(exc).__name__}); "
                "check jwt.jwks_url and that the issuer is reachable"
            ) from exc
        except OSError as exc:
            raise ModelplaneError(f"cannot read the JWKS file: {exc}; check jwt.jwks_file") from exc
        except ValueError as exc:
            raise ModelplaneError(f"the JWKS at {self._source} is not valid JSON") from exc

    def _parse(self, data: object) -> dict[str | None, dict[str, jwt.PyJWK]]:
        raw = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(raw, list):
            raise ModelplaneError(f"the JWKS at {self._source} has no 'keys' list")
        keys: dict[str | None, dict[str, jwt.PyJWK]] = {}
        for jwk in raw:
            kid = jwk.get("kid") if isinstance(jwk, dict) else 0
            if not isinstance(kid, str | None) or jwk.get("use", "sig") != "sig":
                continue
            for alg in self._algorithms_for(jwk):
                try:
                    keys.setdefault(kid, {})[alg] = jwt.PyJWK(jwk, alg)
                except jwt.PyJWTError as exc:
                    log.warning("skipping key %s of the JWKS: %s", _short(kid), exc)
        if not keys:
            raise ModelplaneError(
                f"the JWKS at {self._source} has no usable key for "
                f"{', '.join(self.settings.algorithms)}; check jwt.algorithms"
            )
        return keys

    def _algorithms_for(self, jwk: dict[str, Any]) -> list[str]:
        """What this key may verify: its ``alg``, else what its type and curve allow."""
        kty, crv = jwk.get("kty"), jwk.get("crv")
        if "alg" in jwk:
            candidates = [jwk["alg"]]
        elif kty == "RSA":
            candidates = [a for a in ASYMMETRIC_ALGORITHMS if a[:2] in ("RS", "PS")]
        elif kty == "EC" and isinstance(crv, str):
            candidates = [_EC_CURVES.get(crv, "")]
        elif kty == "OKP":
            candidates = ["EdDSA"]
        else:  # "oct" (a shared secret) never belongs in a public key set
            candidates = []
        return [a for a in self.settings.algorithms if a in candidates]

    async def _refresh_step(self) -> None:
        try:
            await self.refresh()
        except ModelplaneError as exc:  # expected (the issuer is down): no traceback
            log.warning("refreshing the JWKS failed; keeping the last keys: %s", exc.message)

    def _request_refresh(self) -> None:
        now = time.monotonic()
        if not self._refresher.running or now - self._kid_refresh_at < UNKNOWN_KID_REFRESH_S:
            return
        self._kid_refresh_at = now
        self._refresher.wake()

    def verify(self, token: str) -> Caller:
        """The caller a valid token stands for, or ``AuthenticationError`` saying why not."""
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
            alg, kid = header.get("alg"), header.get("kid")
            if alg not in s.algorithms:
                raise AuthenticationError(
                    f"the bearer token's algorithm {_short(alg)} is not accepted; "
                    f"modelplane accepts {', '.join(s.algorithms)}"
                )
            by_alg = self._keys.get(kid)
            if by_alg is None and kid is None and len(self._keys) == 1:
                by_alg = next(iter(self._keys.values()))
            if by_alg is None:
                self._request_refresh()
                raise AuthenticationError(
                    f"the bearer token's key id {_short(kid)} is not in the JWKS of "
                    f"'{s.issuer}'; if the issuer has just rotated its keys, retry shortly"
                )
            key = by_alg.get(alg)
            if key is None:
                raise AuthenticationError(f"key {_short(kid)} of '{s.issuer}' cannot verify {alg}")
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=s.issuer,
                audience=s.audience,
                leeway=s.leeway_s,
                options={"require": ["exp", "iss", "sub"], "verify_aud": s.audience is not None},
            )
        except jwt.PyJWTError as exc:
            message = next(m for t, m in _FAILURES if isinstance(exc, t))
            claim = getattr(exc, "claim", "")
            raise AuthenticationError(message.format(s=s, claim=claim, exc=exc)) from exc
        return self._caller(claims)

    def _caller(self, claims: dict[str, Any]) -> Caller:
        s = self.settings
        sub = claims["sub"]
        if not sub:
            raise AuthenticationError("the bearer token has an empty 'sub' claim")
        user = None
        if self._user is not None:
            email = claims.get(s.email_claim)
            user = self._user(str(sub), email if isinstance(email, str) else None)
            if user is not None and user.disabled:
                raise AuthenticationError(
                    f"{user.label} is disabled in modelplane; ask an admin to enable it"
                )
        raw_role = claims.get(s.role_claim)
        if raw_role is None:
            raw_role = user.role if user is not None else s.default_role
        role = _ROLE_BY_NAME.get(raw_role) if isinstance(raw_role, str) else None
        if role is None:
            raise AuthenticationError(
                f"role {_short(raw_role)} in the token's '{s.role_claim}' claim is not a "
                f"modelplane role; use one of {', '.join(ROLES)}"
            )
        if user is not None:  # as for keys: the user's role is a ceiling
            role = lower_role(role, _ROLE_BY_NAME.get(user.role, "viewer"))
        team = claims.get(s.team_claim)
        team_id: str | None = None
        if team is None:
            team_id = user.team_id if user is not None else None
            if team_id is None and role != "admin":
                raise AuthenticationError(
                    f"the bearer token has no '{s.team_claim}' claim; every caller but a "
                    "platform admin needs a team"
                )
        elif not isinstance(team, str) or (team_id := self._team_id(team)) is None:
            raise AuthenticationError(
                f"team {_short(team)} in the token is not known to modelplane; create the "
                f"team or fix the issuer's '{s.team_claim}' claim"
            )
        raw_scopes = claims.get(s.scope_claim, [])
        if isinstance(raw_scopes, str):
            raw_scopes = raw_scopes.split()
        if not isinstance(raw_scopes, list):
            raise AuthenticationError(
                f"the token's '{s.scope_claim}' claim must be a space-separated string or a list"
            )
        scopes = frozenset(v for v in raw_scopes if v in SCOPES)
        return Caller(
            subject=f"jwt:{s.issuer}#{sub}",
            role=role,
            team_id=team_id,
            scopes=scopes,
            account=user.label if user is not None else None,
        )
