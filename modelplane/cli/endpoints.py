"""``modelplane endpoints list|create|scale|delete``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from modelplane.cli.common import ApiKeyOpt, BaseUrl, client, console, fail
from modelplane.sdk import ModelplaneAPIError

app = typer.Typer(no_args_is_help=True, help="Manage model endpoints.")


@app.command("list")
def list_(url: BaseUrl = None, api_key: ApiKeyOpt = None) -> None:
    """Show endpoints and the state of their replicas."""
    try:
        with client(url, api_key) as c:
            eps = c.endpoints()
    except ModelplaneAPIError as exc:
        raise fail(exc) from None
    table = Table("NAME", "ENGINE", "MODEL", "READY", "STATUS", "LAST ERROR")
    for ep in eps:
        if "provider" in ep:  # external: no replicas; its health check, if it has one
            health = ep.get("health") or {}
            errors = [health["last_error"]] if health.get("last_error") else []
            engine, ready = f"{ep['provider']} (external)", "-"
        else:
            errors = [r["last_error"] for r in ep["replica_status"] if r["last_error"]]
            engine, ready = ep["engine"], f"{ep['ready_replicas']}/{ep['replicas']}"
        table.add_row(
            ep["name"],
            engine,
            ep["model"],
            ready,
            ep["status"],
            errors[0].splitlines()[0][:80] if errors else "",
        )
    console.print(table)


@app.command()
def create(
    name: str,
    model: Annotated[str, typer.Option(help="Bundled model name or path to a .gguf file")],
    engine: Annotated[str, typer.Option()] = "llamacpp",
    replicas: Annotated[int, typer.Option(min=0)] = 1,
    options: Annotated[str, typer.Option(help="Engine options as JSON")] = "{}",
    url: BaseUrl = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Create an endpoint; its replicas start in the background."""
    try:
        opts = json.loads(options)
    except ValueError:
        raise typer.BadParameter("--options must be a JSON object") from None
    try:
        with client(url, api_key) as c:
            ep = c.create_endpoint(name, model, engine=engine, replicas=replicas, options=opts)
    except ModelplaneAPIError as exc:
        raise fail(exc) from None
    console.print(f"created endpoint [bold]{ep['name']}[/] ({ep['replicas']} replicas)")


@app.command()
def scale(name: str, replicas: int, url: BaseUrl = None, api_key: ApiKeyOpt = None) -> None:
    """Set the number of replicas."""
    try:
        with client(url, api_key) as c:
            ep = c.update_endpoint(name, replicas=replicas)
    except ModelplaneAPIError as exc:
        raise fail(exc) from None
    console.print(f"scaled [bold]{ep['name']}[/] to {ep['replicas']} replicas")


@app.command()
def delete(name: str, url: BaseUrl = None, api_key: ApiKeyOpt = None) -> None:
    """Delete an endpoint and stop its replicas."""
    try:
        with client(url, api_key) as c:
            c.delete_endpoint(name)
    except ModelplaneAPIError as exc:
        raise fail(exc) from None
    console.print(f"deleted endpoint [bold]{name}[/]")
