"""Structured logging: one JSON object per line (or plain text), fields passed via ``extra``.

Every line logged while a connection or a request is being served carries its ``connection_id``
and ``request_id`` (set by the server in context variables, so no layer below has to pass them
on): all lines of one request message — the per-item "request" lines, errors from the Key HSM or
the store — can be picked out by one id, and a 2.x client gets that id back as the response's
Server Correlation Value.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

_CONNECTION_ID: ContextVar[str | None] = ContextVar("kmip_bridge_connection_id", default=None)
_REQUEST_ID: ContextVar[str | None] = ContextVar("kmip_bridge_request_id", default=None)


def _new_id() -> str:
    return secrets.token_hex(8)  # 64 random bits: unique enough across nodes and restarts


@contextmanager
def connection_scope() -> Iterator[str]:
    """Tags the lines logged inside the block (on this thread) with a new connection id."""
    token = _CONNECTION_ID.set(_new_id())
    try:
        yield _CONNECTION_ID.get() or ""
    finally:
        _CONNECTION_ID.reset(token)


@contextmanager
def request_scope() -> Iterator[str]:
    """Tags the lines logged inside the block with a new request id (one per request message)."""
    token = _REQUEST_ID.set(_new_id())
    try:
        yield _REQUEST_ID.get() or ""
    finally:
        _REQUEST_ID.reset(token)


def request_id() -> str | None:
    """The id of the request message being served on this thread, if any."""
    return _REQUEST_ID.get()


class ContextFilter(logging.Filter):
    """Adds connection_id / request_id to every record logged inside their scopes."""

    def filter(self, record: logging.LogRecord) -> bool:
        for attr, var in (("connection_id", _CONNECTION_ID), ("request_id", _REQUEST_ID)):
            value = var.get()
            if value is not None and not hasattr(record, attr):
                setattr(record, attr, value)
        return True


# Log values may carry client-supplied text (a certificate CN, a Log message, an Interop
# identifier, an error quoting a request). Each is cut to MAX_TEXT characters in every format,
# and the text format escapes every non-printable character (newlines above all), so that one
# record is always one line and a client cannot forge lines or flood the log with one value.
MAX_TEXT = 1024
MAX_TRACEBACK = 16384


def clip(text: str, limit: int = MAX_TEXT) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more characters]"


def escape(text: str) -> str:
    """Backslash escapes for backslash and every non-printable character (\\n, \\x1b, \\u2028...)."""
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch.isprintable():
            out.append(ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def _clipped(value: object) -> object:
    """The value with every string in it clipped (lists, tuples, sets and dicts walked)."""
    if isinstance(value, str):
        return clip(value)
    if isinstance(value, (bytes, bytearray)):
        return clip(value.hex())
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_clipped(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _clipped(v) for k, v in value.items()}
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return clip(str(value))


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: _clipped(v) for k, v in vars(record).items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": os.getpid(),
            "msg": clip(record.getMessage()),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exc"] = clip(self.formatException(record.exc_info), MAX_TRACEBACK)
        return json.dumps(out, default=str)  # ASCII, control characters escaped: one line


def _text_value(value: object) -> str:
    """key=value text: a value with spaces, quotes or '=' is quoted, so that one value cannot
    pose as further fields; lists and dicts are JSON."""
    if isinstance(value, str):
        text = escape(value)
        if text and not any(c in text for c in ' "='):
            return text
        return '"' + text.replace('"', '\\"') + '"'
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return escape(str(value))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={_text_value(v)}" for k, v in _fields(record).items())
        message = escape(clip(record.getMessage()))
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {message}"
        if extra:
            line += " " + extra
        if record.exc_info:  # the traceback too stays on this line, escaped
            line += " exc=" + _text_value(clip(self.formatException(record.exc_info), MAX_TRACEBACK))
        return line


def setup(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Migration chatter is not operational news.
    logging.getLogger("alembic").setLevel(logging.WARNING)
