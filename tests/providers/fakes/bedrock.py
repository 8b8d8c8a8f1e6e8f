"""A fake bedrock-runtime: Converse and ConverseStream with recorded shapes, SigV4
checking as AWS does it, and binary event-stream frames."""

from __future__ import annotations

import binascii
import hmac
import json
import re
import struct
from typing import Any

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.providers.fakes.base import Fake


def event_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (lengths + CRC), string headers, payload,
    message CRC."""
    encoded = b"".join(
        bytes([len(name)])
        + name.encode()
        + b"\x07"
        + struct.pack(">H", len(value))
        + value.encode()
        for name, value in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack(">I", binascii.crc32(message))


def bedrock_event(kind: str, payload: dict[str, Any]) -> bytes:
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return event_frame(headers, json.dumps(payload).encode())


_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[^,]+), "
    r"Signature=(?P<sig>[0-9a-f]{64})"
)


class FakeBedrock(Fake):
    """``POST /model/{id}/converse`` and ``/converse-stream`` of bedrock-runtime, checking
    SigV4 signatures the way AWS does (recomputed here with botocore)."""

    ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
    SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLETOKEN"
    REGION = "eu-west-1"

    def __init__(self) -> None:
        super().__init__()
        self.signature_ok: list[bool] = []

    def _verify(self, request: web.Request, body: bytes) -> bool:
        m = _AUTHORIZATION.fullmatch(request.headers.get("authorization", ""))
        if not m or (m["key"], m["region"], m["service"]) != (
            self.ACCESS_KEY,
            self.REGION,
            "bedrock",
        ):
            return False
        if request.headers.get("x-amz-security-token") != self.SESSION_TOKEN:
            return False
        signed = m["signed"].split(";")
        headers = {h: request.headers[h] for h in signed if h != "host"}
        aws = AWSRequest(
            method=request.method,
            url=f"http://{request.host}{request.raw_path}",
            data=body,
            headers=headers,
        )
        aws.context["timestamp"] = request.headers["x-amz-date"]
        signer = SigV4Auth(
            Credentials(self.ACCESS_KEY, self.SECRET_KEY, self.SESSION_TOKEN),
            "bedrock",
            self.REGION,
        )
        expected = signer.signature(signer.string_to_sign(aws, signer.canonical_request(aws)), aws)
        return "host" in signed and hmac.compare_digest(expected, m["sig"])

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        ok = self._verify(request, body)
        self.signature_ok.append(ok)
        if not ok:
            return _aws_error(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method.",
            )
        if request.method == "GET":  # a health check's path, signed like any request
            return web.json_response({"status": "ok"})
        s = self.scenario
        if s == "throttled":
            return _aws_error(
                429, "ThrottlingException", "Too many requests, please wait before trying again."
            )
        if s == "too_long":
            return _aws_error(400, "ValidationException", "Input is too long for requested model.")
        if s == "not_ready":
            return _aws_error(
                429, "ModelNotReadyException", "Model is not ready to serve inference requests."
            )
        if s == "unavailable":
            return _aws_error(
                503, "ServiceUnavailableException", "Bedrock is unable to process your request."
            )
        if request.raw_path.endswith("/converse"):
            return web.json_response(BEDROCK_TOOL if s == "tool" else BEDROCK_TEXT)
        frames = [
            bedrock_event(k, p)
            for k, p in (BEDROCK_TOOL_STREAM if s == "tool" else BEDROCK_TEXT_STREAM)
        ]
        exc = {
            ":exception-type": "throttlingException",
            ":content-type": "application/json",
            ":message-type": "exception",
        }
        throttled = event_frame(
            exc, b'{"message":"Too many tokens, please wait before trying again."}'
        )
        if s == "stream_exception":  # after some text
            frames = [*frames[:2], throttled]
        if s == "exception_first":
            frames = [frames[0], throttled]
        if s == "bad_frame":
            frames[2] = frames[2][:-1] + bytes([frames[2][-1] ^ 0xFF])  # a wrong message CRC
        return await self.stream(request, "application/vnd.amazon.eventstream", frames)


def _aws_error(status: int, kind: str, message: str) -> web.Response:
    headers = {
        "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        "x-amzn-RequestId": "7f5e1a0c-0c0e-4d2b-9f0a-2f3c5b1e6a11",
    }
    return web.json_response({"message": message}, status=status, headers=headers)


BEDROCK_TEXT = {
    "output": {
        "message": {"role": "assistant", "content": [{"text": "Paris is the capital of France."}]}
    },
    "stopReason": "end_turn",
    "usage": {"inputTokens": 25, "outputTokens": 9, "totalTokens": 34},
    "metrics": {"latencyMs": 412},
}
BEDROCK_TOOL = {
    "output": {
        "message": {
            "role": "assistant",
            "content": [
                {"text": "Let me check."},
                {
                    "toolUse": {
                        "toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                },
            ],
        }
    },
    "stopReason": "tool_use",
    "usage": {"inputTokens": 410, "outputTokens": 48, "totalTokens": 458},
    "metrics": {"latencyMs": 1203},
}
_P = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"  # Bedrock pads stream payloads with "p"
BEDROCK_TEXT_STREAM: list[tuple[str, dict[str, Any]]] = [
    ("messageStart", {"p": _P, "role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Paris is the"}, "p": _P}),
    (
        "contentBlockDelta",
        {"contentBlockIndex": 0, "delta": {"text": " capital of France."}, "p": _P[:5]},
    ),
    ("contentBlockStop", {"contentBlockIndex": 0, "p": _P}),
    ("messageStop", {"p": _P, "stopReason": "end_turn"}),
    (
        "metadata",
        {
            "metrics": {"latencyMs": 380},
            "p": "abc",
            "usage": {"inputTokens": 25, "outputTokens": 9, "totalTokens": 34},
        },
    ),
]
BEDROCK_TOOL_STREAM: list[tuple[str, dict[str, Any]]] = [
    ("messageStart", {"p": _P, "role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Let me check."}, "p": _P}),
    ("contentBlockStop", {"contentBlockIndex": 0, "p": _P}),
    (
        "contentBlockStart",
        {
            "contentBlockIndex": 1,
            "p": _P,
            "start": {
                "toolUse": {"name": "get_weather", "toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q"}
            },
        },
    ),
    (
        "contentBlockDelta",
        {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"city": '}}, "p": _P},
    ),
    (
        "contentBlockDelta",
        {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '"Paris"}'}}, "p": _P},
    ),
    ("contentBlockStop", {"contentBlockIndex": 1, "p": _P}),
    ("messageStop", {"p": _P, "stopReason": "tool_use"}),
    (
        "metadata",
        {
            "metrics": {"latencyMs": 1100},
            "p": "ab",
            "usage": {"inputTokens": 410, "outputTokens": 48, "totalTokens": 458},
        },
    ),
]
