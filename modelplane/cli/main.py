"""``modelplane``: the command-line entry point; each command group lives in its module."""

from __future__ import annotations

import typer

from modelplane.cli import accounts, chat, endpoints, engine, keys, server, usage

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Self-hostable LLM serving with one OpenAI-compatible API.",
)
app.command("up")(server.up)
app.command("serve")(server.serve)
app.command("chat")(chat.chat)
app.command("usage")(usage.usage)
app.add_typer(endpoints.app, name="endpoints")
app.add_typer(keys.app, name="keys")
app.add_typer(accounts.users, name="users")
app.add_typer(accounts.service_accounts, name="service-accounts")
app.add_typer(engine.app, name="engine")


def main() -> None:
    app()
