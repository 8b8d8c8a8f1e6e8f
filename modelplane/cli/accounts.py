"""``modelplane users list|create|disable|enable`` and
``modelplane service-accounts list|create``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from modelplane.cli.common import ApiKeyOpt, BaseUrl, client, console, fail
from modelplane.sdk import ModelplaneAPIError

users = typer.Typer(no_args_is_help=True, help="Manage users.")
service_accounts = typer.Typer(no_args_is_help=True, help="Manage service accounts.")

Team = Annotated[str | None, typer.Option(help="Its team (default: yours; none only for admins)")]
RoleOpt = Annotated[str, typer.Option(help="admin, team_admin, member or viewer")]


def _list(kind: str, url: str | None, api_key: str | None) -> None:
    try:
        with client(url, api_key) as c:
            accounts = c.accounts(kind)
    except ModelplaneAPIError as exc:
        raise fail(exc) from None
    columns = ["NAME", "TEAM", "ROLE", "STATE", "CREATED"]
    if kind == "users":
        columns.insert(1, "EMAIL")
    table = Table(*columns)
    for a in accounts:
        row = [
            a["name"],
            a["team"] or "-",
            a["role"],
            "disabled" if a["disabled"] else "active",
            a["created_at"][:19],
        ]
        if kind == "users":
            row.insert(1, a["email"] or "-")
        table.add_row(*row)
    console.print(table)


def _create(kind: str, name: str, url: str | None, api_key: str | None, **fields: Any) -> None:
    try:
        with client(url, api_key) as c:
            a = c.create_account(kind, name, **fields)
    except ModelplaneAPIError as exc:
        raise fail(exc) from None
    noun = "user" if kind == "users" else "service account"
    console.print(f"created {noun} [bold]{a['name']}[/] (team {a['team']}, role {a['role']})")
    console.print(f"give it a key: modelplane keys create NAME --account {a['name']}")


def _set_disabled(name: str, disabled: bool, url: str | None, api_key: str | None) -> None:
    try:
        with client(url, api_key) as c:
            c.update_account("users", name, disabled=disabled)
    except ModelplaneAPIError as exc:
        raise fail(exc) from None
    console.print(f"{'disabled' if disabled else 'enabled'} user {name}")


@users.command("list")
def list_users(url: BaseUrl = None, api_key: ApiKeyOpt = None) -> None:
    """List the users you can see."""
    _list("users", url, api_key)


@users.command("create")
def create_user(
    name: str,
    team: Team = None,
    role: RoleOpt = "member",
    email: Annotated[str | None, typer.Option(help="Matched against JWTs' email")] = None,
    url: BaseUrl = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Create a user."""
    _create("users", name, url, api_key, team=team, role=role, email=email)


@users.command()
def disable(name: str, url: BaseUrl = None, api_key: ApiKeyOpt = None) -> None:
    """Disable a user: its keys and JWTs are refused within seconds."""
    _set_disabled(name, True, url, api_key)


@users.command()
def enable(name: str, url: BaseUrl = None, api_key: ApiKeyOpt = None) -> None:
    """Enable a disabled user again."""
    _set_disabled(name, False, url, api_key)


@service_accounts.command("list")
def list_services(url: BaseUrl = None, api_key: ApiKeyOpt = None) -> None:
    """List the service accounts you can see."""
    _list("service-accounts", url, api_key)


@service_accounts.command("create")
def create_service(
    name: str,
    team: Team = None,
    role: RoleOpt = "member",
    url: BaseUrl = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Create a service account (then give it keys with ``keys create --account``)."""
    _create("service-accounts", name, url, api_key, team=team, role=role)
