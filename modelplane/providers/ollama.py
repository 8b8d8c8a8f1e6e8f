"""Ollama's native API: ``/api/chat``, ``/api/generate`` (raw text completions),
``/api/embed``, ``/api/tags`` and ``/api/pull``.

Ollama streams newline-delimited JSON and streams unless told otherwise, so ``stream``
is always sent. Sampling fields go into ``options`` (``max_tokens`` is ``num_predict``);
``response_format`` becomes ``format`` (``"json"``, or the JSON schema). Images must be
``data:`` URLs. Ollama has no ``tool_choice``: ``none`` leaves the tools out.

Options: ``keep_alive`` (how long Ollama keeps the model loaded), ``options`` (extra
Ollama model options, e.g. ``{"num_ctx": 8192}``), ``headers``.
Credentials: ``api_key`` (sent as a bearer token, for an Ollama behind a proxy).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, ClassVar

import aiohttp

from modelplane.errors import UpstreamError
from modelplane.providers.answers import (
    Event,
    Failed,
    Finish,
    Message,
    TextDelta,
    Tokens,
    ToolArgs,
    ToolStart,
    Usage,
    chat_completion,
    embedding_inputs,
    embedding_list,
    exchange,
    json_lines,
    text_completion,
)
from modelplane.providers.base import Call, Kind, Reply, Target, Timeouts
from modelplane.providers.client import Client, client_timeout
from modelplane.providers.translate import (
    Chat,
    Image,
    Text,
    ToolCall,
    ToolResult,
    Untranslatable,
    parse_chat,
)
from modelplane.providers.wire import error_message, error_reply, probe, probe_path

_FINISH = {"stop": "stop", "length": "length"}


class OllamaProvider:
    name: ClassVar[str] = "ollama"
    default_base_url: ClassVar[str] = "http://127.0.0.1:11434"
    kinds: ClassVar[frozenset[Kind]] = frozenset({"chat", "completions", "embeddings"})
    health_path: ClassVar[str | None] = "/api/version"

    def __init__(self) -> None:
        self._client = Client()

    async def close(self) -> None:
        await self._client.close()

    def _headers(self, target: Target, extra: Mapping[str, str]) -> dict[str, str]:
        headers = {"content-type": "application/json", **extra}
        headers.update(target.options.get("headers") or {})
        if key := target.credentials.get("api_key"):
            headers["authorization"] = f"Bearer {key}"
        return headers

    async def send(self, target: Target, call: Call, *, timeouts: Timeouts) -> Reply:
        try:
            if call.kind == "embeddings":
                path, body = "/api/embed", _embed_body(call)
            elif call.kind == "completions":
                path, body = "/api/generate", _generate_body(call, target)
            else:
                chat = parse_chat(call.obj)
                path, body = "/api/chat", chat_body(chat, call.model, call.stream, target)
        except Untranslatable as exc:
            return error_reply(400, exc.message, "invalid_parameter")
        options = call.obj.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return await exchange(
            self._client.session(),
            _base(target) + path,
            call,
            timeouts=timeouts,
            body=json.dumps(body).encode(),
            headers=self._headers(target, call.headers),
            error=_error,
            answer=lambda data: _answer(call, data),
            events=_events if call.stream and call.kind != "embeddings" else None,
            include_usage=include_usage,
        )

    async def models(self, target: Target, *, timeouts: Timeouts) -> list[str]:
        headers = self._headers(target, {})
        async with self._client.session().get(
            _base(target) + "/api/tags", headers=headers, timeout=client_timeout(timeouts)
        ) as resp:
            if resp.status != 200:
                return []
            data: Any = await resp.json(content_type=None)
        return [m["name"] for m in data.get("models", []) if isinstance(m, dict) and "name" in m]

    async def health(self, target: Target, *, timeouts: Timeouts) -> None:
        path = probe_path(target, self.health_path)
        url, headers = _base(target) + path, self._headers(target, {})
        await probe(self._client.session(), url, path, headers, timeouts=timeouts)

    async def pull(
        self, target: Target, model: str, *, timeouts: Timeouts
    ) -> AsyncIterator[dict[str, Any]]:
        """Download ``model`` into Ollama, yielding its progress objects (``status``, and
        ``digest``/``total``/``completed`` while layers download) until ``success``.
        Raises ``UpstreamError`` when Ollama cannot pull it."""
        body = json.dumps({"model": model, "stream": True}).encode()
        headers = self._headers(target, {})
        async with self._client.session().post(
            _base(target) + "/api/pull",
            data=body,
            headers=headers,
            timeout=client_timeout(timeouts),
        ) as resp:
            if resp.status >= 400:
                why = error_message(await resp.read(), f"HTTP {resp.status}")
                raise UpstreamError(f"Ollama could not pull '{model}': {why}")
            async for obj in json_lines(resp):
                if isinstance(obj, dict) and "error" in obj:
                    raise UpstreamError(f"Ollama could not pull '{model}': {obj['error']}")
                yield obj


def _base(target: Target) -> str:
    return (target.base_url or OllamaProvider.default_base_url).rstrip("/")


def _options(target: Target, fields: Mapping[str, Any]) -> dict[str, Any]:
    options = dict(target.options.get("options") or {})
    options.update({k: v for k, v in fields.items() if v is not None and v != []})
    return options


def _common(body: dict[str, Any], target: Target, options: dict[str, Any]) -> dict[str, Any]:
    if options:
        body["options"] = options
    if target.options.get("keep_alive") is not None:
        body["keep_alive"] = target.options["keep_alive"]
    return body


def chat_body(chat: Chat, model: str, stream: bool, target: Target) -> dict[str, Any]:
    """The ``/api/chat`` body for a chat request."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": s} for s in chat.system]
    for turn in chat.turns:
        text: list[str] = []
        images: list[str] = []
        calls: list[dict[str, Any]] = []
        for part in turn.parts:
            if isinstance(part, Text):
                text.append(part.text)
            elif isinstance(part, Image):
                if part.url:
                    raise Untranslatable("Ollama takes images as base64 data: URLs", "messages")
                images.append(part.data)
            elif isinstance(part, ToolCall):
                calls.append({"function": {"name": part.name, "arguments": part.args()}})
            elif isinstance(part, ToolResult):
                messages.append({"role": "tool", "content": part.content, "tool_name": part.name})
        if text or images or calls:
            msg: dict[str, Any] = {"role": turn.role, "content": "".join(text)}
            if images:
                msg["images"] = images
            if calls:
                msg["tool_calls"] = calls
            messages.append(msg)
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    if chat.tools and chat.tool_choice != "none":
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in chat.tools
        ]
    if chat.response_format == "json_object":
        body["format"] = "json"
    elif chat.json_schema is not None:
        body["format"] = chat.json_schema
    options = _options(
        target,
        {
            "temperature": chat.temperature,
            "top_p": chat.top_p,
            "num_predict": chat.max_tokens,
            "stop": chat.stop,
            "seed": chat.seed,
            "frequency_penalty": chat.frequency_penalty,
            "presence_penalty": chat.presence_penalty,
        },
    )
    return _common(body, target, options)


def _generate_body(call: Call, target: Target) -> dict[str, Any]:
    obj = call.obj
    prompt = obj.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise Untranslatable("Ollama completes one text prompt per request", "prompt")
    stop = obj.get("stop")
    # raw: the prompt is continued as written, as /v1/completions means, not templated.
    body: dict[str, Any] = {
        "model": call.model,
        "prompt": prompt,
        "raw": True,
        "stream": call.stream,
    }
    if obj.get("suffix"):
        body["suffix"] = obj["suffix"]
    options = _options(
        target,
        {
            "temperature": obj.get("temperature"),
            "top_p": obj.get("top_p"),
            "num_predict": obj.get("max_tokens"),
            "stop": [stop] if isinstance(stop, str) else stop,
            "seed": obj.get("seed"),
            "frequency_penalty": obj.get("frequency_penalty"),
            "presence_penalty": obj.get("presence_penalty"),
        },
    )
    return _common(body, target, options)


def _embed_body(call: Call) -> dict[str, Any]:
    texts = embedding_inputs(call.obj)
    if texts is None:
        raise Untranslatable("Ollama embeds 'input' given as text, not token ids", "input")
    body: dict[str, Any] = {"model": call.model, "input": texts}
    if call.obj.get("dimensions"):
        body["dimensions"] = call.obj["dimensions"]
    return body


def _usage(data: Mapping[str, Any]) -> Usage:
    return Usage(int(data.get("prompt_eval_count") or 0), int(data.get("eval_count") or 0))


def _tool_calls(message: Mapping[str, Any]) -> list[ToolCall]:
    calls = []
    for tc in message.get("tool_calls") or []:
        fn = tc["function"]
        args = fn.get("arguments") or {}
        arguments = args if isinstance(args, str) else json.dumps(args)
        calls.append(
            ToolCall(tc.get("id") or f"call_{uuid.uuid4().hex[:24]}", fn["name"], arguments)
        )
    return calls


def _answer(call: Call, data: Any) -> dict[str, Any]:
    if call.kind == "embeddings":
        return embedding_list(call, data["embeddings"], int(data.get("prompt_eval_count") or 0))
    finish = _FINISH.get(data.get("done_reason") or "stop", "stop")
    if call.kind == "completions":
        return text_completion(call, data["response"], finish, _usage(data))
    message = data["message"]
    msg = Message(message.get("content") or "", _tool_calls(message), finish, _usage(data))
    return chat_completion(call, msg)


def _error(status: int, body: bytes, headers: Mapping[str, str]) -> Reply:
    message = error_message(body, f"Ollama answered HTTP {status}")
    return error_reply(status, message, "model_not_found" if status == 404 else None)


async def _events(resp: aiohttp.ClientResponse) -> AsyncGenerator[Event, None]:
    async for obj in json_lines(resp):
        if "error" in obj:
            yield Failed(500, str(obj["error"]))
            return
        message = obj.get("message") or {}
        text = message.get("content") if message else obj.get("response")
        if text:
            yield TextDelta(text)
        for tc in _tool_calls(message):
            key = object()
            yield ToolStart(key, tc.id, tc.name)
            yield ToolArgs(key, tc.arguments)
        if obj.get("done"):
            usage = _usage(obj)
            yield Tokens(usage.prompt, usage.completion)
            yield Finish(_FINISH.get(obj.get("done_reason") or "stop", "stop"))
