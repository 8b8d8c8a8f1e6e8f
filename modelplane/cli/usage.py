"""``modelplane usage``: what was used and what it cost, per team, key, endpoint, route
or day."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from modelplane.cli.common import ApiKeyOpt, BaseUrl, client, console, fail
from modelplane.sdk import ModelplaneAPIError

GROUPS = ("team", "key", "endpoint", "route", "day")
HEADERS = (
    "REQUESTS",
    "ERRORS",
    "PROMPT TOKENS",
    "COMPLETION TOKENS",
    "COST (USD)",
    "AVG LATENCY (MS)",
)


def usage(
    by: Annotated[
        str | None, typer.Option("--by", help="Group by team, key, endpoint, route or day")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="From this date or time (ISO 8601, UTC)")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Until this date or time (exclusive)")] = None,
    team: Annotated[str | None, typer.Option(help="Only this team (admins)")] = None,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table")] = False,
    url: BaseUrl = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Show requests, errors, tokens and cost, added up."""
    if by is not None and by not in GROUPS:
        raise typer.BadParameter(f"must be one of {', '.join(GROUPS)}", param_hint="--by")
    try:
        with client(url, api_key) as c:
            if csv:
                text = c.usage_csv(by, since=since, until=until, team=team)
                console.print(text, end="", highlight=False, markup=False, soft_wrap=True)
                return
            report = c.usage(by, since=since, until=until, team=team)
    except ModelplaneAPIError as exc:
        raise fail(exc) from None
    table = Table(*([by.upper()] if by else []))
    for name in HEADERS:
        table.add_column(name, justify="right")
    if by:
        for row in report["data"]:
            table.add_row(_label(by, row), *_cells(row))
        table.add_section()
        table.add_row("total", *_cells(report["total"]), style="bold")
    else:
        table.add_row(*_cells(report["total"]))
    console.print(table)


def _label(by: str, row: dict[str, Any]) -> str:
    if by in ("team", "key"):
        name, ident = row.get(by), row.get(f"{by}_id")
        if name is None:
            return "(no team)" if by == "team" and ident is None else str(ident or "-")
        return f"{name} ({ident[:8]})" if by == "key" and ident else str(name)
    value = row.get(by)
    return "-" if value is None else str(value)


def _cells(row: dict[str, Any]) -> list[str]:
    return [
        f"{row['requests']:,}",
        f"{row['errors']:,}",
        f"{row['prompt_tokens']:,}",
        f"{row['completion_tokens']:,}",
        f"{row['cost_usd']:.4f}",
        f"{row['avg_latency_ms']:.1f}",
    ]
