"""Instructions per request the gateway executes, counted by callgrind.

``bench/gateway.py`` times the gateway, and on a small shared machine its figures move
by more than most single changes to the request path: the same code reads 10 to 40 %
apart from one run to the next. Counting instructions instead is repeatable to a few
percent (the rest is timer-driven work, such as usage batches, whose share depends on
the pace), so it can tell whether a change to the request path made it cheaper, and by
how much, where timing cannot. It is not a speed: it counts user-space instructions
only (no system calls, no cache misses), and valgrind runs the server some 50 times
slower than normal.

Each side is a real ``modelplane serve`` under ``valgrind --tool=callgrind`` in front of
``bench/mock_upstream.py``, with the mock registered as in ``bench/gateway.py``; a side
is one of that script's gateway variants (``--variants``), from this checkout or from
each of ``--against``'s source trees (say a ``git worktree`` of the commit before a
change), so that before and after are counted in one run, or this checkout run by each
of ``--python``'s interpreters. Instrumentation is off while
a server starts and while it warms up (``--warmup`` requests), then on for exactly
``--requests`` requests sent by ``--concurrency`` connections of an aiohttp client in
this process, then off again; the table gives the median over ``--reps`` such counts
(the sides rotated rep by rep) and each side against the first checkout's same variant.

Run: ``.venv/bin/python bench/instructions.py`` (``--help`` for options; needs valgrind)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from gateway import (
    GATEWAY_CPU,
    LOAD_CPU,
    VARIANTS,
    Source,
    body,
    gateway,
    listed,
    mock,
    post,
    process,
    register,
    sources,
)

START_TIMEOUT_S = 600
"""A server starts several times slower under valgrind."""


@dataclass
class Side:
    variant: str
    checkout: str
    """``this``, a source tree's short commit (its folder name outside git), or another
    interpreter's ``py<version>-<venv>``."""
    url: str
    pid: int
    out: Path
    counts: list[float] = field(default_factory=list)
    """Instructions per request, one per rep."""


async def drive(url: str, requests: int, concurrency: int, stream: bool) -> None:
    """Exactly ``requests`` requests, ``concurrency`` at a time; every one must answer 200."""
    data = body(stream)
    left = requests

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await post(session, url, data)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def counted(side: Side, args: argparse.Namespace) -> float:
    """One rep: instructions per request over ``--requests`` requests."""
    before = set(side.out.parent.glob(side.out.name + "*"))
    control(side.pid, "--instr=on")
    asyncio.run(drive(side.url, args.requests, args.concurrency, args.stream))
    control(side.pid, "--instr=off")
    control(side.pid, "--dump")  # the counts since the last dump, then zeroed
    (dump,) = set(side.out.parent.glob(side.out.name + "*")) - before
    found = re.search(r"^totals: (\d+)", dump.read_text(errors="replace"), re.M)
    if found is None:
        raise RuntimeError(f"{dump} has no totals line")
    return int(found[1]) / args.requests


def start(
    stack: contextlib.ExitStack, home: Path, direct: str, variant: str, origin: Source
) -> Side:
    name = origin.name or "this"
    where = home / f"{variant}-{name}"
    where.mkdir()
    cmd, env, url = gateway(where, variant, direct, origin.python)
    out = home / f"callgrind.{variant}-{name}"
    wrapped = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
    wrapped += [f"--callgrind-out-file={out}", *cmd]
    log = home / f"gateway-{variant}-{name}.log"
    server = stack.enter_context(process(wrapped, GATEWAY_CPU, log, env=env, cwd=origin.cwd))
    register(url, direct, server, START_TIMEOUT_S)
    return Side(variant, name, url, server.pid, out)


def report(sides: list[Side], args: argparse.Namespace) -> None:
    mode = "stream" if args.stream else "non-stream"
    print(
        f"{args.requests} {mode} requests per rep at concurrency {args.concurrency}, "
        f"after {args.warmup} uncounted; median of {args.reps}\n"
    )
    print("| variant | checkout | k instructions/request | range | vs first checkout |")
    print("| --- | --- | --- | --- | --- |")
    first: dict[str, float] = {}
    for side in sides:
        median = statistics.median(side.counts)
        if side.variant in first:
            change = f"{(median / first[side.variant] - 1) * 100:+.1f}%"
        else:
            first[side.variant], change = median, ""
        spread = f"{min(side.counts) / 1e3:.1f} to {max(side.counts) / 1e3:.1f}"
        row = [side.variant, side.checkout, f"{median / 1e3:.1f}", spread, change]
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants",
        default="ungoverned,metrics",
        help=f"gateway variants of bench/gateway.py, comma-separated: {', '.join(VARIANTS)} "
        "[default: ungoverned,metrics]",
    )
    parser.add_argument(
        "--against",
        default="",
        help="other source trees (folders holding a modelplane package), comma-separated, "
        "counted beside this checkout",
    )
    parser.add_argument(
        "--python",
        default="",
        help="other interpreters (a virtual environment's python with modelplane's "
        "dependencies), comma-separated, each counted running this checkout",
    )
    parser.add_argument("--requests", type=int, default=1000, help="counted requests per rep")
    parser.add_argument("--warmup", type=int, default=200, help="uncounted requests first")
    parser.add_argument("--concurrency", type=int, default=16, help="connections")
    parser.add_argument("--reps", type=int, default=3, help="counts per side")
    parser.add_argument("--stream", action="store_true", help="streaming requests")
    parser.add_argument(
        "--keep",
        type=Path,
        help="copy each side's callgrind dumps (one per rep) into this folder, for "
        "callgrind_annotate",
    )
    args = parser.parse_args()
    variants = listed(args.variants)
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variant(s): {', '.join(sorted(unknown))}")
    origins = sources(parser, args.against, args.python)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("needs valgrind (apt-get install valgrind)")
    with (
        tempfile.TemporaryDirectory(prefix="mp-bench-instr-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        home = Path(tmp)
        direct = stack.enter_context(mock(home))
        sides = [start(stack, home, direct, v, t) for v in variants for t in origins]
        for side in sides:
            asyncio.run(drive(side.url, args.warmup, args.concurrency, args.stream))
        for rep in range(args.reps):
            shift = rep % len(sides)
            for side in sides[shift:] + sides[:shift]:
                side.counts.append(counted(side, args))
        report(sides, args)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for dump in home.glob("callgrind.*"):
                shutil.copy(dump, args.keep)
            print(f"\ncallgrind dumps in {args.keep}")


if __name__ == "__main__":
    os.sched_setaffinity(0, {LOAD_CPU})  # with the mock, away from the servers
    main()
