"""The OpenAPI document: FastAPI's routes plus the OpenAI POST routes of the fast path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from modelplane.api import openai_schema
from modelplane.config import Settings
from modelplane.server.app import create_app
from modelplane.server.fastpath import KINDS

POSTS = sorted(KINDS)


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    # No lifespan: the document needs no database, engines or platform.
    return create_app(Settings(home=tmp_path))


@pytest.fixture
async def doc(app: FastAPI) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mp") as client:
        resp = await client.get("/openapi.json")
    assert resp.status_code == 200, resp.text
    served: dict[str, Any] = resp.json()
    return served


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} points at nothing"
        node = node[part]
    return node


def _deref(doc: dict[str, Any], node: dict[str, Any]) -> Any:
    return _resolve(doc, node["$ref"]) if "$ref" in node else node


def _refs(node: Any) -> Iterator[str]:
    """Every reference in ``node``: ``$ref``s and discriminator mappings."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            elif key == "discriminator" and isinstance(value, dict):
                yield from value.get("mapping", {}).values()
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _request_schema(doc: dict[str, Any], path: str) -> dict[str, Any]:
    body = doc["paths"][path]["post"]["requestBody"]
    schema: dict[str, Any] = _deref(doc, body["content"]["application/json"]["schema"])
    return schema


def test_the_fast_path_routes_are_documented_as_posts_like_the_models_list(
    doc: dict[str, Any],
) -> None:
    models = doc["paths"]["/v1/models"]["get"]
    listed = models["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed == {"$ref": "#/components/schemas/ModelList"}
    for path in POSTS:
        assert list(doc["paths"][path]) == ["post"], path
        op = doc["paths"][path]["post"]
        assert op["tags"] == models["tags"] == ["openai"]
        assert op["security"] == models["security"] == [{"bearer": []}]
        assert op["requestBody"]["required"] is True
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    # FastAPI's own routes are all still there.
    assert "/api/endpoints" in doc["paths"] and "/healthz" in doc["paths"]
    assert "EndpointCreate" in doc["components"]["schemas"]


def test_the_control_api_declares_the_bearer_credential(doc: dict[str, Any]) -> None:
    ops = [
        op
        for path, item in doc["paths"].items()
        if path.startswith("/api/")
        for op in item.values()
    ]
    assert len(ops) > 30
    assert all(op["security"] == [{"bearer": []}] for op in ops)
    assert "security" not in doc["paths"]["/healthz"]["get"]  # probes need no key


def test_every_reference_in_the_document_resolves(doc: dict[str, Any]) -> None:
    refs = set(_refs(doc))
    assert "#/components/schemas/ChatCompletionRequest" in refs
    assert "#/components/schemas/TextPart" in refs  # a discriminator mapping
    for ref in refs:
        _resolve(doc, ref)


def test_requests_need_a_model_and_may_carry_fields_the_schema_does_not_name(
    doc: dict[str, Any],
) -> None:
    needs = {
        "/v1/chat/completions": {"model", "messages"},
        "/v1/completions": {"model", "prompt"},
        "/v1/embeddings": {"model", "input"},
    }
    for path in POSTS:
        schema = _request_schema(doc, path)
        assert set(schema["required"]) == needs[path], path
        assert schema["additionalProperties"] is True
    chat = _request_schema(doc, "/v1/chat/completions")["properties"]
    for name in ("stream", "stream_options", "max_tokens", "max_completion_tokens", "tools"):
        assert name in chat, name
    embeddings = _request_schema(doc, "/v1/embeddings")["properties"]
    assert len(embeddings["input"]["anyOf"]) == 4  # str, [str], [int], [[int]]


def test_the_examples_are_bodies_the_request_models_accept(doc: dict[str, Any]) -> None:
    models: dict[str, type[BaseModel]] = {
        "/v1/chat/completions": openai_schema.ChatCompletionRequest,
        "/v1/completions": openai_schema.CompletionRequest,
        "/v1/embeddings": openai_schema.EmbeddingRequest,
    }
    for path in POSTS:
        example = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        models[path].model_validate(example["example"])
    # Content parts, a response format, and a field only some engines know.
    openai_schema.ChatCompletionRequest.model_validate(
        {
            "model": "smollm2",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                    ],
                },
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
            "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
            "cache_prompt": True,
        }
    )


def test_answers_are_documented_and_streams_are_event_streams(doc: dict[str, Any]) -> None:
    for path in POSTS:
        ok = doc["paths"][path]["post"]["responses"]["200"]
        assert {"x-request-id", "x-modelplane-target", "x-modelplane-cache"} <= set(ok["headers"])
        assert "x-ratelimit-remaining-tokens" in ok["headers"]
        streams = "text/event-stream" in ok["content"]
        assert streams == (path != "/v1/embeddings"), path
    chat = doc["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    answer = _deref(doc, chat["application/json"]["schema"])
    assert answer["properties"]["object"]["const"] == "chat.completion"
    assert "ChatCompletionChunk" in chat["text/event-stream"]["schema"]["description"]
    embeddings = doc["paths"]["/v1/embeddings"]["post"]["responses"]["200"]["content"]
    listed = _deref(doc, embeddings["application/json"]["schema"])
    assert listed["properties"]["object"]["const"] == "list"


def test_errors_are_the_openai_envelope_with_the_headers_a_client_sees(
    doc: dict[str, Any],
) -> None:
    for path in POSTS:
        responses = doc["paths"][path]["post"]["responses"]
        for status in ("400", "401", "403", "404", "413", "429", "502", "503", "504"):
            error = _deref(doc, responses[status])
            assert "x-request-id" in error["headers"], (path, status)
            envelope = _deref(doc, error["content"]["application/json"]["schema"])
            detail = _deref(doc, envelope["properties"]["error"])
            assert set(detail["required"]) == {"message", "type", "param", "code"}
        limited = _deref(doc, responses["429"])
        assert {"retry-after", "x-should-retry", "x-ratelimit-reset-requests"} <= set(
            limited["headers"]
        )
        assert "retry-after" in _deref(doc, responses["503"])["headers"]
    for header in doc["components"]["headers"].values():
        assert header["description"] and header["schema"] == {"type": "string"}


def test_the_document_is_built_once(app: FastAPI) -> None:
    assert app.openapi() is app.openapi()


async def test_the_fast_path_still_serves_those_paths(app: FastAPI) -> None:
    # Documented without a route function: FastAPI's router has none for them…
    routed = get_openapi(title=app.title, version=app.version, routes=app.routes)["paths"]
    assert "/v1/models" in routed
    assert not set(routed) & set(KINDS)
    # …and the fast path answers them (FastAPI would say 404: no such path).
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mp") as client:
        resp = await client.get("/v1/chat/completions")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "POST"
    assert resp.json()["error"]["code"] == "method_not_allowed"
