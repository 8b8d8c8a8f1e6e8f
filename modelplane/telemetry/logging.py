"""Structured logs: JSON lines for machines, short lines for a terminal.

Every record carries the request id of the request being served, when there is one.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="")

_SECRETS = re.compile(
    r"(?i)(bearer\s+|x-api-key['\"]?\s*[:=]\s*['\"]?|api[-_]key['\"]?\s*[:=]\s*['\"]?)"
    r"[A-Za-z0-9._~+/=-]{8,}"
    r"|\bmp-[A-Za-z0-9_-]{20,}|\bsk-[A-Za-z0-9_-]{16,}"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"
)


def redact(text: str) -> str:
    """Blank out bearer tokens and API keys wherever they appear in a log line, even in
    a third-party library's message or an exception's traceback."""
    return _SECRETS.sub(lambda m: (m.group(1) or "") + "[redacted]", text)


class _Redacting(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(_Redacting):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            out["request_id"] = rid
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, ensure_ascii=False))


def configure(fmt: str = "auto", level: str = "INFO") -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            _Redacting("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-request chatter from the HTTP client (health probes) is noise at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # botocore logs signed canonical requests (with session tokens) at DEBUG.
    logging.getLogger("botocore").setLevel(logging.WARNING)
