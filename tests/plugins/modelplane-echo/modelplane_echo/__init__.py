"""A modelplane plugin for tests: an engine and a provider that echo the prompt."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def last_user_text(messages: Iterable[Mapping[str, Any]]) -> str:
    """The text of the last user message (text parts joined when it has several)."""
    text = ""
    for message in messages:
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            text = " ".join(
                str(p.get("text", ""))
                for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
    return text


def count_words(messages: Iterable[Mapping[str, Any]]) -> int:
    """Tokens, as this plugin counts them: the words of every message."""
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            total += sum(
                len(str(p.get("text", "")).split()) for p in content if isinstance(p, dict)
            )
    return total


def pieces(text: str) -> list[str]:
    """``text`` cut into its words, each with the space before it (but the first)."""
    words = text.split()
    return [w if i == 0 else " " + w for i, w in enumerate(words)]
