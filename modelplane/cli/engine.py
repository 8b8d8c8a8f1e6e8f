"""``modelplane engine serve``: one engine replica, speaking the OpenAI API over HTTP."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
import time
from typing import Annotated

import typer
import uvicorn

from modelplane.engines import registry
from modelplane.engines.server import create_engine_app
from modelplane.telemetry.logging import configure

app = typer.Typer(no_args_is_help=True, help="Run model engines.")


def _die_with_parent(parent_pid: int) -> None:
    """End this replica when the process that started it is gone, even if it was
    killed without a chance to clean up."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(1.0)

    if os.getppid() != parent_pid:
        sys.exit("parent process already gone")
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@app.command()
def serve(
    model: Annotated[str, typer.Option(help="Bundled model name or path to a .gguf file")],
    engine: Annotated[str, typer.Option(help="Engine name")] = "llamacpp",
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8081,
    options: Annotated[str, typer.Option(help="Engine options as JSON")] = "{}",
    parent_pid: Annotated[int | None, typer.Option(help="Exit when this process exits")] = None,
) -> None:
    """Serve one model on /v1/chat/completions, /v1/completions, /v1/models, /health."""
    configure(os.environ.get("MODELPLANE_LOG_FORMAT", "auto"))
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    try:
        opts = json.loads(options)
    except ValueError:
        raise typer.BadParameter("--options must be a JSON object") from None
    try:
        eng = registry.create(engine, model, opts)
    except (KeyError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    uvicorn.run(
        create_engine_app(eng),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
