"""What the gateway adds: a mock upstream called directly vs through modelplane.

Requests/s and latency, with auth on (an API key in every request).

The upstream is ``bench/mock_upstream.py`` (fixed answers, no model), so nearly all the
time measured is HTTP handling. For each of non-streaming and streaming and each
concurrency, both sides run ``--duration`` seconds after a warm-up, alternating which
goes first rep by rep, so that a slow spell of a noisy machine hits both:

- direct: the load generator → the mock.
- gateway: the load generator → ``modelplane serve`` (an API key in every request, the
  mock registered as an external ``openai`` endpoint) → the mock.

``--observability`` runs one gateway per variant, side by side and measured in turn in
the same run: ``off`` (``MODELPLANE_METRICS_ENABLED=false``, no tracing), ``metrics``
(the default configuration: Prometheus metrics, no tracing), ``on`` (metrics, and
tracing exported over OTLP/HTTP to the mock, which drops the spans, at the default
sample ratio), ``all`` (the same, every request traced) and ``logged`` (``metrics`` at
the default log level, INFO, with its summary line per request; every other variant
logs at WARNING); ``both`` is ``off,on``. Their throughput and CPU per request are
compared at the end.

``--reference`` adds proxies that do far less than the gateway, each in front of the same
mock, pinned like the gateway and measured in the same rotation: ``haproxy`` and
``nginx`` (compiled reverse proxies with keep-alive pools to the mock, one thread or
worker each; used if installed) and ``relay`` (``bench/relay.py``: a Python TCP relay on
uvloop, no HTTP parsing: the least any Python proxy adds). None of them checks an API
key. The gateway's CPU per request and added latency are then also given as multiples of
each one's, which, unlike absolute figures, carry over between machines: wake-ups of an
idle core, for one, cost a different amount on every host. No latency multiple is given
where a reference adds less than ``MEASURABLE_MS``.

Pinning: the gateway (and each reference) on core 0; the mock and the load generator
together on core 1. The load generator is ``wrk`` (C, one thread, a Lua script for the
POST body) where it is installed, else an aiohttp client in this process. Each
connection sends its next request as soon as the answer is in (closed loop), or, with
``--rate``, after a pause that caps the total rate. Latency: submission to the last byte
of the answer (the whole stream when streaming). Medians of ``--reps``; the added
latency is the median of each rep's gateway minus direct. CPU µs/req: the gateway's user
+ system time per request, read from /proc (steadier than requests/s when other work
shares the core).

Run: ``.venv/bin/python bench/gateway.py`` (``--help`` for options)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

ADMIN_KEY = "mp-bench-gateway-0123456789abcdefghijklmnopqrstuvwxyz"
GATEWAY_CPU, LOAD_CPU = 0, 1
PATH = "/v1/chat/completions"
HERE = Path(__file__).resolve().parent
PRICE = {"input_per_1m": 0.15, "output_per_1m": 0.6}
LIMITS = {"rpm": 10**9, "tpm": 10**12}
"""The mock endpoint's price and limits (high enough never to refuse), so that a governed
gateway does all its per-request work: limit counters, cost, a usage record."""


@dataclass
class Point:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_us: float = 0.0
    """The gateway's CPU time per request; 0 on the direct side."""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


@dataclass
class Cell:
    """One mode, concurrency and gateway variant: every rep of both sides."""

    stream: bool
    concurrency: int
    direct: list[Point]
    gateway: list[Point]
    variant: str = "metrics"


VARIANTS: dict[str, dict[str, str]] = {
    "off": {"MODELPLANE_METRICS_ENABLED": "false"},
    "metrics": {},
    "on": {"MODELPLANE_OTEL_ENDPOINT": "{mock}"},
    "all": {"MODELPLANE_OTEL_ENDPOINT": "{mock}", "MODELPLANE_OTEL_SAMPLE_RATIO": "1"},
    # The default log level: one access line per request (the others run at WARNING).
    "logged": {"MODELPLANE_LOG_LEVEL": "INFO"},
    # Governance (rate limits, budgets, usage records) off; auth and tenancy stay on.
    # Compare with ``off`` (metrics off too) to see governance alone.
    "ungoverned": {"MODELPLANE_GOVERNANCE_ENABLED": "false", "MODELPLANE_METRICS_ENABLED": "false"},
}
"""The gateway's settings per ``--observability`` variant (``{mock}``: the mock's URL)."""

HAPROXY = """global
  nbthread 1
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend bench
  bind 127.0.0.1:{port}
  default_backend mock
backend mock
  server mock {upstream}
"""
NGINX = """daemon off;
master_process off;
worker_processes 1;
pid {home}/nginx.pid;
error_log {home}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {home}/body;
  proxy_temp_path {home}/proxy;
  fastcgi_temp_path {home}/fastcgi;
  uwsgi_temp_path {home}/uwsgi;
  scgi_temp_path {home}/scgi;
  upstream mock {{ server {upstream}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""


def reference(name: str, home: Path, direct: str) -> tuple[list[str], str] | None:
    """The command and URL of one ``--reference`` proxy in front of the mock (None: not
    installed)."""
    port = free_port()
    upstream = direct.removeprefix("http://")
    if name == "relay":
        relay = [sys.executable, str(HERE / "relay.py"), "--upstream", upstream]
        return [*relay, "--port", str(port)], f"http://127.0.0.1:{port}"
    binary = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        return None
    home.mkdir()
    config = home / f"{name}.conf"
    template = HAPROXY if name == "haproxy" else NGINX
    config.write_text(template.format(port=port, upstream=upstream, home=home))
    cmd = [binary, "-f", str(config), "-db"] if name == "haproxy" else [binary, "-c", str(config)]
    return cmd, f"http://127.0.0.1:{port}"


REFERENCES = ("haproxy", "nginx", "relay")


def body(stream: bool) -> bytes:
    msg = [{"role": "user", "content": "Say hello."}]
    return json.dumps(
        {"model": "mock", "messages": msg, "max_tokens": 16, "stream": stream}
    ).encode()


Load = Callable[[str, int, int, bool], Point]
"""(base URL, connections, seconds, stream) -> Point"""

WRK_SCRIPT = """wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
%s
done = function(s, lat, _)
  local e = s.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%d\\n", s.requests, s.duration,
    lat:percentile(50), lat:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def pause_ms(c: int, rate: float) -> int:
    """Each connection's mean pause between requests for ``rate`` requests/s in all (a
    cap: latency adds to it, so the real rate is lower). Pauses are drawn uniformly from
    0 to twice the mean, so that connections do not fall into step and arrive in bursts."""
    return round(c * 1000 / rate) if rate else 0


def wrk_load(scripts: Path, rate: float) -> Load:
    def run(url: str, c: int, seconds: int, stream: bool) -> Point:
        script = scripts / "load.lua"
        pause = pause_ms(c, rate)
        delay = f"function delay() return math.random(0, {2 * pause}) end" if pause else ""
        script.write_text(WRK_SCRIPT % (body(stream).decode(), ADMIN_KEY, delay))
        cmd = ["wrk", "-t1", f"-c{c}", f"-d{seconds}s", "-s", str(script), url + PATH]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode or "RESULT " not in done.stdout:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
        n, us, p50, p99, errors = map(int, done.stdout.rsplit("RESULT ", 1)[1].split())
        if errors:
            raise RuntimeError(f"wrk saw {errors} errors against {url}:\n{done.stdout}")
        return Point(n, us / 1e6, p50 / 1000, p99 / 1000)

    return run


HEADERS = {"content-type": "application/json", "authorization": f"Bearer {ADMIN_KEY}"}


async def post(session: aiohttp.ClientSession, url: str, data: bytes) -> None:
    """One request to ``url``'s chat completions, read to the end; it must answer 200."""
    async with session.post(url + PATH, data=data, headers=HEADERS) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url} answered HTTP {r.status}")


def python_load(rate: float) -> Load:
    """aiohttp workers in this process (pinned with the mock): the fallback without wrk."""

    async def go(url: str, c: int, seconds: int, stream: bool) -> Point:
        data, lat, pause = body(stream), [], pause_ms(c, rate) / 1000
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:
            start = time.perf_counter()

            async def worker() -> None:
                while (t0 := time.perf_counter()) < start + seconds:
                    await post(session, url, data)
                    lat.append(time.perf_counter() - t0)
                    await asyncio.sleep(random.uniform(0, 2 * pause))

            await asyncio.gather(*(worker() for _ in range(c)))
            wall = time.perf_counter() - start
        q = statistics.quantiles(lat, n=100, method="inclusive")
        return Point(len(lat), wall, q[49] * 1000, q[98] * 1000)

    return lambda *a: asyncio.run(go(*a))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def call(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data, method="POST" if data else "GET")
    req.add_header("authorization", f"Bearer {ADMIN_KEY}")
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextlib.contextmanager
def process(cmd: list[str], cpu: int, log: Path, **kw: object) -> Iterator[subprocess.Popen[bytes]]:
    """A child pinned to one core, its output in ``log`` (printed if the benchmark fails)."""
    with log.open("wb") as out:
        pin = lambda: os.sched_setaffinity(0, {cpu})  # noqa: E731
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pin, **kw)  # type: ignore[call-overload]
    try:
        yield proc
    except BaseException:
        print(f"--- {log.name} (end)\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(
    check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], timeout_s: float = 60
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with code {proc.returncode}")
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {timeout_s:g} s")


def answers(url: str, data: bytes | None = None) -> bool:
    """Whether ``url`` answers 200 (to a POST of ``data``, if given)."""
    return call(url, data)[0] == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway(
    home: Path, variant: str, direct: str, python: str = sys.executable
) -> tuple[list[str], dict[str, str], str]:
    """The command, environment and URL of one variant's ``modelplane serve``, run by
    ``python``."""
    url = f"http://127.0.0.1:{free_port()}"
    cmd = [python, "-m", "modelplane", "serve", "--port", url.rsplit(":", 1)[1]]
    env = os.environ | {
        "MODELPLANE_HOME": str(home),
        "MODELPLANE_ADMIN_KEY": ADMIN_KEY,
        "MODELPLANE_LOG_LEVEL": "WARNING",
        "MODELPLANE_LOG_FORMAT": "json",
    }
    env |= {k: v.format(mock=direct) for k, v in VARIANTS[variant].items()}
    return cmd, env, url


def register(gw: str, direct: str, server: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """The mock as the gateway's endpoint ``mock``, live once both kinds get through."""
    ready = functools.partial(answers, gw + "/readyz")
    wait_until(ready, "gateway /readyz", server, timeout_s)
    options = {"base_url": direct + "/v1", "price": PRICE, "limits": LIMITS}
    spec = {"name": "mock", "provider": "openai", "model": "mock", "options": options}
    status, answer = call(gw + "/api/endpoints", json.dumps(spec).encode())
    if status != 201:
        raise RuntimeError(f"POST /api/endpoints answered {status}: {answer.decode()[:500]}")
    for stream in (False, True):
        routed = functools.partial(answers, gw + PATH, body(stream))
        wait_until(routed, "route", server, timeout_s)


@contextlib.contextmanager
def mock(home: Path) -> Iterator[str]:
    """The mock upstream on the load generator's core: its URL."""
    port = free_port()
    direct = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, str(HERE / "mock_upstream.py"), "--port", str(port)]
    with process(cmd, LOAD_CPU, home / "mock.log") as proc:
        wait_until(functools.partial(answers, direct + "/v1/models"), "mock upstream", proc)
        yield direct


def label(tree: Path) -> str:
    """A source tree's name in tables: its short commit (its folder's name outside git)."""
    done = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or tree.name


def trees(parser: argparse.ArgumentParser, against: str) -> list[Path]:
    """``--against``'s source trees, each checked to hold a ``modelplane`` package."""
    found = []
    for folder in listed(against):
        tree = Path(folder).resolve()
        if not (tree / "modelplane" / "__init__.py").is_file():
            parser.error(f"--against {folder}: no modelplane package there")
        found.append(tree)
    return found


def interpreters(parser: argparse.ArgumentParser, pythons: str) -> list[Source]:
    """``--python``'s interpreters, each checked to import what the server needs (its
    ``modelplane`` comes from this checkout, where the server starts)."""
    found = []
    for python in listed(pythons):
        probe = "import fastapi, uvicorn, uvloop, httptools, sys; print(sys.version.split()[0])"
        done = subprocess.run(
            [python, "-c", probe], capture_output=True, text=True, check=False, cwd=Source().cwd
        )
        if done.returncode:
            parser.error(f"--python {python}: cannot run the server ({done.stderr.strip()[-300:]})")
        venv = Path(python).parent.parent.name  # .../<venv>/bin/python
        found.append(Source(python=python, name=f"py{done.stdout.strip()}-{venv}"))
    return found


@dataclass(frozen=True)
class Source:
    """Where a side's server comes from: a source tree (None: this checkout) and the
    interpreter that runs it. ``name`` follows the variant in tables (``metrics@<name>``);
    empty for this checkout run by this interpreter."""

    tree: Path | None = None
    python: str = sys.executable
    name: str = ""

    @property
    def cwd(self) -> Path:
        """Where to start its server: ``python -m`` puts its working folder first on the
        import path, so with ``PYTHONPATH`` alone a server started here would run this
        checkout's code whatever the tree."""
        return self.tree or Path.cwd()


def sources(parser: argparse.ArgumentParser, against: str, pythons: str) -> list[Source]:
    """This checkout, each of ``--against``'s trees (run by this interpreter) and this
    checkout run by each of ``--python``'s interpreters."""
    others = [Source(tree, name=label(tree)) for tree in trees(parser, against)]
    return [Source(), *others, *interpreters(parser, pythons)]


def interpreter(pid: int) -> str:
    """A server's interpreter, and whether its executable links libpython in or loads it
    as a shared library (calls across a shared library's boundary cost more)."""
    exe = os.readlink(f"/proc/{pid}/exe")
    shared = "libpython" in Path(f"/proc/{pid}/maps").read_text()
    return f"{exe} (libpython {'shared' if shared else 'linked in'})"


def variant_of(side: str) -> str:
    """The gateway variant of a side (``metrics@<checkout>``: ``metrics``)."""
    return side.partition("@")[0]


def is_gateway(side: str) -> bool:
    """A gateway variant (``metrics``, or ``metrics@<checkout>``), not a reference proxy."""
    return variant_of(side) in VARIANTS


def listed(text: str) -> list[str]:
    """A comma-separated option's items, blanks dropped."""
    return [item.strip() for item in text.split(",") if item.strip()]


@contextlib.contextmanager
def servers(
    home: Path,
    variants: list[str],
    references: Sequence[str] = (),
    origins: Sequence[Source] = (Source(),),
) -> Iterator[tuple[str, dict[str, tuple[str, int]]]]:
    """The mock (core 1) and one gateway per variant and source (all on core 0, each
    with its own home) in front of it (named ``variant``, or ``variant@<source>``): the
    direct URL, and each one's URL and pid."""
    with contextlib.ExitStack() as stack:
        direct = stack.enter_context(mock(home))
        gateways: dict[str, tuple[str, int]] = {}
        for variant in variants:
            for origin in origins:
                name = f"{variant}@{origin.name}" if origin.name else variant
                (home / name).mkdir()
                cmd, env, url = gateway(home / name, variant, direct, origin.python)
                log = home / f"gateway-{name}.log"
                server = stack.enter_context(
                    process(cmd, GATEWAY_CPU, log, env=env, cwd=origin.cwd)
                )
                register(url, direct, server)
                gateways[name] = (url, server.pid)
        for name in references:
            found = reference(name, home / f"ref-{name}", direct)
            if found is None:
                print(f"--reference {name}: not installed; left out", file=sys.stderr)
                continue
            cmd, url = found
            proxy = stack.enter_context(process(cmd, GATEWAY_CPU, home / f"{name}.log"))
            wait_until(functools.partial(answers, url + "/v1/models"), name, proxy)
            gateways[name] = (url, proxy.pid)
        yield direct, gateways


def measure(
    args: argparse.Namespace, load: Load, direct: str, gateways: dict[str, tuple[str, int]]
) -> list[Cell]:
    """Each rep measures every side once, the order rotated rep by rep."""
    cells: list[Cell] = []
    for stream in args.modes:
        for c in args.concurrency:
            d: list[Point] = []
            g: dict[str, list[Point]] = {v: [] for v in gateways}
            load(direct, c, args.warmup, stream)
            for gw, _ in gateways.values():
                load(gw, c, args.warmup, stream)
            sides = ["direct", *gateways]
            for rep in range(args.reps):
                shift = rep % len(sides)
                for side in sides[shift:] + sides[:shift]:
                    if side == "direct":
                        d.append(load(direct, c, args.duration, stream))
                        continue
                    gw, pid = gateways[side]
                    cpu0 = cpu_seconds(pid)
                    point = load(gw, c, args.duration, stream)
                    point.cpu_us = (cpu_seconds(pid) - cpu0) / point.requests * 1e6
                    g[side].append(point)
            cells.extend(Cell(stream, c, d, g[v], v) for v in gateways)
    return cells


ROW = (
    "| {variant} | {mode} | {concurrency} | {direct_rps:,.0f} | {gateway_rps:,.0f} | "
    "{direct_p50_ms:.2f} / {direct_p99_ms:.2f} | {gateway_p50_ms:.2f} / {gateway_p99_ms:.2f} | "
    "{added_p50_ms:+.2f} / {added_p99_ms:+.2f} | {gateway_cpu_us:.0f} |"
)


def report(cells: list[Cell], baseline: str = "off", rate: float = 0) -> list[dict[str, Any]]:
    print("| observability | mode | concurrency | direct rps | gateway rps ", end="")
    print(
        "| direct p50 / p99 ms | gateway p50 / p99 ms | added p50 / p99 ms | gateway CPU µs/req |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows: list[dict[str, Any]] = []
    for cell in cells:
        d, g = cell.direct, cell.gateway
        row: dict[str, Any] = {
            "variant": cell.variant,
            "mode": "stream" if cell.stream else "non-stream",
        }
        row["concurrency"] = cell.concurrency
        for side, points in (("direct", d), ("gateway", g)):
            for k in ("rps", "p50_ms", "p99_ms"):
                row[f"{side}_{k}"] = statistics.median(getattr(p, k) for p in points)
        for k in ("p50_ms", "p99_ms"):
            added = [getattr(b, k) - getattr(a, k) for a, b in zip(d, g, strict=True)]
            row[f"added_{k}"] = statistics.median(added)
            row[f"added_{k}_reps"] = added  # in rep order: how far the median can be trusted
        row["gateway_cpu_us"] = statistics.median(p.cpu_us for p in g)
        row["reps"] = [(p.rps, p.cpu_us) for p in g]  # in rep order, for paired comparisons
        rows.append(row)
        print(ROW.format(**row))
    compare([r for r in rows if r["variant"] in VARIANTS], baseline)
    for variant in dict.fromkeys(variant_of(r["variant"]) for r in rows):
        mine = [r for r in rows if variant_of(r["variant"]) == variant]
        if any(r["variant"] != variant for r in mine):  # served from --against's trees too
            compare(mine, variant)
    against_references(rows)
    print()
    for variant in dict.fromkeys(r["variant"] for r in rows if is_gateway(r["variant"])):
        mine = (r for r in rows if r["variant"] == variant)
        plain = {r["concurrency"]: r for r in mine if r["mode"] == "non-stream"}
        if 16 in plain:
            p50 = verdict(plain[16], "p50_ms", 0.5)
            p99 = verdict(plain[16], "p99_ms", 2.0)
            print(f"{variant}: targets, non-streaming at concurrency 16: added {p50}, added {p99}")
        if plain and not rate:  # with a rate cap, requests/s says nothing about capacity
            best = max(r["gateway_rps"] for r in plain.values())
            print(
                f"{variant}: target >= 2,500 non-streaming requests/s per gateway process: "
                f"{best:,.0f} ({'met' if best >= 2500 else 'MISSED'})"
            )
    return rows


def verdict(row: dict[str, Any], key: str, target_ms: float) -> str:
    """The median against its target, with how many reps met it and their range: on a
    noisy machine a median a few hundredths of a millisecond off the target says little
    on its own."""
    median, reps = row[f"added_{key}"], row[f"added_{key}_reps"]
    met = sum(r <= target_ms for r in reps)
    name = key.removesuffix("_ms")
    return (
        f"{name} {median:.2f} <= {target_ms:g} ms ({'met' if median <= target_ms else 'MISSED'}; "
        f"{met} of {len(reps)} reps met it, range {min(reps):.2f} to {max(reps):.2f})"
    )


MEASURABLE_MS = 0.02
"""A reference's added latency below this is within the noise: no multiple is given."""


def against_references(rows: list[dict[str, Any]]) -> None:
    """Each gateway variant against each reference proxy, cell by cell (``--reference``):
    CPU per request, and added latency as a multiple of the reference's where the
    reference adds a measurable amount (closed loop, it often adds nothing: the load
    generator and the mock are the bottleneck, not the proxy)."""
    refs = [r for r in rows if not is_gateway(r["variant"])]
    if not refs:
        return
    print("\n| variant | mode | concurrency | reference | CPU µs/req (reference → this) ", end="")
    print("| reference added p50 / p99 ms | this added p50 / p99 ms ", end="")
    print("| multiple of the reference's p50 / p99 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if not is_gateway(r["variant"]):
            continue
        for ref in refs:
            if (ref["mode"], ref["concurrency"]) != (r["mode"], r["concurrency"]):
                continue
            keys = ("added_p50_ms", "added_p99_ms")
            ratios = [r[k] / ref[k] if ref[k] >= MEASURABLE_MS else None for k in keys]
            cpu = r["gateway_cpu_us"] / ref["gateway_cpu_us"] if ref["gateway_cpu_us"] else None
            r.setdefault("vs_reference", {})[ref["variant"]] = {"cpu": cpu, "added": ratios}
            shown = " / ".join("-" if x is None else f"{x:.1f}x" for x in ratios)
            print(
                f"| {r['variant']} | {r['mode']} | {r['concurrency']} | {ref['variant']} | "
                f"{ref['gateway_cpu_us']:.0f} → {r['gateway_cpu_us']:.0f} "
                f"({'-' if cpu is None else f'{cpu:.1f}x'}) | "
                f"{ref['added_p50_ms']:+.2f} / {ref['added_p99_ms']:+.2f} | "
                f"{r['added_p50_ms']:+.2f} / {r['added_p99_ms']:+.2f} | {shown} |"
            )


def compare(rows: list[dict[str, Any]], baseline: str = "off") -> None:
    """Each variant against ``baseline``: requests/s, CPU per request and median latency,
    cell by cell."""
    base = {(r["mode"], r["concurrency"]): r for r in rows if r["variant"] == baseline}
    others = [r for r in rows if r["variant"] != baseline and (r["mode"], r["concurrency"]) in base]
    if not others:
        return
    print(f"\n| variant | mode | concurrency | rps ({baseline} → this) | rps change ", end="")
    print(f"| CPU µs/req ({baseline} → this) | CPU change | best rps | least CPU ", end="")
    print(f"| p50 ms ({baseline} → this) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in others:
        off = base[r["mode"], r["concurrency"]]
        # Paired: each rep measured both back to back, so a slow spell of a shared host
        # hits both; the change is the median of the reps' own changes.
        pairs = list(zip(off["reps"], r["reps"], strict=True))
        rps = statistics.median(b[0] / a[0] for a, b in pairs) - 1
        cpu = statistics.median(b[1] / a[1] for a, b in pairs) - 1
        # Best of the reps: a busy host only ever slows a rep down, so the fastest rep
        # of each side is the closest to what the code itself costs.
        best = max(b[0] for b in r["reps"]) / max(a[0] for a in off["reps"]) - 1
        least = min(b[1] for b in r["reps"]) / min(a[1] for a in off["reps"]) - 1
        r["rps_vs_off"], r["cpu_vs_off"] = rps, cpu
        r["best_rps_vs_off"], r["least_cpu_vs_off"] = best, least
        print(
            f"| {r['variant']} | {r['mode']} | {r['concurrency']} | {off['gateway_rps']:,.0f} → "
            f"{r['gateway_rps']:,.0f} | {rps:+.1%} | {off['gateway_cpu_us']:.0f} → "
            f"{r['gateway_cpu_us']:.0f} | {cpu:+.1%} | {best:+.1%} | {least:+.1%} | "
            f"{off['gateway_p50_ms']:.3f} → {r['gateway_p50_ms']:.3f} "
            f"({r['gateway_p50_ms'] - off['gateway_p50_ms']:+.3f}) |"
        )


def profile(args: argparse.Namespace, load: Load, gw: str, pid: int) -> None:
    """py-spy records the gateway while it serves non-streaming requests at concurrency 16."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    load(gw, 16, args.warmup, False)
    fmt = "speedscope" if args.profile.suffix == ".json" else "raw"
    opts = f"--duration {args.duration} --rate 200 --nonblocking --threads --format {fmt}"
    with subprocess.Popen([spy, "record", "--pid", str(pid), *opts.split(), "-o", args.profile]):
        time.sleep(1)  # py-spy attaches
        point = load(gw, 16, args.duration, False)
    print(f"profiled at {point.rps:,.0f} requests/s; {fmt} profile in {args.profile}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of warm-up per cell")
    parser.add_argument("--reps", type=int, default=3, help="measurements per side and cell")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated connections")
    parser.add_argument("--rate", type=float, default=0, help="cap requests/s [default: none]")
    parser.add_argument("--no-stream", action="store_true", help="non-streaming requests only")
    parser.add_argument("--python-load", action="store_true", help="aiohttp even if wrk exists")
    parser.add_argument(
        "--profile", type=Path, help="py-spy the gateway (.txt raw, .json speedscope) instead"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--observability",
        default="metrics",
        help="gateway variants, comma-separated: off, metrics (the default settings), on "
        "(metrics + tracing to an OTLP sink at the default ratio), all (every request "
        "traced), logged (log level INFO: an access line per request), ungoverned (no "
        "limits, budgets or usage records); both = off,on [default: metrics]",
    )
    parser.add_argument(
        "--reference",
        default="",
        help="reference proxies measured beside the gateway, comma-separated: "
        f"{', '.join(REFERENCES)} (all: every one installed) [default: none]",
    )
    parser.add_argument(
        "--baseline", default="off", help="the variant others are compared with [default: off]"
    )
    parser.add_argument(
        "--against",
        default="",
        help="other source trees (folders holding a modelplane package, such as a git "
        "worktree of an earlier commit), comma-separated: each variant is also served from "
        "each of them, as variant@<commit>, and compared with this checkout's",
    )
    parser.add_argument(
        "--python",
        default="",
        help="other interpreters (a virtual environment's python with modelplane's "
        "dependencies installed), comma-separated: each variant is also served by each of "
        "them, as variant@py<version>-<venv>, and compared with this interpreter's",
    )
    args = parser.parse_args()
    args.origins = sources(parser, args.against, args.python)
    variants = "off,on" if args.observability == "both" else args.observability
    args.variants = [v.strip() for v in variants.split(",")]
    if unknown := set(args.variants) - set(VARIANTS):
        parser.error(f"unknown --observability variant(s): {', '.join(sorted(unknown))}")
    wanted = ",".join(REFERENCES) if args.reference == "all" else args.reference
    args.references = listed(wanted)
    if unknown := set(args.references) - set(REFERENCES):
        parser.error(f"unknown --reference proxy(s): {', '.join(sorted(unknown))}")
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.modes = (False,) if args.no_stream else (False, True)
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs 2 cores: the gateway on one, the mock and the load generator on the other")
    os.sched_setaffinity(0, {LOAD_CPU})  # inherited by the mock and wrk; the gateway moves
    with (
        tempfile.TemporaryDirectory(prefix="mp-bench-gw-") as tmp,
        servers(Path(tmp), args.variants, args.references, args.origins) as (direct, gateways),
    ):
        use_wrk = shutil.which("wrk") is not None and not args.python_load
        load = wrk_load(Path(tmp), args.rate) if use_wrk else python_load(args.rate)
        gw, pid = next(iter(gateways.values()))
        if args.profile:
            return profile(args, load, gw, pid)
        maps = Path(f"/proc/{pid}/maps").read_text()
        libs = ", ".join(
            f"{m} {'loaded' if f'/{m}/' in maps else 'NOT loaded'}" for m in ("uvloop", "httptools")
        )
        gen = "wrk, 1 thread" if use_wrk else "aiohttp in the benchmark's process"
        others = [name for name in gateways if not is_gateway(name)]
        refs = f", reference proxies ({', '.join(others)}) there too" if others else ""
        pace = f", rate capped at {args.rate:g} requests/s" if args.rate else ", closed loop"
        print(
            f"`modelplane serve` ({', '.join(args.variants)}) on core {GATEWAY_CPU} ({libs})"
            f"{refs}; mock upstream and load generator ({gen}{pace}) on core {LOAD_CPU}; "
            f"{args.duration} s per run after {args.warmup} s of warm-up, median of {args.reps}"
        )
        print(f"{interpreter(pid)} runs `modelplane serve`", end="")
        for origin in args.origins:
            if origin.tree is None and origin.name:  # --python's
                other = gateways[f"{args.variants[0]}@{origin.name}"][1]
                print(f"; {interpreter(other)} runs {origin.name}", end="")
        print("\n")
        cells = measure(args, load, direct, gateways)
    rows = report(cells, args.baseline, args.rate)
    if args.json:
        samples = [asdict(c) for c in cells]
        args.json.write_text(json.dumps({"rows": rows, "samples": samples}, indent=2) + "\n")


if __name__ == "__main__":
    main()
