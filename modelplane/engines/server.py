"""The OpenAI-compatible HTTP server around any ``Engine`` (one model per process).

Routes: ``/v1/chat/completions`` and ``/v1/completions`` (JSON or SSE), ``/v1/models``,
``/health``, ``/metrics`` (Prometheus, see ``engines/metrics.py``). The server answers
for whatever ``model`` a request names: the gateway routes by endpoint name and the
replica serves exactly one model.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError

from modelplane.asgi import until_disconnect
from modelplane.engines.base import Delta, Engine, GenerateRequest, TokenLogprob
from modelplane.engines.metrics import CONTENT_TYPE, EngineMetrics
from modelplane.engines.schemas import ChatCompletionRequest, CompletionRequest
from modelplane.errors import (
    InvalidRequest,
    ModelplaneError,
    PayloadTooLarge,
    first_invalid,
    openai_envelope,
)

M = TypeVar("M", bound=BaseModel)

MAX_BODY_BYTES = 8 * 1024 * 1024


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _sse(obj: Any) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


async def parse(request: Request, model: type[M]) -> M:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        param, why = first_invalid(exc.errors())
        raise InvalidRequest(f"invalid '{param}': {why}", param=param) from None


def _error_response(err: ModelplaneError) -> JSONResponse:
    return JSONResponse(openai_envelope(err), status_code=err.status, headers=err.headers())


def _chat_logprobs(lps: list[TokenLogprob]) -> dict[str, Any] | None:
    if not lps:
        return None
    return {
        "content": [
            {
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": list(lp.bytes),
                "top_logprobs": [
                    {"token": t, "logprob": v, "bytes": list(b)} for t, v, b in lp.top
                ],
            }
            for lp in lps
        ]
    }


def _completion_logprobs(lps: list[TokenLogprob], offset: int) -> dict[str, Any] | None:
    if not lps:
        return None
    offsets, pos = [], offset
    for lp in lps:
        offsets.append(pos)
        pos += len(lp.token)
    return {
        "tokens": [lp.token for lp in lps],
        "token_logprobs": [lp.logprob for lp in lps],
        "top_logprobs": [{t: v for t, v, _ in lp.top} for lp in lps],
        "text_offset": offsets,
    }


def _usage(d: Delta) -> dict[str, int]:
    return {
        "prompt_tokens": d.prompt_tokens,
        "completion_tokens": d.completion_tokens,
        "total_tokens": d.prompt_tokens + d.completion_tokens,
    }


class _Shape:
    """How one kind of request (chat or completion) looks on the wire."""

    def __init__(self, kind: str, model: str) -> None:
        self.chat = kind == "chat"
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.model = model
        self.offset = 0

    def chunk(self, d: Delta) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "delta": {"content": d.text} if d.text or not d.finish_reason else {},
                "logprobs": _chat_logprobs(d.logprobs),
                "finish_reason": d.finish_reason,
            }
            obj = "chat.completion.chunk"
        else:
            choice = {
                "index": 0,
                "text": d.text,
                "logprobs": _completion_logprobs(d.logprobs, self.offset),
                "finish_reason": d.finish_reason,
            }
            self.offset += len(d.text)
            obj = "text_completion"
        return self._envelope(obj, [choice])

    def _envelope(self, obj: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }

    def first_chunk(self) -> dict[str, Any] | None:
        if not self.chat:
            return None
        role = {"role": "assistant", "content": ""}
        return self._envelope(
            "chat.completion.chunk",
            [{"index": 0, "delta": role, "logprobs": None, "finish_reason": None}],
        )

    def usage_chunk(self, d: Delta) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return self._envelope(obj, [], usage=_usage(d))

    def whole(self, text: str, lps: list[TokenLogprob], last: Delta) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": _chat_logprobs(lps),
                "finish_reason": last.finish_reason,
            }
            obj = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": _completion_logprobs(lps, 0),
                "finish_reason": last.finish_reason,
            }
            obj = "text_completion"
        return self._envelope(obj, [choice], usage=_usage(last))


def create_engine_app(engine: Engine) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await engine.start()
        try:
            yield
        finally:
            await engine.close()

    app = FastAPI(title="modelplane engine", lifespan=lifespan, docs_url=None, redoc_url=None)
    metrics = EngineMetrics(engine.health)

    @app.exception_handler(ModelplaneError)
    async def _modelplane_error(request: Request, exc: ModelplaneError) -> Response:
        started = getattr(request.state, "started", None)
        if started is not None:
            kind = "chat" if request.url.path.endswith("/chat/completions") else "completion"
            metrics.observe(kind, exc.status, time.perf_counter() - started)
        return _error_response(exc)

    async def serve(
        request: Request, req: GenerateRequest, shape: _Shape, stream: bool, include_usage: bool
    ) -> Response:
        started: float = request.state.started
        deltas = engine.generate(req)
        if stream:
            # Pull the first delta before answering, so errors found before generation
            # (bad schema, context too long, queue full) get a proper status code. A
            # client that leaves meanwhile (queued, or a long prompt) cancels it.
            finished, first = await until_disconnect(request.receive, anext(deltas, None))
            ttft = time.perf_counter() - started
            if not finished:
                metrics.observe(req.kind, 499, ttft)
                return Response(status_code=499)

            def done(last: Delta | None, status: int) -> None:
                prompt, completion = (
                    (last.prompt_tokens, last.completion_tokens) if last else (0, 0)
                )
                elapsed = time.perf_counter() - started
                metrics.observe(req.kind, status, elapsed, ttft, prompt, completion)

            return StreamingResponse(
                _stream(shape, first, deltas, include_usage, done),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )
        finished, body = await until_disconnect(request.receive, _collect(shape, deltas))
        if not finished or body is None:
            metrics.observe(req.kind, 499, time.perf_counter() - started)
            return Response(status_code=499)
        usage = body["usage"]
        elapsed = time.perf_counter() - started
        metrics.observe(
            req.kind, 200, elapsed, None, usage["prompt_tokens"], usage["completion_tokens"]
        )
        return Response(_dumps(body), media_type="application/json")

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        request.state.started = time.perf_counter()
        r = await parse(request, ChatCompletionRequest)
        if not engine.capabilities.tools:
            r.refuse_tools()
        try:
            messages = tuple(m.plain() for m in r.messages)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="messages") from None
        req = GenerateRequest(
            kind="chat",
            params=r.sampling(),
            messages=messages,
            request_id=request.headers.get("x-request-id", ""),
            tools=tuple(r.tools or ()),
            tool_choice=r.tool_choice,
        )
        return await serve(
            request, req, _Shape("chat", r.model or engine.model_id), r.stream, r.include_usage
        )

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        request.state.started = time.perf_counter()
        r = await parse(request, CompletionRequest)
        req = GenerateRequest(
            kind="completion",
            params=r.sampling(),
            prompt=r.prompt_text,
            request_id=request.headers.get("x-request-id", ""),
        )
        return await serve(
            request,
            req,
            _Shape("completion", r.model or engine.model_id),
            r.stream,
            r.include_usage,
        )

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": engine.model_id, "object": "model", "created": 0, "owned_by": "modelplane"}
            ],
        }

    @app.get("/health")
    async def health() -> Response:
        state = engine.health()
        return JSONResponse(state, status_code=200 if state.get("status") == "ok" else 503)

    return app


async def _collect(shape: _Shape, deltas: AsyncIterator[Delta]) -> dict[str, Any]:
    parts: list[str] = []
    lps: list[TokenLogprob] = []
    last = Delta()
    async for d in deltas:
        parts.append(d.text)
        lps.extend(d.logprobs)
        last = d
    return shape.whole("".join(parts), lps, last)


async def _stream(
    shape: _Shape,
    first: Delta | None,
    deltas: AsyncIterator[Delta],
    include_usage: bool,
    done: Callable[[Delta | None, int], None] | None = None,
) -> AsyncIterator[bytes]:
    """The SSE frames of a stream; ``done`` gets the last delta and the status (499: the
    client left first) when it ends."""
    head = shape.first_chunk()
    # The role chunk and the first token leave in one write: one less hop per proxy.
    pending = _sse(head) if head is not None else b""
    last, status = None, 499
    try:
        d = first
        while d is not None:
            last = d
            out = pending + _sse(shape.chunk(d))
            pending = b""
            if d.finish_reason is not None:
                if include_usage:
                    out += _sse(shape.usage_chunk(d))
                status = 200
                yield out + b"data: [DONE]\n\n"
                return
            yield out
            d = await anext(deltas, None)
        status = 200
    except ModelplaneError as exc:
        status = exc.status
        yield pending + _sse(openai_envelope(exc)) + b"data: [DONE]\n\n"
    finally:
        await deltas.aclose()  # type: ignore[attr-defined]
        if done is not None:
            done(last, status)
