"""``modelplane up`` (server + bundled model, ready to use) and ``modelplane serve``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Annotated

import typer
import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError
from rich.console import Console

from modelplane.config import Settings
from modelplane.control.keys import BOOTSTRAP
from modelplane.errors import first_invalid
from modelplane.runtimes import registry as runtimes
from modelplane.server.app import create_app
from modelplane.server.platform import Platform
from modelplane.server.protocol import http_protocol
from modelplane.telemetry.logging import configure
from modelplane.telemetry.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

console = Console()

BUNDLED_ENDPOINT = {
    "name": "smollm2",
    "engine": "llamacpp",
    "model": "smollm2",
    "replicas": 1,
    "options": {},
}

Host = Annotated[str | None, typer.Option(help="Address to listen on [default: 127.0.0.1]")]
Port = Annotated[int | None, typer.Option(help="Port to listen on [default: 8080]")]


def _settings(host: str | None, port: int | None) -> Settings:
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        where, why = first_invalid(exc.errors())
        field = f" ({where})" if where and where != "body" else ""
        console.print(f"[red]invalid configuration{field}:[/] {why}")
        raise typer.Exit(2) from None
    if settings.runtime not in runtimes.names():
        known = ", ".join(runtimes.names())
        console.print(
            f"[red]invalid configuration (runtime):[/] unknown runtime "
            f"'{settings.runtime}'; available: {known}"
        )
        raise typer.Exit(2)
    return settings


def _check_port(settings: Settings) -> None:
    """Fail before anything starts (replicas included) when the address is taken."""
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((settings.host, settings.port))
    except OSError as exc:
        console.print(
            f"[red]cannot listen on {settings.host}:{settings.port}:[/] "
            f"{exc.strerror}. Is modelplane already running? Choose another "
            "port with --port."
        )
        raise typer.Exit(1) from None


def _server(settings: Settings) -> tuple[uvicorn.Server, FastAPI]:
    _check_port(settings)
    configure(settings.log_format, settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # client addresses are not used; skip the middleware
        timeout_graceful_shutdown=10,
        http=http_protocol(),
    )
    return uvicorn.Server(config), app


Workers = Annotated[
    int | None, typer.Option(help="Server processes sharing the port [default: 1]", min=1)
]


def serve(host: Host = None, port: Port = None, workers: Workers = None) -> None:
    """Run the server (gateway + control plane) in the foreground."""
    settings = _settings(host, port)
    if workers is not None:
        settings = settings.model_copy(update={"workers": workers})
    if settings.workers == 1:
        _server(settings)[0].run()
        return
    _check_port(settings)
    configure(settings.log_format, settings.log_level)
    # Each worker builds its app from the environment: hand the command line over.
    os.environ.update(
        MODELPLANE_HOST=settings.host,
        MODELPLANE_PORT=str(settings.port),
        MODELPLANE_WORKERS=str(settings.workers),
    )
    if settings.metrics_enabled:
        # Every worker writes its metrics to files here (prometheus_client reads the
        # variable when a worker imports it), and /metrics of any worker adds them up.
        metrics_dir = settings.home / "metrics"
        prepare_multiprocess_dir(metrics_dir)
        os.environ[MULTIPROC_ENV] = str(metrics_dir)
    uvicorn.run(
        "modelplane.server.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
        http=http_protocol(),
    )


async def _announce(server: uvicorn.Server, app: FastAPI, settings: Settings) -> None:
    # uvicorn exposes readiness only as a flag, so it is polled.
    while not server.started:
        if server.should_exit:
            return
        await asyncio.sleep(0.05)
    platform: Platform = app.state.platform
    if settings.bootstrap_endpoint and not await platform.endpoints.list(BOOTSTRAP):
        await platform.endpoints.create(BOOTSTRAP, **BUNDLED_ENDPOINT)  # type: ignore[arg-type]
    names = [ep.name for ep in await platform.endpoints.list(BOOTSTRAP) if ep.provider is None]
    runtime = platform.reconciler.runtime
    with console.status("starting model replicas…"):
        waits = [asyncio.ensure_future(runtime.wait_ready(n)) for n in names]
        if waits:
            done, pending = await asyncio.wait(
                waits,
                timeout=settings.replica_start_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            for w in pending:
                w.cancel()
            if not done:
                console.print(
                    "[yellow]no model replica became ready in time; "
                    "see `modelplane endpoints list`[/]"
                )
    key = platform.new_admin_key
    if key is None and settings.admin_key_path.is_file():
        key = settings.admin_key_path.read_text().strip()
    model = "smollm2" if "smollm2" in names else (names[0] if names else "MODEL")
    console.print(
        banner(settings, key, platform.new_admin_key is not None, model, names),
        highlight=False,
        soft_wrap=True,
    )


def banner(settings: Settings, key: str | None, new_key: bool, model: str, names: list[str]) -> str:
    """What ``up`` prints once ready: plain lines (no box), so every example can be
    copied and pasted as it is."""
    base = f"{settings.base_url}/v1"
    shown = key or "<your API key>"
    question = '[{"role": "user", "content": "What is the capital of France?"}]'
    saved = f"  [dim](new, saved in {settings.admin_key_path})[/]" if new_key else ""
    return f"""
[bold green]modelplane is up[/] at {settings.base_url}

  OpenAI base URL  [bold]{base}[/]
  API key          [bold]{shown}[/]{saved}
  Models           {", ".join(names) or "none yet"}

[bold]Try it with curl:[/]

curl {base}/chat/completions \\
  -H "Authorization: Bearer {shown}" \\
  -H "Content-Type: application/json" \\
  -d '{{"model": "{model}", "messages": {question}}}'

[bold]or with Python[/] (pip install openai):

from openai import OpenAI
client = OpenAI(base_url="{base}", api_key="{shown}")
r = client.chat.completions.create(model="{model}", messages={question})
print(r.choices[0].message.content)

[bold]or chat in the terminal:[/] modelplane chat {model}

[dim]Ctrl-C stops the server and every model replica.[/]
"""


def up(host: Host = None, port: Port = None) -> None:
    """Start everything: the server, and the bundled SmolLM2 model if no endpoint exists."""
    settings = _settings(host, port)
    server, app = _server(settings)
    if settings.log_level.upper() == "INFO":
        # The banner says what matters; start-up chatter would bury it.
        for name in ("uvicorn.error", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)

    async def main() -> None:
        announce = asyncio.create_task(_announce(server, app, settings))
        try:
            await server.serve()
        finally:
            announce.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announce

    asyncio.run(main())
