"""What governance costs a request, stage by stage, without HTTP around it.

``bench/gateway.py`` measures the whole gateway, where governance (rate limits, budgets,
usage records) is one part of many and its cost can only be read as the difference
between two servers. This runs the gateway's own ``Gatekeeper`` in a loop, the way the
request path calls it, and adds one stage at a time:

- ``baseline``: the loop alone (each request's ``Inbound`` built, nothing governed).
- ``admit``: ``Gatekeeper.admit``: the budget check and the endpoint's rate limits
  (requests and tokens per minute, both counted, ``x-ratelimit-*`` headers built).
- ``settle``: the answer read (its usage, from the body) and settled: the outcome
  queued, settled in batches (the token estimate corrected, the cost computed) into a
  usage record. Records are not written.
- ``write``: the records written to the database as well: a temporary SQLite file, as
  ``modelplane up`` uses, or with ``--postgres URL`` a database created on that
  PostgreSQL server for the rep and dropped after it.

Each stage runs in a fresh process pinned to one core, ``--requests`` requests after a
warm-up, ``--reps`` times, stages rotated rep by rep. CPU µs per request is the
process's user + system time (every thread: the SQLite driver writes from its own)
over the requests; the table gives the median and the range over reps, and what each
stage adds to the one before. The loop yields to the event loop for ``--pause-ms``
after every ``--burst`` requests, as a server does between bursts of arrivals (a
loop that never yields keeps everything in cache and reads lower).

Run: ``.venv/bin/python bench/governance.py`` (``--help`` for options)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import uvloop
from gateway import LIMITS, PRICE, body
from mock_upstream import ANSWER

STAGES = ("baseline", "admit", "settle", "write")
CPU = 0
OPTIONS = {"base_url": "http://127.0.0.1:9/v1", "price": PRICE, "limits": LIMITS}
"""The endpoint as ``bench/gateway.py`` registers the mock (no request goes to it)."""


async def stage(name: str, requests: int, database: str, burst: int, pause_s: float) -> float:
    """CPU µs per request of one stage, in this process."""
    from modelplane.coord.memory import MemoryCounters
    from modelplane.gateway.inbound import Inbound, peek
    from modelplane.gateway.routes import ResolvedRoute, RouteSpec
    from modelplane.governance.gatekeeper import Gatekeeper
    from modelplane.identity import Caller
    from modelplane.store.db import Database
    from modelplane.store.governance import UsageRepo
    from modelplane.store.records import Endpoint, Usage
    from modelplane.telemetry.answers import read_answer

    db = Database(database)
    await db.migrate()
    now = datetime.now(UTC)
    endpoints = {
        "mock": Endpoint("e1", "mock", "external", "openai", "mock", 1, OPTIONS, 1, now, now)
    }
    repo = UsageRepo(db)
    if name != "write":

        async def nothing(records: Sequence[Usage]) -> None:
            pass

        repo.add_many = nothing  # type: ignore[method-assign]
    none: dict[tuple[str, str], Any] = {}  # no key, team or budget rules: the same object
    keeper = Gatekeeper(
        counters=MemoryCounters(clock=time.monotonic),
        repo=repo,
        limits=lambda: none,
        budgets=lambda: none,
        endpoints=lambda: endpoints,
    )
    await keeper.start()
    route = ResolvedRoute(
        "mock", RouteSpec.model_validate({"targets": [{"endpoint": "mock"}]}), True
    )
    caller = Caller("key:k1", "member", "t1", "k1")
    request = body(stream=False)
    peeked = peek(request)
    admit, settle = name != "baseline", name in ("settle", "write")

    async def run(n: int) -> None:
        for i in range(n):
            req = Inbound("chat", request, peeked, f"{i:032x}", {}, caller)
            if admit:
                permit = await keeper.admit(req, route)
                if settle:
                    keeper.settle(permit, read_answer(200, ANSWER, len(request), "mock"))
            if i % burst == burst - 1:
                await asyncio.sleep(pause_s)

    warm = min(requests, 2000)
    await run(warm)
    await asyncio.sleep(keeper.recorder.flush_interval_s * 2)  # its records written
    before = time.process_time()
    await run(requests)
    await keeper.close()  # what is still queued is settled and written
    spent = time.process_time() - before
    await db.close()
    if settle and keeper.recorder.dropped:
        raise SystemExit(f"{keeper.recorder.dropped} usage records dropped: lower the pace")
    if name == "write" and keeper.recorder.written != warm + requests:
        raise SystemExit(f"{keeper.recorder.written} of {warm + requests} usage records written")
    return spent / requests * 1e6


async def _postgres(server: str, sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(server, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def database(args: argparse.Namespace) -> Iterator[str]:
    """A new, empty database for one rep of one stage."""
    if not args.postgres:
        with tempfile.TemporaryDirectory(prefix="mp-bench-gov-") as tmp:
            yield f"sqlite+aiosqlite:///{tmp}/modelplane.db"
        return
    name = f"mp_bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(_postgres(args.postgres, f'CREATE DATABASE "{name}"'))
    try:
        base = args.postgres.split("://", 1)[1].rsplit("/", 1)[0]
        yield f"postgresql+asyncpg://{base}/{name}"
    finally:
        asyncio.run(_postgres(args.postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def measure(args: argparse.Namespace, name: str) -> float:
    """One stage in a child process of its own (a fresh heap and database each time)."""
    with database(args) as url:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            name,
            f"--requests={args.requests}",
            f"--burst={args.burst}",
            f"--pause-ms={args.pause_ms}",
            f"--database={url}",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"stage {name} failed:\n{done.stdout}{done.stderr}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="requests per rep")
    parser.add_argument("--reps", type=int, default=5, help="reps of each stage")
    parser.add_argument("--burst", type=int, default=16, help="requests between pauses")
    parser.add_argument("--pause-ms", type=float, default=1.0, help="length of each pause")
    parser.add_argument(
        "--postgres",
        default="",
        help="a PostgreSQL server's URL (postgresql://user@host:port/db): each rep writes "
        "to a database created there and dropped after [default: a temporary SQLite file]",
    )
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > CPU:
            os.sched_setaffinity(0, {CPU})
        # On uvloop, as ``modelplane serve`` runs.
        us = uvloop.run(
            stage(args.child, args.requests, args.database, args.burst, args.pause_ms / 1000)
        )
        print(f"{us:.3f}")
        return
    where = (
        "PostgreSQL (a new database each rep)" if args.postgres else "SQLite (a new file each rep)"
    )
    print(
        f"governance alone, {args.requests:,} requests per rep, a pause of {args.pause_ms:g} ms "
        f"every {args.burst}, on core {CPU}; usage written to {where}; median of {args.reps}\n"
    )
    samples: dict[str, list[float]] = {name: [] for name in STAGES}
    for rep in range(args.reps):
        order = STAGES[rep % len(STAGES) :] + STAGES[: rep % len(STAGES)]
        for name in order:
            samples[name].append(measure(args, name))
    print("| stage | CPU µs/request | range over reps | this stage adds |")
    print("| --- | --- | --- | --- |")
    previous = None
    for name in STAGES:
        median = statistics.median(samples[name])
        added = "" if previous is None else f"{median - previous:+.1f} µs"
        low, high = min(samples[name]), max(samples[name])
        print(f"| {name} | {median:.1f} | {low:.1f} to {high:.1f} | {added} |")
        previous = median
    total = statistics.median(samples["write"]) - statistics.median(samples["baseline"])
    print(f"\ngovernance in all: {total:.1f} µs of CPU a request")


if __name__ == "__main__":
    main()
