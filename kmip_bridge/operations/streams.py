"""Multi-part (streaming) cryptographic operations: Init Indicator / Correlation Value / Final
Indicator (KMIP 1.3+).

A stream keeps the caller's accumulated *input* and how much output it has already been given,
never key material: every part re-opens the key through the Key HSM and re-checks authorisation
and state, so revoking a key stops its streams. The state lives in this worker process; a client
continues a stream on the same connection (a connection never changes worker). Streams are bound
to the identity that opened them, expire, and are bounded in number and size: per stream, per
identity (so that one client filling the table cannot lock every other client out) and per
worker in total (server.max_stream* settings, operations.context.Budgets).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

from kmip.core.enums import ResultReason
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.errors import KmipError
from ..protocol.ttlv import Item
from .context import RequestContext

TTL_SECONDS = 600.0


@dataclass
class Stream:
    owner: str
    operation: int
    uid: str | None
    state: dict[str, object]  # operation-specific: parameters, IV, AAD...
    data: bytearray = field(default_factory=bytearray)
    sent: int = 0  # output bytes already returned
    expires: float = 0.0
    limit: int = 0  # bytes this stream may buffer (server.max_stream_bytes when it was opened)


_streams: dict[bytes, Stream] = {}
_lock = threading.Lock()


@dataclass
class Part:
    """Where one request stands in a stream."""

    init: bool
    final: bool
    correlation: bytes | None


def part(payload: Item) -> Part:
    correlation = payload.value_of(T.CORRELATION_VALUE.value)
    if correlation is not None and not isinstance(correlation, bytes):
        raise KmipError(ResultReason.INVALID_FIELD, "Correlation Value must be a byte string")
    init = bool(payload.value_of(T.INIT_INDICATOR.value, False))
    final = bool(payload.value_of(T.FINAL_INDICATOR.value, False))
    if init and correlation is not None:
        raise KmipError(ResultReason.INVALID_FIELD, "Init Indicator and Correlation Value exclude each other")
    # Neither indicator nor correlation: a one-shot operation (the same as Init + Final).
    return Part(init=init, final=final or (not init and correlation is None), correlation=correlation)


def _invalid(ctx: RequestContext) -> KmipError:
    reason = ResultReason.INVALID_CORRELATION_VALUE if ctx.v2 else ResultReason.INVALID_FIELD
    return KmipError(reason, "unknown or expired Correlation Value")


def _expire(now: float) -> None:
    for key in [k for k, s in _streams.items() if s.expires < now]:
        del _streams[key]


def take(ctx: RequestContext, correlation: bytes, operation: int) -> Stream:
    """Removes the stream while one part runs: a concurrent part with the same value finds
    nothing, and a part that fails ends the stream (it is only put back by :func:`save`)."""
    with _lock:
        _expire(time.monotonic())
        stream = _streams.pop(correlation, None)
        if stream is not None and (stream.owner != ctx.identity.name or stream.operation != operation):
            _streams[correlation] = stream  # not the caller's: untouched, and reported as unknown
            stream = None
    if stream is None:
        raise _invalid(ctx)
    return stream


def feed(ctx: RequestContext, stream: Stream, chunk: bytes) -> None:
    if len(stream.data) + len(chunk) > stream.limit:
        raise ctx.limit_exceeded(f"a stream may carry at most {stream.limit} bytes (server.max_stream_bytes)")
    stream.data += chunk


def _held(owner: str) -> tuple[int, int, int]:
    """(streams of ``owner``, bytes they buffer, bytes all streams buffer), under _lock."""
    count = mine = total = 0
    for s in _streams.values():
        total += len(s.data)
        if s.owner == owner:
            count += 1
            mine += len(s.data)
    return count, mine, total


def save(ctx: RequestContext, stream: Stream, correlation: bytes | None) -> bytes:
    """Keeps the stream for its next part; returns its (new or unchanged) Correlation Value.
    Refused (the stream ends) when it would take the caller or the worker past a budget."""
    b = ctx.services.budgets
    now = time.monotonic()
    stream.expires = now + TTL_SECONDS
    with _lock:
        _expire(now)
        count, mine, total = _held(stream.owner)
        size = len(stream.data)
        if correlation is None:
            if count >= b.max_streams_per_identity:
                raise ctx.limit_exceeded(f"this client already has {count} open streams "
                                          "(server.max_streams_per_identity); finish some first")
            if len(_streams) >= b.max_streams:
                raise ctx.limit_exceeded("too many open streams on this server; retry later")
            correlation = secrets.token_bytes(16)
        if mine + size > b.max_stream_bytes_per_identity:
            raise ctx.limit_exceeded("this client's open streams buffer too much data "
                                      "(server.max_stream_bytes_per_identity); finish some first")
        if total + size > b.max_stream_bytes_total:
            raise ctx.limit_exceeded("open streams buffer too much data on this server; retry later")
        _streams[correlation] = stream
    return correlation


def start(ctx: RequestContext, payload: Item, operation: int) -> tuple[Part, Stream | None]:
    """This request's place in a stream, and the stream it continues (None for a first part)."""
    p = part(payload)
    return p, take(ctx, p.correlation, operation) if p.correlation is not None else None


def new(ctx: RequestContext, operation: int, uid: str | None, **state: object) -> Stream:
    return Stream(owner=ctx.identity.name, operation=operation, uid=uid, state=state,
                  limit=ctx.services.budgets.max_stream_bytes)


def finish(ctx: RequestContext, p: Part, stream: Stream) -> list[Item]:
    """The Correlation Value to answer with while the stream goes on; nothing once it is final."""
    if p.final:
        return []
    return [ttlv.bytes_(T.CORRELATION_VALUE, save(ctx, stream, p.correlation))]
