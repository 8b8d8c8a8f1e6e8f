"""The ``echo`` engine: a spec registered through the real seam whose replicas are
``tests/runtimes/echo.py`` processes (start in a fraction of a second, no model)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelplane.engines import registry as engines
from modelplane.engines.base import Capabilities, Engine
from modelplane.engines.spec import Container, Launch, LaunchContext

ROOT = str(Path(__file__).resolve().parents[2])
MODULE = "tests.runtimes.echo"


class EchoSpec:
    name = "echo"
    capabilities = Capabilities(chat=True, completions=False)
    health_path = "/health"
    metrics_path: str | None = None

    def check(self, model: str, options: Mapping[str, Any]) -> None:
        unknown = set(options) - {"fail", "tag"}
        if unknown:
            raise ValueError(f"options.{sorted(unknown)[0]}: not an echo option")

    def command(self, model: str, options: Mapping[str, Any], ctx: LaunchContext) -> Launch:
        argv = [ctx.python, "-m", MODULE, "--host", ctx.host, "--port", str(ctx.port)]
        argv += ["--home", ctx.home, "--tag", str(options.get("tag", model))]
        if options.get("fail"):
            argv.append("--fail")
        if ctx.parent_pid is not None:
            argv += ["--parent-pid", str(ctx.parent_pid)]
        return Launch(tuple(argv), {"PYTHONPATH": ROOT})

    def container(self, model: str, options: Mapping[str, Any], port: int) -> Container:
        args = ("python", "-m", MODULE, "--host", "0.0.0.0", "--port", str(port), "--home", "/")
        return Container("python:3.11-slim", args, port)

    def create(self, model: str, options: Mapping[str, Any]) -> Engine:
        raise NotImplementedError("echo replicas are processes of their own")


def register() -> None:
    engines.register("echo", EchoSpec())


def echo_pids(home: Path) -> list[int]:
    """Live echo replica processes started for ``home``."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if MODULE.encode() in cmd and str(home).encode() in cmd and state != "Z":
            out.append(int(proc.name))
    return out
