"""The server's OpenAPI document: FastAPI's, plus the OpenAI POST routes.

``server/fastpath.py`` serves ``/v1/chat/completions``, ``/v1/completions`` and
``/v1/embeddings`` before FastAPI's router, so FastAPI knows nothing of them. Rather
than add route functions that no request would reach, ``with_openai_routes`` writes
their path items from the models of ``api/openai_schema.py``, once, when the document
is first asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from modelplane.api import openai_schema as s
from modelplane.providers.base import PATHS, Kind

TAG = "openai"
BEARER: dict[str, Any] = {"security": [{"bearer": []}]}
"""The ``openapi_extra`` of a route that takes an API key."""

_SCHEMAS = "#/components/schemas/{model}"
_Refs = dict[tuple[Any, JsonSchemaMode], dict[str, Any]]  # by (model class, mode)
_SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A modelplane API key (or, where the server accepts them, a JWT "
        "from its OIDC issuer): `Authorization: Bearer <key>`.",
    }
}


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


_RATE_LIMIT_PARTS = {
    "limit": "its size (per minute)",
    "remaining": "what is left of it",
    "reset": "when it is whole again (`250ms`, `12s`, `1m3s`)",
}
# Header components are named as the headers are.
_HEADERS = {
    "x-request-id": _header(
        "The request's id: the client's `x-request-id` (or `x-correlation-id`) if it sent "
        "one, else a new one. The server's logs and traces carry it."
    ),
    "x-modelplane-target": _header(
        "The endpoint that answered (a route may have several targets and fallbacks); "
        "absent when the answer came from the response cache."
    ),
    "x-modelplane-cache": _header(
        "`hit` or `miss`, when the route's response cache was looked up."
    ),
    "retry-after": _header("Seconds to wait before trying again."),
    "x-should-retry": _header(
        "`false` on a spent budget: retrying will not help (the OpenAI SDKs honour it)."
    ),
    **{
        f"x-ratelimit-{part}-{kind}": _header(
            f"With rate limits on the key, team or endpoint, of the {kind} limit with the "
            f"least room left: {what}."
        )
        for part, what in _RATE_LIMIT_PARTS.items()
        for kind in ("requests", "tokens")
    },
}
_RATE_LIMITS = tuple(name for name in _HEADERS if name.startswith("x-ratelimit-"))


def _headers(*names: str) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


_PARAMETERS = {
    "x-request-id": {
        "name": "x-request-id",
        "in": "header",
        "required": False,
        "description": "An id for the request, echoed in the answer and written to the "
        "logs and traces (cut to 128 characters); one is made up if absent.",
        "schema": {"type": "string"},
    },
    "x-modelplane-cache": {
        "name": "x-modelplane-cache",
        "in": "header",
        "required": False,
        "description": "Use the route's response cache (`on`) or bypass it (`off`), "
        "whatever the route's `cache.enabled`.",
        "schema": {"type": "string", "enum": ["on", "off"]},
    },
}

_ERRORS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # status: (component name, description, header component names)
    "400": (
        "InvalidRequest",
        "The body is not a JSON object, has no `model`, or has a value the model's "
        "engine refuses (`invalid_request_error`).",
        ("x-request-id",),
    ),
    "401": (
        "Unauthenticated",
        "No API key, or one that is unknown, revoked or expired (`authentication_error`).",
        ("x-request-id",),
    ),
    "403": (
        "Forbidden",
        "The key cannot call models: its role or scopes lack `inference`, or its "
        "account is disabled (`permission_error`).",
        ("x-request-id",),
    ),
    "404": (
        "ModelNotFound",
        "No model of this name that the key may use (`model_not_found`); "
        "`GET /v1/models` lists them.",
        ("x-request-id",),
    ),
    "413": (
        "PayloadTooLarge",
        "The body is larger than the server's limit (`MODELPLANE_MAX_BODY_BYTES`).",
        ("x-request-id",),
    ),
    "429": (
        "RateLimited",
        "A rate limit is reached (`rate_limit_exceeded`: retry after `retry-after` "
        "seconds), or a budget is spent (`insufficient_quota`, with "
        "`x-should-retry: false`: not until the period ends).",
        ("x-request-id", "retry-after", "x-should-retry", *_RATE_LIMITS),
    ),
    "502": (
        "UpstreamError",
        "The model's engine or provider failed, and no fallback answered (`upstream_error`).",
        ("x-request-id",),
    ),
    "503": (
        "Overloaded",
        "No replica of the model is ready yet (`no_ready_replica`), or too many "
        "requests are waiting for one (`overloaded`): retry after `retry-after` seconds.",
        ("x-request-id", "retry-after"),
    ),
    "504": (
        "UpstreamTimeout",
        "The model did not answer in time (`upstream_timeout`).",
        ("x-request-id",),
    ),
}

_STREAM = (
    "Server-sent events, with `stream: true`: one `data: <{chunk} as JSON>` event per "
    "chunk, then `data: [DONE]`."
)


@dataclass(frozen=True)
class _Operation:
    operation_id: str
    summary: str
    description: str
    request: type[BaseModel]
    response: type[BaseModel]
    example: dict[str, Any]
    chunk: type[BaseModel] | None = None
    """The model of each server-sent event, for kinds that stream."""
    stream_example: str = ""


_OPERATIONS: dict[Kind, _Operation] = {
    "chat": _Operation(
        "createChatCompletion",
        "Create a chat completion",
        "The model's next message in a conversation, whole or streamed.",
        s.ChatCompletionRequest,
        s.ChatCompletion,
        {"model": "smollm2", "messages": [{"role": "user", "content": "Hello!"}]},
        s.ChatCompletionChunk,
        'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,'
        '"model":"smollm2","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
        "data: [DONE]\n\n",
    ),
    "completions": _Operation(
        "createCompletion",
        "Create a text completion",
        "The continuation of a prompt, whole or streamed.",
        s.CompletionRequest,
        s.Completion,
        {"model": "smollm2", "prompt": "One, two, three,", "max_tokens": 5},
        s.Completion,
        'data: {"id":"cmpl-1","object":"text_completion","created":1700000000,'
        '"model":"smollm2","choices":[{"index":0,"text":" four","finish_reason":null}]}\n\n'
        "data: [DONE]\n\n",
    ),
    "embeddings": _Operation(
        "createEmbedding",
        "Create embeddings",
        "One embedding vector per input, from targets whose provider serves embeddings "
        "(`openai`, `ollama`, `vertex`); others answer 400.",
        s.EmbeddingRequest,
        s.EmbeddingList,
        {"model": "my-embedding-model", "input": ["The food was delicious."]},
    ),
}


def with_openai_routes(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (FastAPI's document) with the routes of ``server/fastpath.py`` added, and
    the bearer scheme declared on the control API's operations."""
    refs, defs = _schemas()
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    if clash := schemas.keys() & defs.keys():
        raise RuntimeError(f"schema names defined twice in the OpenAPI document: {clash}")
    schemas.update(defs)
    components.setdefault("headers", {}).update(_HEADERS)
    components.setdefault("parameters", {}).update(_PARAMETERS)
    components.setdefault("securitySchemes", {}).update(_SECURITY_SCHEMES)
    responses = components.setdefault("responses", {})
    error = refs[s.ErrorEnvelope, "serialization"]
    for name, description, headers in _ERRORS.values():
        responses[name] = {
            "description": description,
            "headers": _headers(*headers),
            "content": {"application/json": {"schema": error}},
        }
    paths = doc.setdefault("paths", {})
    for kind, path in PATHS.items():
        paths[path] = {"post": _operation(_OPERATIONS[kind], refs)}
    # The control API takes the same bearer credential (an API key or a JWT), which
    # FastAPI cannot see: its routes read it in ``api/deps.py`` dependencies.
    for path, item in paths.items():
        if path.startswith("/api/"):
            for operation in item.values():
                if isinstance(operation, dict):
                    operation.setdefault("security", BEARER["security"])
    return doc


def _schemas() -> tuple[_Refs, dict[str, Any]]:
    """References to the bodies' JSON schemas, and the definitions they refer to."""
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(s.ErrorEnvelope, "serialization")]
    for op in _OPERATIONS.values():
        wanted += [(op.request, "validation"), (op.response, "serialization")]
        if op.chunk is not None:
            wanted.append((op.chunk, "serialization"))
    refs, top = models_json_schema(wanted, ref_template=_SCHEMAS)
    return refs, top.get("$defs", {})


def _operation(op: _Operation, refs: _Refs) -> dict[str, Any]:
    ok: dict[str, Any] = {"application/json": {"schema": refs[op.response, "serialization"]}}
    description = "The answer."
    if op.chunk is not None:
        description = "The answer: JSON, or server-sent events with `stream: true`."
        ok["text/event-stream"] = {
            "schema": {
                "type": "string",
                "description": _STREAM.format(chunk=op.chunk.__name__),
            },
            "example": op.stream_example,
        }
    errors: dict[str, Any] = {
        status: {"$ref": f"#/components/responses/{name}"}
        for status, (name, _, _) in _ERRORS.items()
    }
    return {
        "tags": [TAG],
        "summary": op.summary,
        "description": op.description,
        "operationId": op.operation_id,
        "parameters": [{"$ref": f"#/components/parameters/{name}"} for name in _PARAMETERS],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": refs[op.request, "validation"],
                    "example": op.example,
                }
            },
        },
        "responses": {
            "200": {
                "description": description,
                "headers": _headers(
                    "x-request-id", "x-modelplane-target", "x-modelplane-cache", *_RATE_LIMITS
                ),
                "content": ok,
            },
            **errors,
        },
        **BEARER,
    }
