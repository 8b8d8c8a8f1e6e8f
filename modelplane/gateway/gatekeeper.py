"""The governor the gateway runs with: budgets and rate limits before a request is
forwarded, usage and cost after (see :mod:`modelplane.gateway.governance` for the seam).

Admission, in order, and what each costs on the request path:

1. Budgets of the caller's key and team: a dictionary lookup each (spend is kept in
   memory, see :mod:`~modelplane.gateway.budgets`).
2. Rate limits of the key, the team and the endpoint (:mod:`~modelplane.gateway.limits`):
   one atomic step for all their request and token counters (one Redis round trip with
   Redis), plus one per concurrency limit. Nothing at all when none is configured.

Which endpoint's limits apply is decided before the route picks a target, so it is
the route's first target with a weight above 0: for an endpoint's own name (the
implicit route) and for single-target routes and aliases that is exactly the endpoint
that answers; a weighted split counts against its first target only (put the limit on
every target's endpoint, or on the route's callers, to bound a split as a whole).

Afterwards, one :class:`~modelplane.gateway.usage.Outcome` per request goes to the
usage recorder, which settles it off the request path: tokens from the answer's
``usage``, cost from the answering endpoint's ``options.price``, the token estimate
replaced by what was used, concurrency slots given back, spend added to budgets.
Refused requests (429) are recorded too, with no tokens.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from modelplane.coord import Counters, Slot
from modelplane.errors import BudgetExceeded, ModelplaneError, RateLimited
from modelplane.gateway.budgets import BudgetRule, Spend
from modelplane.gateway.governance import Permit
from modelplane.gateway.inbound import Inbound
from modelplane.gateway.limits import (
    NO_LIMITS,
    Grant,
    Limiter,
    LimitRule,
    estimate_tokens,
)
from modelplane.gateway.routes import ResolvedRoute
from modelplane.gateway.usage import (
    Outcome,
    Tap,
    UsageRecorder,
    answer_text_tokens,
    stream_status,
)
from modelplane.providers.base import Reply
from modelplane.spec import Price
from modelplane.store.governance import UsageRepo
from modelplane.store.records import Endpoint, Usage

log = logging.getLogger(__name__)


FREE = Price()


class Ticket:
    """One admitted request: the permit the proxy holds, and what settling needs."""

    __slots__ = (
        "at",
        "body_len",
        "done",
        "grant",
        "keeper",
        "key_id",
        "request_id",
        "route",
        "started",
        "team_id",
    )

    def __init__(self, keeper: Gatekeeper, req: Inbound, route: str, grant: Grant) -> None:
        self.keeper = keeper
        self.key_id = req.caller.key_id
        self.team_id = req.caller.team_id
        self.request_id = req.request_id
        self.route = route
        self.body_len = len(req.body)
        self.grant = grant
        self.at = time.time()
        self.started = asyncio.get_running_loop().time()
        self.done = False

    def complete(self, reply: Reply) -> Reply:
        if self.grant.headers:
            reply.headers = {**reply.headers, **self.grant.headers}
        endpoint = reply.headers.get("x-modelplane-target")
        cached = reply.headers.get("x-modelplane-cache") == "hit"
        if reply.stream is not None and reply.status < 400:
            reply.stream = Tap(reply.stream, self, endpoint, cached)
        else:
            ok = reply.status < 400
            self.finish(
                Outcome(
                    None,
                    reply.status,
                    asyncio.get_running_loop().time(),
                    endpoint,
                    cached,
                    body=reply.body if ok else None,
                    failed=not ok,
                )
            )
        return reply

    def fail(self, error: BaseException) -> None:
        if isinstance(error, ModelplaneError):
            status = error.status
            if self.grant.headers:
                error.extra_headers = {**self.grant.headers, **error.extra_headers}
        else:
            status = 499 if isinstance(error, asyncio.CancelledError) else 500
        self.finish(Outcome(None, status, asyncio.get_running_loop().time(), failed=True))

    def finish(self, outcome: Outcome) -> None:
        if self.done:
            return
        self.done = True
        outcome.ticket = self
        self.keeper.hand_over(outcome)


def settle_at_once(outcome: Outcome, grant: Grant) -> bool:
    """Whether replacing a request's token estimate by what it used can change whether
    the next request fits, so that it must not wait for the next batch: when one of its
    token counters is in the last quarter of its limit, or when it used more than its
    estimate by more than the counters' slack (or its answer does not say what it used)."""
    if not grant.token_keys:
        return False
    if grant.slack < 0:
        return True
    if outcome.failed:
        return False  # its whole estimate comes back: only near the limit does it matter
    used = outcome.used()
    return used is None or used[0] + used[1] - grant.tokens > grant.slack


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
        self.recorder = UsageRecorder(
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

    async def admit(self, req: Inbound, route: ResolvedRoute) -> Permit:
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
            Ticket(self, req, route.name, NO_LIMITS).fail(exc)
            raise
        return Ticket(self, req, route.name, grant)

    def hand_over(self, outcome: Outcome) -> None:
        ticket: Ticket = outcome.ticket
        # Held slots, token estimates and spend against a budget limit the next
        # requests: settle those as soon as the recorder runs (outcomes that arrive
        # meanwhile join the batch); the others can wait a little to be settled together.
        grant = ticket.grant
        urgent = (
            bool(grant.slots)
            or settle_at_once(outcome, grant)
            or self.spend.tracks(ticket.key_id, ticket.team_id)
        )
        if self.recorder.submit(outcome, urgent=urgent):
            return
        if ticket.grant.slots:  # the record is lost; the slots must still be given back
            task = asyncio.get_running_loop().create_task(
                self.limiter.settle(ticket.grant, ticket.grant.tokens)
            )
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
                log.exception("settling the usage of request %s failed", outcome.ticket.request_id)
                continue
            records.append(usage)
            t: Ticket = outcome.ticket
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
        t: Ticket = outcome.ticket
        prompt = completion = 0
        estimated = False
        status = outcome.status
        if not outcome.failed:
            used = outcome.used()
            if outcome.tail is not None:
                status = stream_status(outcome.tail, left=outcome.left)
            if used is None:
                estimated = True
                prompt = max(1, t.body_len // 4)
                completion = (
                    outcome.frames
                    if outcome.tail is not None
                    else answer_text_tokens(outcome.body or b"")
                )
            else:
                prompt, completion = used
        cost = 0.0
        if outcome.endpoint and not outcome.cached and (prompt or completion):
            cost = self._endpoint(outcome.endpoint)[2].cost(prompt, completion)
        self._ids += 1
        return Usage(
            f"{self._id_prefix}{self._ids:016x}",
            datetime.fromtimestamp(t.at, UTC),
            t.request_id,
            t.key_id,
            t.team_id,
            t.route,
            outcome.endpoint,
            status,
            prompt,
            completion,
            cost,
            max(0.0, (outcome.ended - t.started) * 1000) if outcome.ended else 0.0,
            outcome.cached,
            estimated,
        )
