"""Rate limits: requests per minute, tokens per minute and concurrent requests, for a
key, a team and an endpoint at once; the tightest one decides.

Counters live in the coordination backend (:mod:`modelplane.coord`): per process in
memory, or shared by every server process through Redis, where each check is one
atomic script. Requests and tokens are counted over a sliding minute.

Tokens are counted before the answer is known, so a request is charged an estimate
when it is admitted: its body's length in bytes / 4 (about four bytes per token in
English JSON) plus the ``max_tokens`` (or ``max_completion_tokens``) it asks for. When
the answer's ``usage`` arrives, the difference is settled (:meth:`Limiter.settle`): a
request that used less gives the rest back, one that used more is charged the
difference (which may push later requests over the limit); a failed request gives
back its whole estimate.

When the coordination backend fails, requests are let through (and a warning is
logged): limits protect capacity, and a Redis outage should not take the gateway down.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelplane.coord import CoordError, Counters, Slot, Window
from modelplane.errors import RateLimited
from modelplane.spec import RateLimits

log = logging.getLogger(__name__)

MINUTE = 60.0


@dataclass(frozen=True, slots=True)
class LimitRule:
    """Limits that apply to one key, team or endpoint, and how to name it to a client."""

    key: str
    """Counter key, e.g. ``key:<id>``."""
    label: str
    """e.g. ``key 'ci-bot'`` or ``endpoint 'gpt-4o'``."""
    limits: RateLimits
    rpm_key: str = field(init=False)
    tpm_key: str = field(init=False)
    """The counters' own keys, built once per rule rather than once per request."""
    rpm: int | None = field(init=False)
    tpm: int | None = field(init=False)
    concurrency: int | None = field(init=False)
    """``limits``' own, copied: reading a pydantic model's field costs several times a
    plain attribute's, and admission reads them for every request."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rpm_key", f"rpm:{self.key}")
        object.__setattr__(self, "tpm_key", f"tpm:{self.key}")
        object.__setattr__(self, "rpm", self.limits.rpm)
        object.__setattr__(self, "tpm", self.limits.tpm)
        object.__setattr__(self, "concurrency", self.limits.concurrency)


def estimate_tokens(body: bytes, obj: Mapping[str, Any]) -> int:
    """Tokens a request is charged when admitted (see the module docstring)."""
    asked = obj.get("max_completion_tokens", obj.get("max_tokens"))
    completion = asked if isinstance(asked, int) and asked > 0 else 0
    return max(1, len(body) // 4) + completion


def duration(seconds: float) -> str:
    """OpenAI's way of writing a reset time: ``250ms``, ``12s``, ``1m3s``."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000) if seconds > 0 else 0}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


@dataclass(slots=True)
class _Tightest:
    """The counter with the least room left among those of one kind (requests, tokens)."""

    limit: int = 0
    remaining: int = -1
    reset_s: float = 0.0

    def offer(self, limit: int, window: Window) -> None:
        remaining = limit - window.count
        if remaining < 0:
            remaining = 0
        if self.remaining < 0 or remaining < self.remaining:
            self.limit, self.remaining, self.reset_s = limit, remaining, window.reset_s

    def refuse(self, limit: int, window: Window) -> None:
        """The counter that refused a request: it decides the headers."""
        reset = max(window.retry_after_s, window.reset_s)
        self.limit, self.remaining, self.reset_s = limit, 0, MINUTE if math.isinf(reset) else reset

    def headers(self, names: tuple[str, str, str], out: dict[str, str]) -> None:
        if self.remaining >= 0:
            limit, remaining, reset = names
            out[limit] = str(self.limit)
            out[remaining] = str(self.remaining)
            out[reset] = duration(self.reset_s)


@dataclass(slots=True)
class Grant:
    """What admitting one request took: tokens charged to which counters, and held
    concurrency slots. Settle it once, when the request ends."""

    headers: dict[str, str] = field(default_factory=dict)
    """``x-ratelimit-*`` headers for the answer (empty when no limit applies)."""
    tokens: int = 0
    token_keys: list[str] = field(default_factory=list)
    slots: list[Slot] = field(default_factory=list)
    slack: float = math.inf
    """Tokens the request may use beyond its estimate before one of its token counters
    is in the last quarter of its limit (negative: one already is). Within the slack, a
    late correction of the estimate cannot change whether the next request fits."""


NO_LIMITS = Grant()


class Limiter:
    def __init__(self, counters: Counters, *, slot_ttl_s: float = 660.0) -> None:
        self.counters = counters
        self.slot_ttl_s = slot_ttl_s
        """A slot not given back in this time frees itself (its process died)."""
        self._warned_at = -math.inf

    async def admit(self, rules: Sequence[LimitRule], tokens: int) -> Grant:
        """Count one request of ``tokens`` estimated tokens against every rule, or
        raise :class:`RateLimited` (counting nothing) if any rule has no room. Requests
        and tokens of every rule are counted in one atomic step (one Redis round trip);
        each concurrency limit takes one more."""
        grant = Grant(tokens=tokens)
        keys: list[str] = []
        amounts: list[int] = []
        limits: list[int] = []
        owners: list[tuple[LimitRule, str]] = []
        for rule in rules:
            if rule.rpm:
                keys.append(rule.rpm_key)
                amounts.append(1)
                limits.append(rule.rpm)
                owners.append((rule, "requests"))
            if rule.tpm:
                keys.append(rule.tpm_key)
                amounts.append(tokens)
                limits.append(rule.tpm)
                owners.append((rule, "tokens"))
                grant.token_keys.append(keys[-1])
        requests, token_room = _Tightest(), _Tightest()
        counted = False
        try:
            windows = await self.counters.incr_many(keys, amounts, MINUTE, limits)
            refused: RateLimited | None = None
            # Built together above: no ``strict`` (which parses a keyword on every call).
            for (rule, kind), limit, got in zip(owners, limits, windows):  # noqa: B905
                tightest = requests if kind == "requests" else token_room
                if got.allowed:
                    tightest.offer(limit, got)
                    if kind == "tokens" and (slack := limit - got.count - limit / 4) < grant.slack:
                        grant.slack = slack
                else:
                    tightest.refuse(limit, got)
                    refused = refused or self._refused(rule, kind, limit, got)
            if refused is not None:
                refused.extra_headers = _headers(requests, token_room)
                raise refused
            counted = True
            grant.headers = _headers(requests, token_room)
            for rule in rules:
                n = rule.concurrency
                if not n:
                    continue
                slot = await self.counters.acquire(f"conc:{rule.key}", n, ttl_s=self.slot_ttl_s)
                if slot is None:
                    err = RateLimited(
                        f"{rule.label} already has {n} requests in flight (its concurrency "
                        "limit); retry when one has finished",
                        retry_after=1,
                    )
                    err.extra_headers = grant.headers
                    await self._undo(keys, amounts, grant.slots)
                    raise err
                grant.slots.append(slot)
        except CoordError as exc:
            self._warn(exc)
            with contextlib.suppress(CoordError):
                await self._undo(keys if counted else [], amounts, grant.slots)
            return NO_LIMITS
        return grant

    async def settle(self, grant: Grant, used: int) -> None:
        """Replace the estimate by the tokens really used, and give back the slots."""
        delta = used - grant.tokens
        await self.correct({k: delta for k in grant.token_keys} if delta else {}, grant.slots)

    async def correct(self, tokens: Mapping[str, int], slots: Sequence[Slot]) -> None:
        """Add token corrections (used minus estimated, summed per counter) in one
        atomic step, then give back ``slots``."""
        try:
            if tokens:
                n = len(tokens)
                await self.counters.incr_many(
                    list(tokens), list(tokens.values()), MINUTE, [None] * n
                )
            for slot in slots:
                await self.counters.release(slot)
        except CoordError as exc:
            self._warn(exc)

    def _refused(self, rule: LimitRule, kind: str, limit: int, got: Window) -> RateLimited:
        if math.isinf(got.retry_after_s):
            return RateLimited(
                f"this request's estimated tokens exceed the {limit} tokens per minute of "
                f"{rule.label}; send a shorter prompt or a lower max_tokens",
                retry_after=round(MINUTE),
            )
        retry = math.ceil(got.retry_after_s)
        return RateLimited(
            f"rate limit of {rule.label} reached: {limit} {kind} per minute; retry in {retry} s",
            retry_after=retry,
        )

    async def _undo(self, keys: list[str], amounts: list[int], slots: list[Slot]) -> None:
        if keys:
            await self.counters.incr_many(keys, [-a for a in amounts], MINUTE, [None] * len(keys))
        for slot in slots:
            await self.counters.release(slot)

    def _warn(self, exc: CoordError) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 10:
            self._warned_at = now
            log.warning("rate limits are not enforced while this lasts: %s", exc.message)


_REQUESTS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
)
_TOKENS = ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")


def _headers(requests: _Tightest, tokens: _Tightest) -> dict[str, str]:
    out: dict[str, str] = {}
    requests.headers(_REQUESTS, out)
    tokens.headers(_TOKENS, out)
    return out
