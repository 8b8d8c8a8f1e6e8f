"""Structured logs: JSON lines for machines, short lines for a terminal.

Every record carries the request id of the request being served, when there is one.
A record may carry structured fields (``extra={"fields": {...}}``, as the per-request
summary lines of ``modelplane.access`` do): they become keys of the JSON line, or
``key=value`` pairs after the message in a terminal. Anything shaped like a key or a
bearer token is blanked in every line, whatever wrote it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from contextvars import ContextVar

import orjson

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
    low = text.lower()
    # Every match of _SECRETS (case-insensitive throughout) holds one of these; the
    # regex costs ~50 µs a line, and most lines have nothing for it.
    if not ("api" in low or "bearer" in low or "mp-" in low or "sk-" in low or "eyj" in low):
        return text
    return _SECRETS.sub(lambda m: (m.group(1) or "") + "[redacted]", text)


class _Redacting(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def _plain(value: object) -> str:
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value and " " not in value and '"' not in value:
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


class ConsoleFormatter(_Redacting):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            pairs = " ".join(
                f"{k}={_plain(v)}" for k, v in fields.items() if v is not None and k != "request_id"
            )
            line = redact(f"{line} {pairs}")
        return line


class JsonFormatter(_Redacting):
    """One JSON object per line. At the default level every request writes one (its
    ``modelplane.access`` summary), so the line is built with orjson (0.9 µs against
    7.7 µs for ``json.dumps``, timed on a 2-core development machine) and the
    timestamp's seconds are formatted once per second."""

    def __init__(self) -> None:
        super().__init__()
        self._stamp = (-1, "")
        """The last second formatted, and how: one tuple, so that threads sharing this
        formatter never pair one second with another's text."""

    def format(self, record: logging.LogRecord) -> str:
        second, stamp = self._stamp
        if int(record.created) != second:
            second = int(record.created)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._stamp = (second, stamp)
        out: dict[str, object] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            out["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(_dumps(out))


def _dumps(obj: dict[str, object]) -> str:
    """JSON text; what orjson refuses (an integer beyond 64 bits, a lone surrogate) is
    written by ``json``. Values neither knows become their ``str()``."""
    try:
        return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(_finite(obj), ensure_ascii=False, default=str)


def _finite(value: object) -> object:
    """``value`` with NaN and the infinities as None, as orjson writes them (``json``
    would write ``NaN``, which is not JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def configure(fmt: str = "auto", level: str = "INFO") -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Neither format shows where a line was logged from, or which thread or process
    # did: skip finding out (the logging HOWTO's "Optimization"). With a summary line
    # per request at INFO, that is a fifth of what a line costs.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # Per-request chatter from the HTTP client (health probes) is noise at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # botocore logs signed canonical requests (with session tokens) at DEBUG.
    logging.getLogger("botocore").setLevel(logging.WARNING)
