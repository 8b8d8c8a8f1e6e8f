"""An OpenAI chat request read into a neutral form that the translating providers
(Anthropic, Bedrock, Vertex, Ollama) each write in their own wire shape.

Reading happens once, here: string or list ``content``, ``developer`` messages, image
parts as ``data:`` or ``http(s)`` URLs, assistant ``tool_calls`` and ``tool`` results
(with the called function's name looked up, since Gemini and Ollama want it), tool
definitions and ``tool_choice``, and the sampling fields. A request that cannot be
expressed raises ``Untranslatable``; providers answer it with a 400 envelope.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


class Untranslatable(ValueError):
    """The request uses something the provider's wire protocol cannot express."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Image:
    media_type: str
    """``image/png`` …; empty for a URL whose type is unknown."""
    data: str = ""
    """Base64 bytes, for a ``data:`` URL."""
    url: str = ""
    """An ``http(s)``/``gs`` URL, when the image was not inlined."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str
    """The JSON text of the arguments, as OpenAI carries it."""

    def args(self) -> dict[str, Any]:
        try:
            value = json.loads(self.arguments or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class ToolResult:
    id: str
    name: str
    content: str


Part = Text | Image | ToolCall | ToolResult


@dataclass(slots=True)
class Turn:
    role: Literal["user", "assistant"]
    parts: list[Part] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Chat:
    system: list[str]
    turns: list[Turn]
    """Alternating where the client alternated; consecutive messages of one role are
    merged, and tool results are user turns."""
    tools: list[Tool]
    tool_choice: str | None
    """``None`` (unset), ``auto``, ``none``, ``required``, or a function's name."""
    parallel_tool_calls: bool | None
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    stop: list[str]
    seed: int | None
    frequency_penalty: float | None
    presence_penalty: float | None
    response_format: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None
    include_usage: bool
    user: str | None


_DATA_URL = re.compile(
    r"data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*),(?P<data>.*)", re.S
)


def parse_chat(obj: Mapping[str, Any]) -> Chat:
    """Read an OpenAI chat completion request; raises ``Untranslatable``."""
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Untranslatable("'messages' must be a non-empty list", "messages")
    n = obj.get("n")
    if n not in (None, 1):
        raise Untranslatable("this provider returns one choice per request; set 'n' to 1", "n")
    system: list[str] = []
    turns: list[Turn] = []
    names: dict[str, str] = {}
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise Untranslatable(f"messages[{i}] must be an object", f"messages[{i}]")
        role = msg.get("role")
        where = f"messages[{i}]"
        if role in ("system", "developer"):
            text = _text(msg.get("content"), where)
            if text:
                system.append(text)
            continue
        if role == "user":
            parts = _user_parts(msg.get("content"), where)
            _add(turns, "user", parts)
        elif role == "assistant":
            parts = [Text(t) for t in [_text(msg.get("content"), where)] if t]
            for j, tc in enumerate(msg.get("tool_calls") or []):
                call = _tool_call(tc, f"{where}.tool_calls[{j}]")
                names[call.id] = call.name
                parts.append(call)
            _add(turns, "assistant", parts)
        elif role == "tool":
            call_id = str(msg.get("tool_call_id") or "")
            result = ToolResult(call_id, names.get(call_id, ""), _text(msg.get("content"), where))
            _add(turns, "user", [result])
        elif role == "function":  # the legacy form of a tool result
            name = str(msg.get("name") or "")
            _add(turns, "user", [ToolResult(name, name, _text(msg.get("content"), where))])
        else:
            raise Untranslatable(f"{where}.role '{role}' is not a chat role", f"{where}.role")
    stop = obj.get("stop")
    fmt = obj.get("response_format") or {}
    fmt_type: Literal["text", "json_object", "json_schema"] = "text"
    kind = fmt.get("type", "text") if isinstance(fmt, dict) else "text"
    if kind == "json_object":
        fmt_type = "json_object"
    elif kind == "json_schema":
        fmt_type = "json_schema"
    elif kind != "text":
        raise Untranslatable(f"response_format type '{kind}' is not supported", "response_format")
    spec = fmt.get("json_schema") if fmt_type == "json_schema" else None
    schema = spec.get("schema") if isinstance(spec, dict) else None
    options = obj.get("stream_options") or {}
    return Chat(
        system=system,
        turns=turns,
        tools=_tools(obj.get("tools") or []),
        tool_choice=_tool_choice(obj.get("tool_choice")),
        parallel_tool_calls=obj.get("parallel_tool_calls"),
        max_tokens=obj.get("max_completion_tokens") or obj.get("max_tokens"),
        temperature=obj.get("temperature"),
        top_p=obj.get("top_p"),
        stop=[stop] if isinstance(stop, str) else list(stop or []),
        seed=obj.get("seed"),
        frequency_penalty=obj.get("frequency_penalty"),
        presence_penalty=obj.get("presence_penalty"),
        response_format=fmt_type,
        json_schema=schema if isinstance(schema, dict) else None,
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
        user=obj.get("user") if isinstance(obj.get("user"), str) else None,
    )


def _add(turns: list[Turn], role: Literal["user", "assistant"], parts: list[Part]) -> None:
    if turns and turns[-1].role == role:
        turns[-1].parts.extend(parts)
    else:
        turns.append(Turn(role, parts))


def _text(content: Any, where: str) -> str:
    """The text of a message whose content is a string, a list of text parts, or null."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
                raise Untranslatable(f"{where}.content may only hold text parts", where)
            texts.append(str(part.get("text") or part.get("refusal") or ""))
        return "".join(texts)
    raise Untranslatable(f"{where}.content must be a string or a list of parts", where)


def _user_parts(content: Any, where: str) -> list[Part]:
    if not isinstance(content, list):
        text = _text(content, where)
        return [Text(text)] if text else []
    parts: list[Part] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                parts.append(Text(str(part["text"])))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            parts.append(image_from_url(str(url or ""), f"{where}.content[{j}]"))
        else:
            raise Untranslatable(
                f"{where}.content[{j}]: content parts of type '{kind}' are not supported by "
                "this provider (text and image_url are)",
                f"{where}.content[{j}]",
            )
    return parts


def image_from_url(url: str, where: str) -> Image:
    if url.startswith("data:"):
        m = _DATA_URL.fullmatch(url)
        if not m or ";base64" not in (m.group("params") or ""):
            raise Untranslatable(f"{where}: an image data URL must be base64-encoded", where)
        return Image(m.group("type") or "image/png", data=m.group("data"))
    if url.startswith(("http://", "https://", "gs://")):
        return Image("", url=url)
    raise Untranslatable(f"{where}: an image_url must be a data: or http(s) URL", where)


def _tool_call(tc: Any, where: str) -> ToolCall:
    fn = tc.get("function") if isinstance(tc, dict) else None
    if not isinstance(fn, dict) or not fn.get("name"):
        raise Untranslatable(f"{where} must be a function call with a name", where)
    args = fn.get("arguments")
    arguments = args if isinstance(args, str) else json.dumps(args or {})
    return ToolCall(str(tc.get("id") or ""), str(fn["name"]), arguments)


def _tools(tools: Any) -> list[Tool]:
    out = []
    for i, tool in enumerate(tools if isinstance(tools, list) else []):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise Untranslatable(f"tools[{i}]: only function tools are supported", f"tools[{i}]")
        if not fn.get("name"):
            raise Untranslatable(f"tools[{i}].function needs a name", f"tools[{i}]")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        out.append(Tool(str(fn.get("name")), str(fn.get("description") or ""), params))
    return out


def _tool_choice(choice: Any) -> str | None:
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        return str(choice)
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if isinstance(name, str) and name:
            return name
    raise Untranslatable(
        "tool_choice must be 'auto', 'none', 'required' or a function", "tool_choice"
    )
