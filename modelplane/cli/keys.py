"""``modelplane keys create|list|revoke``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from modelplane.cli.common import ApiKeyOpt, BaseUrl, client, console, fail
from modelplane.sdk import ModelplaneAPIError

app = typer.Typer(no_args_is_help=True, help="Manage API keys.")


@app.command()
def create(
    name: str,
    role: Annotated[str, typer.Option(help="admin, team_admin, member or viewer")] = "member",
    expires_at: Annotated[str | None, typer.Option(help="ISO 8601 expiry time")] = None,
    account: Annotated[
        str | None, typer.Option(help="The user or service account the key acts for")
    ] = None,
    url: BaseUrl = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Create a key. The secret is printed once; it cannot be shown again."""
    try:
        with client(url, api_key) as c:
            k = c.create_key(name, role, expires_at, account=account)
    except ModelplaneAPIError as exc:
        raise fail(exc) from None
    console.print(f"created key [bold]{k['name']}[/] (id {k['id']}, role {k['role']})")
    console.print(k["key"], highlight=False, soft_wrap=True)


@app.command("list")
def list_(url: BaseUrl = None, api_key: ApiKeyOpt = None) -> None:
    """List keys (never their secrets)."""
    try:
        with client(url, api_key) as c:
            keys = c.keys()
    except ModelplaneAPIError as exc:
        raise fail(exc) from None
    table = Table("ID", "NAME", "PREFIX", "ROLE", "ACCOUNT", "CREATED", "LAST USED", "STATE")
    for k in keys:
        state = "revoked" if k["revoked_at"] else "active"
        table.add_row(
            k["id"],
            k["name"],
            k["prefix"] + "…",
            k.get("effective_role", k["role"]),
            k["account"] or "-",
            k["created_at"][:19],
            (k["last_used_at"] or "-")[:19],
            state,
        )
    console.print(table)


@app.command()
def revoke(key_id: str, url: BaseUrl = None, api_key: ApiKeyOpt = None) -> None:
    """Revoke a key; it stops working at once."""
    try:
        with client(url, api_key) as c:
            c.revoke_key(key_id)
    except ModelplaneAPIError as exc:
        raise fail(exc) from None
    console.print(f"revoked key {key_id}")


@app.command()
def rotate(key_id: str, url: BaseUrl = None, api_key: ApiKeyOpt = None) -> None:
    """Give a key a new secret (printed once); the old secret stops working."""
    try:
        with client(url, api_key) as c:
            k = c.rotate_key(key_id)
    except ModelplaneAPIError as exc:
        raise fail(exc) from None
    console.print(f"rotated key [bold]{k['name']}[/] (id {k['id']})")
    console.print(k["key"], highlight=False, soft_wrap=True)
