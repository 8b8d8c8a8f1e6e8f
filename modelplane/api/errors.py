"""The one place errors become responses: the OpenAI envelope on ``/v1``,
problem+json on ``/api``. Foreign exceptions never reach a client as a stack trace."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from modelplane.errors import (
    InvalidRequest,
    ModelplaneError,
    NotFound,
    first_invalid,
    openai_envelope,
    problem_details,
)

log = logging.getLogger(__name__)


def error_response(err: ModelplaneError, path: str) -> Response:
    headers = {**err.extra_headers, **err.headers()}
    if path.startswith("/api"):
        return JSONResponse(
            problem_details(err, path),
            status_code=err.status,
            headers=headers,
            media_type="application/problem+json",
        )
    return JSONResponse(openai_envelope(err), status_code=err.status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ModelplaneError)
    async def _ours(request: Request, exc: ModelplaneError) -> Response:
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return error_response(
                InvalidRequest("the request body is not valid JSON"), request.url.path
            )
        param, msg = first_invalid(exc.errors())
        return error_response(
            InvalidRequest(f"invalid '{param}': {msg}", param=param), request.url.path
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            err: ModelplaneError = NotFound(f"no such path: {request.url.path}")
        elif exc.status_code == 405:
            allowed = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow", "")
            err = ModelplaneError(
                f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
            )
            err.status, err.type, err.code = 405, "invalid_request_error", "method_not_allowed"
        else:
            err = ModelplaneError(str(exc.detail))
            err.status = exc.status_code
            err.type = err.code = "http_error"
        return error_response(err, request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected %s on %s", type(exc).__name__, request.url.path, exc_info=exc)
        return error_response(
            ModelplaneError(
                "internal error; the server log has the details "
                f"(request id {request.scope.get('state', {}).get('request_id')})"
            ),
            request.url.path,
        )
