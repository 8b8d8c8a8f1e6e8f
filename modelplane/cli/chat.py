"""``modelplane chat [MODEL]``: an interactive, streaming chat in the terminal."""

from __future__ import annotations

from typing import Annotated

import typer

from modelplane.cli.common import ApiKeyOpt, BaseUrl, client, console, err_console
from modelplane.sdk import ModelplaneAPIError


def chat(
    model: Annotated[str, typer.Argument(help="Model (endpoint) name")] = "smollm2",
    system: Annotated[str | None, typer.Option(help="System prompt")] = None,
    max_tokens: Annotated[int, typer.Option(min=1)] = 512,
    url: BaseUrl = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Chat with a model. Empty line or Ctrl-D quits; /reset starts over."""
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    with client(url, api_key) as c:
        console.print(f"chatting with [bold]{model}[/] — Ctrl-D to quit, /reset to start over")
        while True:
            try:
                text = console.input("[bold green]you>[/] ").strip()
            except (EOFError, KeyboardInterrupt):
                console.print()
                return
            if not text:
                return
            if text == "/reset":
                history = history[:1] if system else []
                continue
            history.append({"role": "user", "content": text})
            console.print(f"[bold blue]{model}>[/] ", end="")
            reply: list[str] = []
            try:
                for piece in c.chat_stream(model, history, max_tokens=max_tokens):
                    reply.append(piece)
                    console.out(piece, end="", highlight=False)
            except ModelplaneAPIError as exc:
                err_console.print(f"\n[red]error:[/] {exc.message}")
                history.pop()
                continue
            except KeyboardInterrupt:
                console.print("[dim] (interrupted)[/]")
            console.print()
            history.append({"role": "assistant", "content": "".join(reply)})
