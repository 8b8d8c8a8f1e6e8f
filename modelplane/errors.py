"""The one exception hierarchy of modelplane.

::

    ModelplaneError                 (500 internal_error)
    ├── InvalidRequest              (400 invalid_request_error; ``param`` names the field)
    ├── AuthenticationError         (401 invalid_api_key)
    ├── PermissionDenied            (403 permission_denied)
    ├── NotFound                    (404 not_found)
    │   └── ModelNotFound           (404 model_not_found)
    ├── Conflict                    (409 conflict)
    ├── PayloadTooLarge             (413 payload_too_large)
    ├── RateLimited                 (429 rate_limit_exceeded; carries ``retry_after``)
    ├── BudgetExceeded              (429 insufficient_quota; not worth retrying)
    ├── Overloaded                  (503 overloaded; carries ``retry_after``)
    │   └── NoReadyReplica          (503 no_ready_replica)
    └── UpstreamError               (502 upstream_error)
        └── UpstreamTimeout         (504 upstream_timeout)

Every error is rendered in exactly one place (``api/errors.py``): as the OpenAI error
envelope on ``/v1`` and engine routes, and as RFC 9457 problem+json on ``/api``.
Messages are written for the person who reads them: what went wrong, what to do next.
They never contain secrets. ``extra_headers`` lets the code that saw an error add
response headers to it (the gateway adds its ``x-ratelimit-*`` headers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ModelplaneError(Exception):
    status = 500
    type = "internal_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.extra_headers: dict[str, str] = {}

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(ModelplaneError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_parameter"


class AuthenticationError(ModelplaneError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ModelplaneError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(ModelplaneError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class ModelNotFound(NotFound):
    type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist. List the available models with GET /v1/models.",
            param="model",
        )


class Conflict(ModelplaneError):
    status = 409
    type = "conflict_error"
    code = "conflict"


class PayloadTooLarge(ModelplaneError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class RateLimited(ModelplaneError):
    """A rate limit (requests or tokens per minute, concurrent requests) is reached."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after)}


class BudgetExceeded(ModelplaneError):
    """A hard budget is spent; requests are refused until the period ends or an admin
    raises it, so clients are told not to retry (``x-should-retry: false``, which the
    OpenAI SDKs honour)."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    def headers(self) -> dict[str, str]:
        return {"x-should-retry": "false"}


class Overloaded(ModelplaneError):
    status = 503
    type = "overloaded_error"
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after)}


class NoReadyReplica(Overloaded):
    code = "no_ready_replica"


class UpstreamError(ModelplaneError):
    status = 502
    type = "upstream_error"
    code = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


def first_invalid(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """The first field a validator (pydantic's ``errors()``) refused, named as OpenAI
    names fields (``messages[0].role``), and why."""
    err = errors[0]
    name = ""
    for part in err.get("loc", ()):
        if isinstance(part, int):
            name += f"[{part}]"
        elif part != "body" and not str(part).startswith(("function-", "literal[", "str", "list[")):
            name += f".{part}" if name else str(part)
    return name or "body", str(err.get("msg", "invalid value")).removeprefix("Value error, ")


def openai_envelope(err: ModelplaneError) -> dict[str, object]:
    """The body OpenAI clients expect: ``{"error": {message, type, param, code}}``."""
    return {
        "error": {
            "message": err.message,
            "type": err.type,
            "param": err.param,
            "code": err.code,
        }
    }


def problem_details(err: ModelplaneError, instance: str = "") -> dict[str, object]:
    """RFC 9457 problem+json for the control API."""
    body: dict[str, object] = {
        "type": f"https://modelplane.dev/errors/{err.code or err.type}",
        "title": err.type.replace("_", " "),
        "status": err.status,
        "detail": err.message,
    }
    if instance:
        body["instance"] = instance
    if err.param:
        body["param"] = err.param
    return body
