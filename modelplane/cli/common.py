"""What the client-side commands share: where the server is and which key to use."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console

from modelplane.config import Settings
from modelplane.sdk import Client, ModelplaneAPIError

console = Console()
err_console = Console(stderr=True)

BaseUrl = Annotated[str | None, typer.Option("--url", help="Server URL [default: from settings]")]
ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="MODELPLANE_API_KEY",
        help="API key [default: $MODELPLANE_HOME/admin.key]",
    ),
]


def client(url: str | None, api_key: str | None) -> Client:
    settings = Settings()
    key = api_key or os.environ.get("MODELPLANE_API_KEY")
    if not key and settings.admin_key_path.is_file():
        key = settings.admin_key_path.read_text().strip()
    if not key:
        err_console.print("[red]no API key:[/] pass --api-key or set MODELPLANE_API_KEY")
        raise typer.Exit(2)
    return Client(url or settings.base_url, key)


def fail(exc: ModelplaneAPIError) -> typer.Exit:
    err_console.print(f"[red]error:[/] {exc.message}")
    return typer.Exit(1)
