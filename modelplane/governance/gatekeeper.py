"""The governor the gateway runs with: budgets and rate limits before a request is
forwarded, usage and cost after (see :mod:`modelplane.governance.governor` for the seam).

Admission, in order, and what each costs on the request path:

1. Budgets of the caller's key and team: a dictionary lookup each (spend is kept in
   memory, see :mod:`~modelplane.governance.budgets`).
2. Rate limits of the key, the team and the endpoint (:mod:`~modelplane.governance.limits`):
   one atomic step for all their request and token counters (one Redis round trip with
   Redis), plus one per concurrency limit. Nothing at all when none is configured.

Which endpoint's limits apply is decided before the route picks a target, so it is
the route's first target with a weight above 0: for an endpoint's own name (the
implicit route) and for single-target routes and aliases that is exactly the endpoint
that answers; a weighted split counts against its first target only (put the limit on
every target's endpoint, or on the route's callers, to bound a split as a whole).

Afterwards, ``settle`` hands one :class:`Outcome` per request (the permit and the
:class:`~modelplane.telemetry.answers.Answer` its reader read) to the usage recorder,
which settles it off the request path: tokens as the answer reader read them, cost from
the answering endpoint's ``options.price``, the token estimate replaced by what was
used, concurrency slots given back, spend added to budgets. Refused requests (429) are
recorded too, with no tokens.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from modelplane.coord import Counters, Slot
from modelplane.errors import BudgetExceeded, RateLimited
from modelplane.governance.budgets import BudgetRule, Spend
from modelplane.governance.governor import Request, Route
from modelplane.governance.limits import (
    NO_LIMITS,
    Grant,
    Limiter,
    LimitRule,
    estimate_tokens,
)
from modelplane.governance.usage import UsageRecorder
from modelplane.spec import Price
from modelplane.store.governance import UsageRepo
from modelplane.store.records import Endpoint, Usage
from modelplane.telemetry.answers import Answer, failed

log = logging.getLogger(__name__)


FREE = Price()


class Pass:
    """One admitted request: what settling it needs (plain data, handed over once)."""

    __slots__ = (
        "at",
        "grant",
        "headers",
        "key_id",
        "request_id",
        "route",
        "settled",
        "started",
        "team_id",
    )

    def __init__(self, req: Request, route: str, grant: Grant) -> None:
        caller = req.caller
        self.key_id = caller.key_id
        self.team_id = caller.team_id
        self.request_id = req.request_id
        self.route = route
        self.grant = grant
        self.headers: Mapping[str, str] = grant.headers
        self.at = time.time()
        self.started = asyncio.get_running_loop().time()
        self.settled = False


@dataclass(slots=True)
class Outcome:
    """How one admitted request ended: its permit, its answer, and when."""

    permit: Pass
    answer: Answer
    ended: float
    """``loop.time()`` at the end (the last byte of a stream)."""


def settle_at_once(answer: Answer, grant: Grant) -> bool:
    """Whether replacing a request's token estimate by what it used can change whether
    the next request fits, so that it must not wait for the next batch: when one of its
    token counters is in the last quarter of its limit, or when it used more than its
    estimate by more than the counters' slack (or its answer does not say what it used)."""
    if not grant.token_keys:
        return False
    if grant.slack < 0:
        return True
    if answer.failed:
        return False  # its whole estimate comes back: only near the limit does it matter
    return answer.estimated or answer.prompt + answer.completion - grant.tokens > grant.slack


class Gatekeeper:
    def __init__(
        self,
        *,
        counters: Counters,
        repo: UsageRepo,
        limits: Callable[[], Mapping[tuple[str, str], LimitRule]],
        budgets: Callable[[], Mapping[tuple[str, str], BudgetRule]],
        endpoints: Callable[[], Mapping[str, Endpoint]],
        slot_ttl_s: float = 660.0,
        refresh_interval_s: float = 1.0,
        flush_interval_s: float = 0.5,
        batch_max: int = 500,
        queue_max: int = 10_000,
    ) -> None:
        self.limiter = Limiter(counters, slot_ttl_s=slot_ttl_s)
        self.spend = Spend(
            counters,
            repo,
            budgets,
            refresh_interval_s=refresh_interval_s,
            unwritten=self._unwritten_cost,
        )
        self.limits = limits
        self.endpoints = endpoints
        self.recorder: UsageRecorder[Outcome] = UsageRecorder(
            repo,
            self._settle,
            flush_interval_s=flush_interval_s,
            batch_max=batch_max,
            queue_max=queue_max,
        )
        self._endpoint_rules: dict[str, tuple[tuple[str, int], LimitRule]] = {}
        # Record ids: random per process, then counted (unique without a syscall each).
        self._id_prefix = secrets.token_hex(8)
        self._ids = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.spend.start()
        await self.recorder.start()

    async def close(self) -> None:
        await self.recorder.close()
        await self.spend.close()

    async def admit(self, req: Request, route: Route) -> Pass:
        caller = req.caller
        try:
            self.spend.check(caller.key_id, caller.team_id)
            rules: list[LimitRule] = []
            limits = self.limits()
            if limits:
                if caller.key_id and (rule := limits.get(("key", caller.key_id))):
                    rules.append(rule)
                if caller.team_id and (rule := limits.get(("team", caller.team_id))):
                    rules.append(rule)
            if ep_rule := self._endpoint(route.first)[1]:
                rules.append(ep_rule)
            grant = NO_LIMITS
            if rules:
                tokens = estimate_tokens(req.body, req.peeked.body)
                grant = await self.limiter.admit(rules, tokens)
        except (RateLimited, BudgetExceeded) as exc:
            self.settle(Pass(req, route.name, NO_LIMITS), failed(exc.status))
            raise
        return Pass(req, route.name, grant)

    def settle(self, permit: Pass, answer: Answer) -> None:
        if permit.settled:
            return
        permit.settled = True
        outcome = Outcome(permit, answer, asyncio.get_running_loop().time())
        # Held slots, token estimates and spend against a budget limit the next
        # requests: settle those as soon as the recorder runs (outcomes that arrive
        # meanwhile join the batch); the others can wait a little to be settled together.
        grant = permit.grant
        urgent = (
            bool(grant.slots)
            or settle_at_once(answer, grant)
            or self.spend.tracks(permit.key_id, permit.team_id)
        )
        if self.recorder.submit(outcome, urgent=urgent):
            return
        if grant.slots:  # the record is lost; the slots must still be given back
            task = asyncio.get_running_loop().create_task(self.limiter.settle(grant, grant.tokens))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _unwritten_cost(self, scope: str, subject: str, since: datetime) -> float:
        """What this process recorded for a key or team but has not written yet."""
        field = "key_id" if scope == "key" else "team_id"
        return sum(
            r.cost_usd
            for r in self.recorder.unwritten()
            if getattr(r, field) == subject and r.at >= since
        )

    def _endpoint(self, name: str) -> tuple[Endpoint | None, LimitRule | None, Price]:
        """An endpoint's limits and price, from its spec (parsed with its record)."""
        ep = self.endpoints().get(name)
        if ep is None:
            return None, None, FREE
        gateway = ep.spec.gateway
        if not gateway.limits:
            return ep, None, gateway.price
        version = (ep.id, ep.generation)  # a new spec has a new generation
        cached = self._endpoint_rules.get(name)
        if cached is None or cached[0] != version:
            cached = (version, LimitRule(f"endpoint:{name}", f"endpoint '{name}'", gateway.limits))
            self._endpoint_rules[name] = cached
        return ep, cached[1], gateway.price

    async def _settle(self, outcomes: list[Outcome]) -> list[Usage]:
        """Records for a batch of outcomes; then, once for the whole batch, the token
        estimates replaced by what was used, the slots given back and the spend added."""
        records: list[Usage] = []
        tokens: dict[str, int] = {}
        slots: list[Slot] = []
        spent: dict[tuple[str | None, str | None], float] = {}
        for outcome in outcomes:
            try:
                usage = self._record(outcome)
            except Exception:
                log.exception("settling the usage of request %s failed", outcome.permit.request_id)
                continue
            records.append(usage)
            t = outcome.permit
            if t.grant is not NO_LIMITS:
                delta = usage.prompt_tokens + usage.completion_tokens - t.grant.tokens
                for key in t.grant.token_keys if delta else ():
                    tokens[key] = tokens.get(key, 0) + delta
                slots.extend(t.grant.slots)
        if tokens or slots:
            await self.limiter.correct(tokens, slots)
        for usage in records:
            if usage.cost_usd > 0:
                owners = (usage.key_id, usage.team_id)
                spent[owners] = spent.get(owners, 0.0) + usage.cost_usd
        for (key_id, team_id), cost in spent.items():
            await self.spend.add((("key", key_id), ("team", team_id)), cost)
        return records

    def _record(self, outcome: Outcome) -> Usage:
        t, answer = outcome.permit, outcome.answer
        prompt, completion = answer.prompt, answer.completion
        endpoint, cached = answer.target, answer.cached
        cost = 0.0
        if endpoint and not cached and (prompt or completion):
            cost = self._endpoint(endpoint)[2].cost(prompt, completion)
        self._ids += 1
        return Usage(
            f"{self._id_prefix}{self._ids:016x}",
            datetime.fromtimestamp(t.at, UTC),
            t.request_id,
            t.key_id,
            t.team_id,
            t.route,
            endpoint,
            answer.status,
            prompt,
            completion,
            cost,
            max(0.0, (outcome.ended - t.started) * 1000) if outcome.ended else 0.0,
            cached,
            answer.estimated,
        )
