"""Gemini on Google Vertex AI: ``:generateContent``, ``:streamGenerateContent?alt=sse``
and, for text-embedding models, ``:predict``.

System messages become ``systemInstruction``; turns become ``contents`` (roles ``user``
and ``model``); tools become ``functionDeclarations`` with their JSON Schema as is
(``parametersJsonSchema``), and tool results become ``functionResponse`` parts named
after the call they answer. Gemini gives function calls no id, so one is made up; when
Gemini signs a call (``thoughtSignature``, which it wants back on the next turn) the
signature travels inside that id, after a ``~``, so a stateless gateway can return it.

Options: ``project``, ``region`` (both required; ``global`` uses the global endpoint),
``max_tokens``.
Credentials: ``access_token``; without it, Google's application default credentials
(``pip install 'modelplane[vertex]'``), refreshed off the event loop and cached until
they expire.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import mimetypes
import uuid
from collections.abc import AsyncGenerator, Mapping
from types import ModuleType
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp

from modelplane.errors import ModelplaneError
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
    sse_events,
)
from modelplane.providers.base import Call, Kind, Reply, Target, Timeouts
from modelplane.providers.client import Client
from modelplane.providers.translate import (
    Chat,
    Image,
    Part,
    Text,
    ToolCall,
    ToolResult,
    Untranslatable,
    parse_chat,
)
from modelplane.providers.wire import error_reply, probe, probe_path

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
_FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
_CODES = {
    "UNAUTHENTICATED": "invalid_api_key",
    "PERMISSION_DENIED": "permission_denied",
    "NOT_FOUND": "not_found",
    "UNAVAILABLE": "upstream_error",
}


def _google(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelplaneError(
            "the vertex provider needs an access_token credential or google-auth for "
            "application default credentials; install it with: pip install 'modelplane[vertex]'",
            code="missing_dependency",
        ) from None


class VertexProvider:
    name: ClassVar[str] = "vertex"
    default_base_url: ClassVar[str] = "https://{region}-aiplatform.googleapis.com"
    kinds: ClassVar[frozenset[Kind]] = frozenset({"chat", "embeddings"})
    health_path: ClassVar[str | None] = None  # Vertex has no cheap GET per model

    def __init__(self) -> None:
        self._adc: Any = None  # google-auth credentials, refreshed when expired
        self._lock: asyncio.Lock | None = None
        self._client = Client()

    async def close(self) -> None:
        await self._client.close()

    async def send(self, target: Target, call: Call, *, timeouts: Timeouts) -> Reply:
        project, region = _option(target, "project"), _option(target, "region")
        url = (
            f"{_base(target, region)}/v1/projects/{project}/locations/{region}"
            f"/publishers/google/models/{quote(call.model, safe='')}"
        )
        if call.kind == "embeddings":
            return await self._embed(target, call, url, timeouts)
        if call.kind != "chat":
            return error_reply(400, f"the vertex provider does not serve {call.kind}")
        try:
            chat = parse_chat(call.obj)
            body = request_body(chat, target.options.get("max_tokens"))
        except Untranslatable as exc:
            return error_reply(400, exc.message, "invalid_parameter")
        method = ":streamGenerateContent" if call.stream else ":generateContent"
        return await exchange(
            self._client.session(),
            url + method,
            call,
            timeouts=timeouts,
            body=json.dumps(body).encode(),
            headers=await self._headers(target, call),
            error=_error,
            answer=lambda data: chat_completion(call, _message(data)),
            events=_events if call.stream else None,
            include_usage=chat.include_usage,
            params={"alt": "sse"} if call.stream else None,
        )

    async def _embed(self, target: Target, call: Call, url: str, timeouts: Timeouts) -> Reply:
        texts = embedding_inputs(call.obj)
        if texts is None:
            return error_reply(400, "Vertex embeddings take 'input' as text, not token ids")
        body: dict[str, Any] = {"instances": [{"content": t} for t in texts]}
        if dims := call.obj.get("dimensions"):
            body["parameters"] = {"outputDimensionality": dims}

        def answer(data: Any) -> dict[str, Any]:
            predictions = [p["embeddings"] for p in data["predictions"]]
            tokens = sum(int(p.get("statistics", {}).get("token_count") or 0) for p in predictions)
            return embedding_list(call, [p["values"] for p in predictions], tokens)

        return await exchange(
            self._client.session(),
            url + ":predict",
            call,
            timeouts=timeouts,
            body=json.dumps(body).encode(),
            headers=await self._headers(target, call),
            error=_error,
            answer=answer,
        )

    async def models(self, target: Target, *, timeouts: Timeouts) -> list[str]:
        return []  # Vertex lists publisher models per region only through a paged catalog

    async def health(self, target: Target, *, timeouts: Timeouts) -> None:
        """GET ``options.health_check.path`` (required) with the access token."""
        path = probe_path(target, self.health_path)
        url = _base(target, _option(target, "region")) + path
        headers = await self._headers(target, Call("chat", b"", {}, "", False, ""))
        await probe(self._client.session(), url, path, headers, timeouts=timeouts)

    async def _headers(self, target: Target, call: Call) -> dict[str, str]:
        token = target.credentials.get("access_token") or await self._default_token()
        return {
            "content-type": "application/json",
            **call.headers,
            "authorization": f"Bearer {token}",
        }

    async def _default_token(self) -> str:
        adc = self._adc
        if adc is not None and adc.valid:
            return str(adc.token)
        google_auth = _google("google.auth")
        transport = _google("google.auth.transport.requests")
        exceptions = _google("google.auth.exceptions")
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one refresh, however many requests wait for it
            try:
                if self._adc is None:
                    self._adc, _ = await asyncio.to_thread(google_auth.default, scopes=[SCOPE])
                if not self._adc.valid:
                    await asyncio.to_thread(self._adc.refresh, transport.Request())
            except exceptions.GoogleAuthError as exc:
                raise ModelplaneError(
                    f"the vertex provider could not get a Google access token "
                    f"({type(exc).__name__}): give the provider an access_token credential, "
                    "or set up application default credentials (GOOGLE_APPLICATION_CREDENTIALS, "
                    "gcloud auth application-default login, or workload identity)",
                    code="provider_misconfigured",
                ) from None
            return str(self._adc.token)


def _base(target: Target, region: str) -> str:
    base = target.base_url or VertexProvider.default_base_url
    if region == "global" and "{region}" in base:  # the global endpoint has no prefix
        base = base.replace("{region}-", "")
    return base.replace("{region}", region).rstrip("/")


def _option(target: Target, name: str) -> str:
    value = target.options.get(name)
    if not isinstance(value, str) or not value:
        raise ModelplaneError(
            f"the vertex provider needs the option '{name}' on the endpoint",
            code="provider_misconfigured",
        )
    return value


def request_body(chat: Chat, default_max: Any) -> dict[str, Any]:
    """The ``generateContent`` body for a chat request."""
    contents = [
        {"role": "user" if t.role == "user" else "model", "parts": [_part(p) for p in t.parts]}
        for t in chat.turns
        if t.parts
    ]
    body: dict[str, Any] = {"contents": contents}
    if chat.system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(chat.system)}]}
    config: dict[str, Any] = {}
    if max_tokens := chat.max_tokens or default_max:
        config["maxOutputTokens"] = int(max_tokens)
    for key, value in (
        ("temperature", chat.temperature),
        ("topP", chat.top_p),
        ("seed", chat.seed),
        ("frequencyPenalty", chat.frequency_penalty),
        ("presencePenalty", chat.presence_penalty),
    ):
        if value is not None:
            config[key] = value
    if chat.stop:
        config["stopSequences"] = chat.stop
    if chat.response_format != "text":
        config["responseMimeType"] = "application/json"
    if chat.json_schema is not None:
        config["responseJsonSchema"] = chat.json_schema
    if config:
        body["generationConfig"] = config
    if chat.tools:
        declarations = [
            {"name": t.name, "description": t.description, "parametersJsonSchema": t.parameters}
            for t in chat.tools
        ]
        body["tools"] = [{"functionDeclarations": declarations}]
        mode = {"none": "NONE", "required": "ANY", None: "AUTO", "auto": "AUTO"}
        calling: dict[str, Any] = {"mode": mode.get(chat.tool_choice, "ANY")}
        if chat.tool_choice not in mode:
            calling["allowedFunctionNames"] = [chat.tool_choice]
        body["toolConfig"] = {"functionCallingConfig": calling}
    return body


def _part(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"text": part.text}
    if isinstance(part, Image):
        if part.url:
            mime = mimetypes.guess_type(part.url)[0] or "image/jpeg"
            return {"fileData": {"mimeType": mime, "fileUri": part.url}}
        return {"inlineData": {"mimeType": part.media_type, "data": part.data}}
    if isinstance(part, ToolCall):
        out: dict[str, Any] = {"functionCall": {"name": part.name, "args": part.args()}}
        _, _, signature = part.id.partition("~")
        if signature:
            out["thoughtSignature"] = signature
        return out
    assert isinstance(part, ToolResult)
    try:
        response = json.loads(part.content)
    except ValueError:
        response = None
    if not isinstance(response, dict):
        response = {"content": part.content}
    return {"functionResponse": {"name": part.name or part.id, "response": response}}


def _call_id(part: Mapping[str, Any]) -> str:
    signature = part.get("thoughtSignature")
    call_id = f"call_{uuid.uuid4().hex[:24]}"
    return f"{call_id}~{signature}" if signature else call_id


def _finish(reason: str) -> str:
    return "content_filter" if reason in _FILTERED else _FINISH.get(reason, "stop")


def _usage(meta: Any) -> Usage:
    if not isinstance(meta, dict):
        return Usage()
    # Thinking tokens are billed as output, as OpenAI's reasoning tokens are.
    completion = int(meta.get("candidatesTokenCount") or 0) + int(
        meta.get("thoughtsTokenCount") or 0
    )
    return Usage(int(meta.get("promptTokenCount") or 0), completion)


def _message(data: Any) -> Message:
    candidates = data.get("candidates") or []
    if not candidates:  # the prompt itself was blocked
        return Message("", [], "content_filter", _usage(data.get("usageMetadata")))
    text: list[str] = []
    calls: list[ToolCall] = []
    for part in (candidates[0].get("content") or {}).get("parts") or []:
        if "text" in part and not part.get("thought"):
            text.append(part["text"])
        elif "functionCall" in part:
            fn = part["functionCall"]
            calls.append(ToolCall(_call_id(part), fn["name"], json.dumps(fn.get("args") or {})))
    finish = _finish(candidates[0].get("finishReason") or "STOP")
    return Message("".join(text), calls, finish, _usage(data.get("usageMetadata")))


def _google_error(body: bytes) -> dict[str, Any]:
    try:
        obj: Any = json.loads(body)
    except ValueError:
        return {"message": body.decode("utf-8", "replace").strip()[:500]}
    if isinstance(obj, list) and obj:  # streamGenerateContent without alt=sse wraps it
        obj = obj[0]
    err = obj.get("error") if isinstance(obj, dict) else None
    return err if isinstance(err, dict) else {}


def _error(status: int, body: bytes, headers: Mapping[str, str]) -> Reply:
    err = _google_error(body)
    message = str(err.get("message") or f"Vertex AI answered HTTP {status}")
    kind = str(err.get("status") or "")
    if kind == "RESOURCE_EXHAUSTED":
        status = 429
    return error_reply(status, message, _CODES.get(kind))


async def _events(resp: aiohttp.ClientResponse) -> AsyncGenerator[Event, None]:
    async for _, data in sse_events(resp):
        obj = json.loads(data)
        if "error" in obj:
            err = obj["error"]
            status = (
                429 if err.get("status") == "RESOURCE_EXHAUSTED" else int(err.get("code") or 502)
            )
            yield Failed(status, str(err.get("message") or "Vertex AI reported an error"))
            return
        if "usageMetadata" in obj:
            usage = _usage(obj["usageMetadata"])
            yield Tokens(usage.prompt, usage.completion)
        candidates = obj.get("candidates") or []
        if not candidates and (obj.get("promptFeedback") or {}).get("blockReason"):
            yield Finish("content_filter")
        for cand in candidates[:1]:
            for part in (cand.get("content") or {}).get("parts") or []:
                if "text" in part and not part.get("thought"):
                    yield TextDelta(part["text"])
                elif "functionCall" in part:
                    fn, key = part["functionCall"], object()
                    yield ToolStart(key, _call_id(part), fn["name"])
                    yield ToolArgs(key, json.dumps(fn.get("args") or {}))
            if cand.get("finishReason"):
                yield Finish(_finish(cand["finishReason"]))
