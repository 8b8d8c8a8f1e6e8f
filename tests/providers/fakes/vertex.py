"""A fake Vertex AI endpoint for Gemini (``generateContent``, ``streamGenerateContent``
with CRLF-separated SSE) and text embeddings (``predict``), with recorded shapes."""

from __future__ import annotations

import json

from aiohttp import web

from tests.providers.fakes.base import Fake


class FakeVertex(Fake):
    """Gemini's ``:generateContent``, ``:streamGenerateContent?alt=sse`` and text
    embeddings' ``:predict`` on {region}-aiplatform.googleapis.com."""

    TOKEN = "ya29.a0AfB_test-access-token"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("authorization") != f"Bearer {self.TOKEN}":
            return _google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
            )
        if request.method == "GET":  # a health check's path
            return web.json_response({"status": "ok"})
        s = self.scenario
        if s == "exhausted":
            return _google_error(
                429, "RESOURCE_EXHAUSTED", "Resource exhausted. Please try again later."
            )
        if s == "too_long":
            return _google_error(
                400,
                "INVALID_ARGUMENT",
                "The input token count (1048577) exceeds the maximum number of tokens "
                "allowed (1048576).",
            )
        if s == "unavailable":
            return _google_error(503, "UNAVAILABLE", "The service is currently unavailable.")
        if request.path.endswith(":predict"):
            return web.json_response(VERTEX_EMBEDDINGS)
        answers = {"tool": VERTEX_TOOL, "safety": VERTEX_SAFETY, "blocked": VERTEX_BLOCKED}
        if request.path.endswith(":generateContent"):
            return web.json_response(answers.get(s, VERTEX_TEXT))
        chunks = VERTEX_TOOL_STREAM if s == "tool" else VERTEX_TEXT_STREAM
        if s == "error_first":
            error = {"code": 429, "message": "Resource exhausted.", "status": "RESOURCE_EXHAUSTED"}
            chunks = [{"error": error}]
        return await self.stream(
            request,
            "text/event-stream",
            [f"data: {json.dumps(c)}\r\n\r\n".encode() for c in chunks],
        )


def _google_error(code: int, status: str, message: str) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message, "status": status}}, status=code
    )


_USAGE = {
    "promptTokenCount": 12,
    "candidatesTokenCount": 8,
    "totalTokenCount": 20,
    "trafficType": "ON_DEMAND",
}
_CANDIDATE_END = {"finishReason": "STOP", "avgLogprobs": -0.12}
VERTEX_TEXT = {
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": "Paris is the capital of France."}]},
            **_CANDIDATE_END,
        }
    ],
    "usageMetadata": {**_USAGE, "thoughtsTokenCount": 3},
    "modelVersion": "gemini-2.5-flash",
    "createTime": "2025-06-01T10:00:00.000000Z",
    "responseId": "Q2k8aNnpGZ2Z9M8PsMaZsQw",
}
VERTEX_TOOL = {
    **VERTEX_TEXT,
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": "CiQBVKhc7g==",
                    },
                ],
            },
            **_CANDIDATE_END,
        }
    ],
}
VERTEX_SAFETY = {
    **VERTEX_TEXT,
    "candidates": [
        {
            "content": {"role": "model", "parts": [{"text": ""}]},
            "finishReason": "SAFETY",
            "safetyRatings": [
                {
                    "category": "HARM_CATEGORY_DANGEROUS_CONTENT",
                    "probability": "HIGH",
                    "blocked": True,
                }
            ],
        }
    ],
}
VERTEX_BLOCKED = {
    "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
    "usageMetadata": {"promptTokenCount": 7, "totalTokenCount": 7},
    "modelVersion": "gemini-2.5-flash",
}
VERTEX_TEXT_STREAM = [
    {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Paris is"}]}}],
        "usageMetadata": {"trafficType": "ON_DEMAND"},
        "modelVersion": "gemini-2.5-flash",
    },
    {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": " the capital of France."}]}}
        ],
        "usageMetadata": {"trafficType": "ON_DEMAND"},
        "modelVersion": "gemini-2.5-flash",
    },
    {
        "candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, **_CANDIDATE_END}],
        "usageMetadata": _USAGE,
        "modelVersion": "gemini-2.5-flash",
    },
]
VERTEX_TOOL_STREAM = [
    {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
                }
            }
        ],
        "usageMetadata": {"trafficType": "ON_DEMAND"},
    },
    {
        "candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, **_CANDIDATE_END}],
        "usageMetadata": _USAGE,
    },
]
VERTEX_EMBEDDINGS = {
    "predictions": [
        {
            "embeddings": {
                "values": [0.25, -0.5, 1.0],
                "statistics": {"token_count": 3, "truncated": False},
            }
        },
        {
            "embeddings": {
                "values": [0.125, 0.0, -1.5],
                "statistics": {"token_count": 4, "truncated": False},
            }
        },
    ],
    "metadata": {"billableCharacterCount": 22},
}
