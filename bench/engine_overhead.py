"""What modelplane costs on top of llama.cpp: decode tokens/s and time to first token.

Serves the bundled model (SmolLM2) two ways with the same messages, greedy sampling,
repeat penalty and thread count, alternating them run by run (never at the same time),
so that a slow spell of a noisy machine hits both sides:

- direct: llama-cpp-python in this process, called from one dedicated thread (a
  ``Llama`` is not thread-safe, and switching OS threads slows decoding). At concurrency
  4 that thread serves the requests one after another; their TTFT includes the wait.
- modelplane: a ``modelplane serve`` subprocess with one engine replica, streamed through
  ``/v1/chat/completions`` with aiohttp; at concurrency 4, four requests at once.

TTFT: submission to the first chunk with content. tok/s at concurrency 1: decode rate,
(completion tokens - 1) / (last - first content chunk); at 4: aggregate, all completion
tokens / (submission to the last content chunk). Warm-up, then medians of ``--reps``.

Run: ``.venv/bin/python bench/engine_overhead.py`` (``--help`` for options)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, astuple, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from rich.console import Console
from rich.table import Table

from modelplane.engines.bundled import SMOLLM2
from modelplane.engines.llamacpp.weights import resolve_source

PROMPT = "Write a long story about a dragon who learns to bake bread."
# The bundled model sends an empty system message when a chat request has none, and
# samples with its repeat penalty: the direct side does the same.
MESSAGES = [{"role": "system", "content": ""}, {"role": "user", "content": PROMPT}]
ADMIN_KEY = "mp-bench-engine-overhead"
CONCURRENCY = (1, 4)
START_TIMEOUT_S = 300.0


@dataclass
class Req:
    """One request: perf_counter timestamps and completion tokens."""

    submitted: float
    first: float
    last: float
    tokens: int


@dataclass
class Point:
    tok_s: float
    ttft_ms: float


Samples = dict[int, list[Point]]


def summarize(reqs: list[Req]) -> Point:
    ttft = statistics.fmean(r.first - r.submitted for r in reqs) * 1000
    if len(reqs) == 1:
        return Point((reqs[0].tokens - 1) / (reqs[0].last - reqs[0].first), ttft)
    wall = max(r.last for r in reqs) - min(r.submitted for r in reqs)
    return Point(sum(r.tokens for r in reqs) / wall, ttft)


def median(points: list[Point]) -> Point:
    return Point(*(statistics.median(v) for v in zip(*map(astuple, points), strict=True)))


Run = Callable[[int], list[Req]]


def measure(direct: Run, modelplane: Run, reps: int) -> tuple[Samples, Samples]:
    """Warm both up, then alternate them rep by rep, so that a slow spell of a noisy
    machine lands on both sides instead of on one."""
    d_out: Samples = {}
    m_out: Samples = {}
    for c in CONCURRENCY:
        direct(c)
        modelplane(c)
        d_out[c], m_out[c] = [], []
        for _ in range(reps):
            d_out[c].append(summarize(direct(c)))
            m_out[c].append(summarize(modelplane(c)))
    return d_out, m_out


@contextlib.contextmanager
def direct(threads: int, max_tokens: int) -> Iterator[Run]:
    from llama_cpp import Llama

    path = str(resolve_source("smollm2"))
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
    llm: Any = pool.submit(
        Llama, path, n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False
    ).result()

    def one(submitted: float) -> Req:
        first = last = 0.0
        text, finish = "", None
        for chunk in llm.create_chat_completion(
            MESSAGES,
            stream=True,
            temperature=0,
            max_tokens=max_tokens,
            repeat_penalty=SMOLLM2.defaults["repeat_penalty"],
        ):
            choice = chunk["choices"][0]
            if content := choice["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
                text += content
            finish = choice.get("finish_reason") or finish
        # The stream reports no usage; a length stop is exactly max_tokens.
        n = max_tokens if finish == "length" else len(llm.tokenize(text.encode(), add_bos=False))
        return Req(submitted, first, last, n)

    def serially(c: int) -> list[Req]:
        submitted = time.perf_counter()
        return [one(submitted) for _ in range(c)]

    try:
        yield lambda c: pool.submit(serially, c).result()
    finally:
        pool.submit(llm.close).result()
        pool.shutdown()


async def stream_one(session: aiohttp.ClientSession, max_tokens: int) -> Req:
    """One streamed chat completion, timed on the client.

    The client is aiohttp, whose C parser needs little CPU per chunk: on a 2-core
    machine whatever the client burns is taken from the model's decode threads and
    would be counted against modelplane.
    """
    body = {
        "model": "smollm2",
        "messages": MESSAGES[1:],
        "stream": True,
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream_options": {"include_usage": True},
    }
    submitted = time.perf_counter()
    first = last = 0.0
    tokens = 0
    async with session.post("/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices") or ():
                if choice["delta"].get("content"):
                    last = time.perf_counter()
                    first = first or last
    return Req(submitted, first, last, tokens)


async def start_endpoint(
    client: httpx.AsyncClient, proc: subprocess.Popen[bytes], options: dict[str, Any]
) -> list[int]:
    """Wait for the server, create the endpoint, wait for its replica; return its pids."""
    deadline = time.monotonic() + START_TIMEOUT_S
    created = False
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        await asyncio.sleep(0.2)
        if not created:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/readyz")).status_code == 200:
                    spec = {
                        "name": "smollm2",
                        "model": "smollm2",
                        "replicas": 1,
                        "options": options,
                    }
                    (await client.post("/api/endpoints", json=spec)).raise_for_status()
                    created = True
            continue
        ep = (await client.get("/api/endpoints/smollm2")).raise_for_status().json()
        if ep["ready_replicas"] == 1:
            return [r["pid"] for r in ep["replica_status"] if r["pid"]]
    raise TimeoutError(f"endpoint smollm2 not ready within {START_TIMEOUT_S:.0f} s")


def stop(proc: subprocess.Popen[bytes], engine_pids: list[int]) -> None:
    """SIGTERM the server, then make sure neither it nor its replicas outlive us."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        print("server ignored SIGTERM for 30 s; killing it", file=sys.stderr)
        proc.kill()
        proc.wait()
    # The server waits for its replicas to exit before it does; this is a safety net.
    for pid in engine_pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            print(f"engine replica {pid} outlived the server; killed it", file=sys.stderr)


@contextlib.contextmanager
def through_modelplane(threads: int, max_tokens: int, max_batch: int | None) -> Iterator[Run]:
    with tempfile.TemporaryDirectory(prefix="mp-bench-") as home:
        env = os.environ | {
            "MODELPLANE_HOME": home,
            "MODELPLANE_ADMIN_KEY": ADMIN_KEY,
            "MODELPLANE_ENGINE_THREADS": str(threads),
            "MODELPLANE_LOG_FORMAT": "json",
        }
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log_path = Path(home, "server.log")
        with log_path.open("wb") as log:
            cmd = [sys.executable, "-m", "modelplane", "serve", "--port", str(port)]
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        loop = asyncio.new_event_loop()
        client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=httpx.Timeout(120, connect=5),
        )

        async def open_session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                timeout=aiohttp.ClientTimeout(total=120),
            )

        session = loop.run_until_complete(open_session())

        async def at_once(c: int) -> list[Req]:
            return list(await asyncio.gather(*(stream_one(session, max_tokens) for _ in range(c))))

        engine_pids: list[int] = []
        try:
            options = {} if max_batch is None else {"max_batch": max_batch}
            engine_pids = loop.run_until_complete(start_endpoint(client, proc, options))
            yield lambda c: loop.run_until_complete(at_once(c))
        except Exception:
            print(log_path.read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            stop(proc, engine_pids)
            loop.run_until_complete(client.aclose())
            loop.run_until_complete(session.close())
            loop.close()


def report(args: argparse.Namespace, direct: Samples, mp: Samples) -> dict[str, Any]:
    facts = {
        "cpu_count": os.cpu_count(),
        "n_threads": args.threads,
        "llama_cpp_python": metadata.version("llama-cpp-python"),
        "max_tokens": args.max_tokens,
        "reps": args.reps,
    }
    table = Table(
        title=f"modelplane engine overhead (median of {args.reps})",
        caption="tok/s: decode rate at concurrency 1, aggregate at 4; TTFT: mean per request",
    )
    for head in ("concurrency", "direct tok/s", "modelplane tok/s", "ratio"):
        table.add_column(head, justify="right")
    for head in ("direct TTFT ms", "modelplane TTFT ms", "extra TTFT ms"):
        table.add_column(head, justify="right")
    rows = []
    for c in CONCURRENCY:
        d, m = median(direct[c]), median(mp[c])
        vals = {
            "direct_tok_s": d.tok_s,
            "modelplane_tok_s": m.tok_s,
            "ratio": m.tok_s / d.tok_s,
            "direct_ttft_ms": d.ttft_ms,
            "modelplane_ttft_ms": m.ttft_ms,
            "extra_ttft_ms": m.ttft_ms - d.ttft_ms,
        }
        rows.append({"concurrency": c, **vals})
        table.add_row(str(c), *(f"{v:.{2 if k == 'ratio' else 1}f}" for k, v in vals.items()))
    ok_ratio, ok_ttft = rows[0]["ratio"] >= 0.90, rows[0]["extra_ttft_ms"] <= 10
    console = Console(width=120)
    console.print(table)
    console.print(
        f"targets at concurrency 1: ratio >= 0.90 ({'met' if ok_ratio else 'MISSED'}), "
        f"extra TTFT <= 10 ms ({'met' if ok_ttft else 'MISSED'})"
    )
    console.print(" · ".join(f"{k}={v}" for k, v in facts.items()))
    samples = {"direct": direct, "modelplane": mp}
    return {"machine": facts, "rows": rows, "targets_met": ok_ratio and ok_ttft, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="engine threads")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per answer")
    parser.add_argument("--reps", type=int, default=5, help="measured runs per concurrency")
    parser.add_argument(
        "--max-batch",
        type=int,
        help="endpoint option max_batch [default: the engine's own default]",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    with (
        through_modelplane(args.threads, args.max_tokens, args.max_batch) as via_modelplane,
        direct(args.threads, args.max_tokens) as in_process,
    ):
        direct_samples, modelplane_samples = measure(in_process, via_modelplane, args.reps)
    result = report(args, direct_samples, modelplane_samples)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=asdict) + "\n")


if __name__ == "__main__":
    main()
