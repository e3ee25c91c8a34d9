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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": os.getpid(),
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD)
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if extra:
            line += " " + extra
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
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
