"""AWS Bedrock's Converse API (``/model/{id}/converse`` and ``/converse-stream``).

Requests are signed with SigV4 by botocore, which is imported only when a Bedrock
endpoint is used (``pip install 'modelplane[bedrock]'``). The stream is AWS's binary
event-stream framing (``application/vnd.amazon.eventstream``), read with botocore's
parser. Images must be ``data:`` URLs: Converse takes image bytes, not links.

Options: ``region`` (required), ``max_tokens`` (default for requests that set none).
Credentials: ``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``;
without them, botocore's default chain (environment, ``~/.aws``, instance or pod role).
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import AsyncGenerator, Mapping
from types import ModuleType
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp
import yarl

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
    exchange,
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
from modelplane.providers.wire import error_message, error_reply, probe, probe_path

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# AWS error names (HTTP ``x-amzn-ErrorType``, or a stream's ``:exception-type``) as the
# statuses the gateway acts on.
_STATUS = {
    "validationexception": 400,
    "accessdeniedexception": 403,
    "unrecognizedclientexception": 403,
    "invalidsignatureexception": 403,
    "expiredtokenexception": 403,
    "resourcenotfoundexception": 404,
    "throttlingexception": 429,
    "servicequotaexceededexception": 429,
    "internalserverexception": 500,
    "modelstreamerrorexception": 502,
    "modelerrorexception": 502,
    "modelnotreadyexception": 503,
    "serviceunavailableexception": 503,
    "modeltimeoutexception": 504,
}
_AUTH = {"unrecognizedclientexception", "invalidsignatureexception", "expiredtokenexception"}
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


def _botocore(module: str) -> ModuleType:
    try:
        return importlib.import_module(f"botocore.{module}")
    except ImportError:
        raise ModelplaneError(
            "the bedrock provider needs botocore, which is not installed; "
            "install it with: pip install 'modelplane[bedrock]'",
            code="missing_dependency",
        ) from None


class BedrockProvider:
    name: ClassVar[str] = "bedrock"
    default_base_url: ClassVar[str] = "https://bedrock-runtime.{region}.amazonaws.com"
    kinds: ClassVar[frozenset[Kind]] = frozenset({"chat"})
    health_path: ClassVar[str | None] = None  # bedrock-runtime has no cheap GET

    def __init__(self) -> None:
        self._chain: Any = None  # botocore's default credentials, found once
        self._client = Client()

    async def close(self) -> None:
        await self._client.close()

    async def send(self, target: Target, call: Call, *, timeouts: Timeouts) -> Reply:
        region = _region(target)
        try:
            chat = parse_chat(call.obj)
            body = json.dumps(request_body(chat, target.options.get("max_tokens"))).encode()
        except Untranslatable as exc:
            return error_reply(400, exc.message, "invalid_parameter")
        op = "converse-stream" if call.stream else "converse"
        url = f"{_base(target, region)}/model/{quote(call.model, safe='')}/{op}"
        headers = await self._sign(target, region, url, body)
        headers.update(call.headers)
        return await exchange(
            self._client.session(),
            yarl.URL(url, encoded=True),  # sent exactly as signed (yarl would unquote %3A)
            call,
            timeouts=timeouts,
            body=body,
            headers=headers,
            error=_error,
            answer=lambda data: chat_completion(call, _message(data)),
            events=_events if call.stream else None,
            include_usage=chat.include_usage,
        )

    async def models(self, target: Target, *, timeouts: Timeouts) -> list[str]:
        return []  # listing lives on the control-plane API (bedrock, not bedrock-runtime)

    async def health(self, target: Target, *, timeouts: Timeouts) -> None:
        """GET ``options.health_check.path`` (required: Bedrock has no cheap read-only
        request of its own), signed like a request."""
        region = _region(target)
        path = probe_path(target, self.health_path)
        url = _base(target, region) + path
        headers = await self._sign(target, region, url, b"", method="GET")
        await probe(
            self._client.session(), yarl.URL(url, encoded=True), path, headers, timeouts=timeouts
        )

    async def _sign(
        self, target: Target, region: str, url: str, body: bytes, method: str = "POST"
    ) -> dict[str, str]:
        auth, awsrequest = _botocore("auth"), _botocore("awsrequest")
        credentials = await self._credentials(target)
        request = awsrequest.AWSRequest(
            method=method, url=url, data=body, headers={"content-type": "application/json"}
        )
        auth.SigV4Auth(credentials, "bedrock", region).add_auth(request)
        return {str(k): str(v) for k, v in request.headers.items()}

    async def _credentials(self, target: Target) -> Any:
        creds = target.credentials
        if creds.get("aws_access_key_id") and creds.get("aws_secret_access_key"):
            return _botocore("credentials").Credentials(
                creds["aws_access_key_id"],
                creds["aws_secret_access_key"],
                creds.get("aws_session_token") or None,
            )
        exceptions = _botocore("exceptions")
        try:
            if self._chain is None:
                session = _botocore("session")
                # The chain may read files or ask the instance metadata service: off the loop.
                self._chain = await asyncio.to_thread(
                    lambda: session.get_session().get_credentials()
                )
            chain = self._chain
            if chain is not None:
                if hasattr(chain, "refresh_needed") and chain.refresh_needed():
                    return await asyncio.to_thread(chain.get_frozen_credentials)
                return chain.get_frozen_credentials()
            why = "found none"
        except exceptions.BotoCoreError as exc:
            why = f"failed ({type(exc).__name__})"
        raise ModelplaneError(
            f"the bedrock provider looked for AWS credentials and {why}: give the provider "
            "credential aws_access_key_id and aws_secret_access_key, or configure AWS's "
            "default chain (AWS_* environment variables, ~/.aws, an instance or pod role)",
            code="provider_misconfigured",
        )


def _region(target: Target) -> str:
    region = target.options.get("region")
    if not isinstance(region, str) or not region:
        raise ModelplaneError(
            "the bedrock provider needs the option 'region' (e.g. us-east-1) on the endpoint",
            code="provider_misconfigured",
        )
    return region


def _base(target: Target, region: str) -> str:
    base = target.base_url or BedrockProvider.default_base_url
    return base.replace("{region}", region).rstrip("/")


def request_body(chat: Chat, default_max: Any) -> dict[str, Any]:
    """The Converse body for a chat request (the same for ConverseStream)."""
    body: dict[str, Any] = {
        "messages": [
            {"role": t.role, "content": [_block(p) for p in t.parts]} for t in chat.turns if t.parts
        ]
    }
    if chat.system:
        body["system"] = [{"text": text} for text in chat.system]
    config: dict[str, Any] = {}
    if max_tokens := chat.max_tokens or default_max:
        config["maxTokens"] = int(max_tokens)
    if chat.temperature is not None:
        config["temperature"] = chat.temperature
    if chat.top_p is not None:
        config["topP"] = chat.top_p
    if chat.stop:
        config["stopSequences"] = chat.stop
    if config:
        body["inferenceConfig"] = config
    if chat.tools:
        tools = [
            {
                "toolSpec": {
                    "name": t.name,
                    "description": t.description or t.name,
                    "inputSchema": {"json": t.parameters},
                }
            }
            for t in chat.tools
        ]
        tool_config: dict[str, Any] = {"tools": tools}
        # Converse has no "none": the tools stay declared (history may use them) and
        # the model chooses.
        if chat.tool_choice == "required":
            tool_config["toolChoice"] = {"any": {}}
        elif chat.tool_choice not in (None, "auto", "none"):
            tool_config["toolChoice"] = {"tool": {"name": chat.tool_choice}}
        body["toolConfig"] = tool_config
    return body


def _block(part: Part) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"text": part.text}
    if isinstance(part, Image):
        fmt = _IMAGE_FORMATS.get(part.media_type)
        if part.url or not fmt:
            raise Untranslatable(
                "Bedrock takes images as base64 data: URLs of PNG, JPEG, GIF or WebP",
                "messages",
            )
        return {"image": {"format": fmt, "source": {"bytes": part.data}}}
    if isinstance(part, ToolCall):
        return {"toolUse": {"toolUseId": part.id, "name": part.name, "input": part.args()}}
    assert isinstance(part, ToolResult)
    return {"toolResult": {"toolUseId": part.id, "content": [{"text": part.content}]}}


def _usage(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        return Usage()
    keys = ("inputTokens", "cacheReadInputTokens", "cacheWriteInputTokens")
    prompt = sum(int(usage.get(k) or 0) for k in keys)
    return Usage(prompt, int(usage.get("outputTokens") or 0))


def _message(data: Any) -> Message:
    text: list[str] = []
    calls: list[ToolCall] = []
    for block in data["output"]["message"]["content"]:
        if "text" in block:
            text.append(block["text"])
        elif "toolUse" in block:
            use = block["toolUse"]
            calls.append(
                ToolCall(use["toolUseId"], use["name"], json.dumps(use.get("input") or {}))
            )
    finish = _FINISH.get(data.get("stopReason") or "", "stop")
    return Message("".join(text), calls, finish, _usage(data.get("usage")))


def _error_status(kind: str, status: int, message: str) -> tuple[int, str | None]:
    kind = kind.lower()
    status = _STATUS.get(kind, status)
    lowered = message.lower()
    if kind == "validationexception" and ("too long" in lowered or "context" in lowered):
        return 400, "context_length_exceeded"
    if kind in _AUTH:
        return status, "invalid_api_key"
    return status, None


def _error(status: int, body: bytes, headers: Mapping[str, str]) -> Reply:
    # "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/"
    kind = headers.get("x-amzn-errortype", "").split(":", 1)[0]
    if not kind:
        try:
            kind = str(json.loads(body).get("__type", "")).rsplit("#", 1)[-1]
        except (ValueError, AttributeError):
            kind = ""
    message = error_message(body, f"Bedrock answered HTTP {status}")
    status, code = _error_status(kind, status, message)
    return error_reply(status, message, code)


async def _events(resp: aiohttp.ClientResponse) -> AsyncGenerator[Event, None]:
    eventstream = _botocore("eventstream")
    buffer = eventstream.EventStreamBuffer()
    async for data in resp.content.iter_any():
        buffer.add_data(data)
        while True:
            try:
                msg = next(buffer, None)
            except eventstream.ParserError as exc:
                raise ValueError(f"broken event-stream frame ({type(exc).__name__})") from exc
            if msg is None:
                break
            headers = msg.headers
            kind = headers.get(":message-type")
            if kind == "exception":
                name = str(headers.get(":exception-type") or "")
                text = error_message(msg.payload, f"Bedrock reported {name}")
                status, code = _error_status(name, 502, text)
                yield Failed(status, text, code)
                return
            if kind == "error":
                text = str(headers.get(":error-message") or "Bedrock reported an error")
                yield Failed(502, text)
                return
            for ev in _event(str(headers.get(":event-type")), json.loads(msg.payload or b"{}")):
                yield ev


def _event(kind: str, obj: Any) -> list[Event]:
    if kind == "contentBlockStart":
        use = (obj.get("start") or {}).get("toolUse")
        if use:
            return [ToolStart(obj["contentBlockIndex"], use["toolUseId"], use["name"])]
    elif kind == "contentBlockDelta":
        delta = obj.get("delta") or {}
        if "text" in delta:
            return [TextDelta(delta["text"])]
        if "toolUse" in delta:
            return [ToolArgs(obj["contentBlockIndex"], delta["toolUse"].get("input") or "")]
    elif kind == "messageStop":
        return [Finish(_FINISH.get(obj.get("stopReason") or "", "stop"))]
    elif kind == "metadata":
        usage = _usage(obj.get("usage"))
        return [Tokens(usage.prompt, usage.completion)]
    return []
