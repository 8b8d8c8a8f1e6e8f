"""What modelplane costs on top of llama.cpp: decode tokens/s and time to first token.

Runs the bundled model (SmolLM2) twice, one after the other, with the same prompt,
messages, greedy sampling and thread count:

- direct: llama-cpp-python in this process, every call made from one dedicated thread
  (a ``Llama`` is not thread-safe, and switching OS threads slows decoding). At
  concurrency 4 the four requests are served one after another by that thread, which
  is all llama-cpp-python can do; their TTFT includes the wait in that queue.
- modelplane: a real ``modelplane serve`` subprocess with one engine replica, streamed
  through ``/v1/chat/completions`` by an httpx client; at concurrency 4 four requests
  are sent at once.

Measures, per request: TTFT (submission to the first chunk with content) and decode
tok/s = (completion tokens - 1) / (last content chunk - first content chunk). At
concurrency 4 the tok/s column is aggregate: all completion tokens / (submission to the
last content chunk of any request). Warm-up runs first, then the median of ``--reps``.

Targets: modelplane/direct ratio >= 0.90 and extra TTFT <= 10 ms at concurrency 1.

Run: ``.venv/bin/python bench/engine_overhead.py [--threads N] [--max-tokens M]
[--reps R] [--json results.json]``
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, astuple, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from modelplane.engines.llamacpp.weights import resolve_source

PROMPT = "Write a long story about a dragon who learns to bake bread."
# modelplane's bundled model sends an empty system message when a request has none.
MESSAGES: list[dict[str, str]] = [
    {"role": "system", "content": ""},
    {"role": "user", "content": PROMPT},
]
USER_ONLY = MESSAGES[1:]
ADMIN_KEY = "mp-bench-engine-overhead"
CONCURRENCY = (1, 4)


@dataclass
class Req:
    """One request's timings (perf_counter seconds) and completion tokens."""

    submitted: float
    first: float
    last: float
    tokens: int


@dataclass
class Point:
    tok_s: float
    ttft_ms: float


Samples = dict[int, list[Point]]
"""Per concurrency, one point per repetition."""


def median(points: list[Point]) -> Point:
    return Point(*(statistics.median(v) for v in zip(*map(astuple, points), strict=True)))


def summarize(reqs: list[Req]) -> Point:
    """Single request: decode rate; several: aggregate rate. TTFT is the mean."""
    ttft = statistics.fmean(r.first - r.submitted for r in reqs) * 1000
    if len(reqs) == 1:
        r = reqs[0]
        return Point((r.tokens - 1) / (r.last - r.first), ttft)
    start = min(r.submitted for r in reqs)
    return Point(sum(r.tokens for r in reqs) / (max(r.last for r in reqs) - start), ttft)


def measure(run: Callable[[int], list[Req]], reps: int) -> Samples:
    """Warm up once per concurrency, then run it ``reps`` times."""
    out: Samples = {}
    for c in CONCURRENCY:
        run(c)
        out[c] = [summarize(run(c)) for _ in range(reps)]
    return out


def direct(threads: int, max_tokens: int, reps: int) -> Samples:
    from llama_cpp import Llama

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
    llm: Any = pool.submit(
        lambda: Llama(
            model_path=str(resolve_source("smollm2")),
            n_ctx=4096,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
    ).result()

    def one(submitted: float) -> Req:
        first = last = 0.0
        text, finish = "", None
        for chunk in llm.create_chat_completion(
            MESSAGES, stream=True, temperature=0, max_tokens=max_tokens, repeat_penalty=1.0
        ):
            choice = chunk["choices"][0]
            if choice["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
                text += choice["delta"]["content"]
            finish = choice.get("finish_reason") or finish
        # The stream carries no usage; a length stop is exactly max_tokens.
        n = max_tokens if finish == "length" else len(llm.tokenize(text.encode(), add_bos=False))
        return Req(submitted, first, last, n)

    def batch(c: int) -> list[Req]:
        submitted = time.perf_counter()
        return [one(submitted) for _ in range(c)]

    try:
        return measure(lambda c: pool.submit(batch, c).result(), reps)
    finally:
        pool.submit(llm.close).result()
        pool.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def stream_one(client: httpx.AsyncClient, max_tokens: int) -> Req:
    body = {
        "model": "smollm2",
        "messages": USER_ONLY,
        "stream": True,
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream_options": {"include_usage": True},
    }
    submitted = time.perf_counter()
    first = last = 0.0
    tokens = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
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


async def wait_ready(client: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> list[int]:
    """Create the endpoint once the server is ready; return its replicas' pids."""
    deadline = time.monotonic() + 300
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError("server or endpoint not ready within 300 s")
        with contextlib.suppress(httpx.TransportError):
            if (await client.get("/readyz")).status_code == 200:
                break
        await asyncio.sleep(0.2)
    spec = {"name": "smollm2", "model": "smollm2", "replicas": 1}
    (await client.post("/api/endpoints", json=spec)).raise_for_status()
    while True:
        ep = (await client.get("/api/endpoints/smollm2")).raise_for_status().json()
        if ep["ready_replicas"] == 1:
            return [r["pid"] for r in ep["replica_status"] if r["pid"]]
        if time.monotonic() > deadline:
            raise TimeoutError(f"endpoint not ready within 300 s: {ep['replica_status']}")
        await asyncio.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(proc: subprocess.Popen[bytes], engine_pids: list[int]) -> None:
    """SIGTERM the server, then make sure neither it nor its replicas outlive us."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        print("server ignored SIGTERM for 30 s; killing it", file=sys.stderr)
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in engine_pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in filter(alive, engine_pids):
        print(f"engine replica {pid} outlived the server; killing it", file=sys.stderr)
        os.kill(pid, signal.SIGKILL)


def through_modelplane(threads: int, max_tokens: int, reps: int) -> Samples:
    with tempfile.TemporaryDirectory(prefix="mp-bench-") as home:
        env = os.environ | {
            "MODELPLANE_HOME": home,
            "MODELPLANE_ADMIN_KEY": ADMIN_KEY,
            "MODELPLANE_ENGINE_THREADS": str(threads),
            "MODELPLANE_LOG_FORMAT": "json",
        }
        log_path = Path(home, "server.log")
        port = free_port()
        cmd = [sys.executable, "-m", "modelplane", "serve", "--port", str(port)]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        engine_pids: list[int] = []
        loop = asyncio.new_event_loop()
        client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=httpx.Timeout(120, connect=5),
        )

        async def batch(c: int) -> list[Req]:
            return list(await asyncio.gather(*(stream_one(client, max_tokens) for _ in range(c))))

        try:
            engine_pids = loop.run_until_complete(wait_ready(client, proc))
            return measure(lambda c: loop.run_until_complete(batch(c)), reps)
        except Exception:
            print(log_path.read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            stop(proc, engine_pids)
            loop.run_until_complete(client.aclose())
            loop.close()


def report(args: argparse.Namespace, direct: Samples, mp: Samples) -> dict[str, Any]:
    facts = {
        "cpu_count": os.cpu_count(),
        "n_threads": args.threads,
        "llama_cpp_python": metadata.version("llama-cpp-python"),
        "max_tokens": args.max_tokens,
        "reps": args.reps,
    }
    table = Table(title="modelplane engine overhead (median of reps)")
    heads = ["concurrency", "direct tok/s", "modelplane tok/s", "ratio", "direct TTFT ms"]
    for h in [*heads, "modelplane TTFT ms", "extra TTFT ms"]:
        table.add_column(h, justify="right")
    rows = []
    for c in CONCURRENCY:
        d, m = median(direct[c]), median(mp[c])
        row = {
            "concurrency": c,
            "direct_tok_s": d.tok_s,
            "modelplane_tok_s": m.tok_s,
            "ratio": m.tok_s / d.tok_s,
            "direct_ttft_ms": d.ttft_ms,
            "modelplane_ttft_ms": m.ttft_ms,
            "extra_ttft_ms": m.ttft_ms - d.ttft_ms,
        }
        rows.append(row)
        cells = [f"{v:.2f}" if k == "ratio" else f"{v:.1f}" for k, v in row.items()]
        table.add_row(str(c), *cells[1:])
    console = Console(width=120)
    console.print(table)
    r1 = rows[0]
    ok_ratio, ok_ttft = r1["ratio"] >= 0.90, r1["extra_ttft_ms"] <= 10
    console.print(
        f"targets at concurrency 1: ratio >= 0.90 ({'met' if ok_ratio else 'MISSED'}), "
        f"extra TTFT <= 10 ms ({'met' if ok_ttft else 'MISSED'})"
    )
    console.print("tok/s: decode rate at concurrency 1, aggregate at 4; TTFT: mean per request")
    console.print(" · ".join(f"{k}={v}" for k, v in facts.items()))
    samples = {
        side: {c: [asdict(p) for p in points] for c, points in data.items()}
        for side, data in (("direct", direct), ("modelplane", mp))
    }
    return {"machine": facts, "rows": rows, "targets_met": ok_ratio and ok_ttft, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    d = direct(args.threads, args.max_tokens, args.reps)
    m = through_modelplane(args.threads, args.max_tokens, args.reps)
    result = report(args, d, m)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
