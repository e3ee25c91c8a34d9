"""Multi-part (streaming) cryptographic operations: Init Indicator / Correlation Value / Final
Indicator (KMIP 1.3+).

A stream keeps the caller's accumulated *input* and how much output it has already been given,
never key material: every part re-opens the key through the Key HSM and re-checks authorisation
and state, so revoking a key stops its streams. Between parts the stream lives in the database
(store/streams.py), sealed under a key derived from its Correlation Value (stream_seal.py), so a
client may send the next part on a new connection, to any worker or node sharing the database; a
server restart keeps open streams until they expire. Streams are bound to the identity that opened
them, end after server.stream_idle_timeout without a part, and are bounded in number and size: per
stream, per identity (so that one client filling the table cannot lock every other client out) and
in all (server.max_stream* settings, operations.context.Budgets), across every worker and node.

A part that fails leaves its stream as it was before the part (nothing of it is kept); of two
parts of one stream sent in parallel, one is refused. A one-part request never touches the table.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from kmip.core.enums import ResultReason
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.errors import KmipError
from ..protocol.ttlv import Item
from ..store import streams as rows
from ..store.store import ConcurrentUpdate
from . import stream_seal
from .context import RequestContext

MAX_CHUNKS = 32  # pieces of input a stream is kept in before they are merged into one


@dataclass
class Stream:
    owner: str
    operation: int
    uid: str | None
    state: dict[str, object]  # operation-specific: parameters, IV, AAD...
    data: bytearray = field(default_factory=bytearray)
    sent: int = 0  # output bytes already returned
    limit: int = 0  # bytes this stream may buffer (server.max_stream_bytes when it was opened)
    version: int = 0  # of its row; 0 until first stored
    correlation: bytes | None = None
    stored: int = 0  # bytes of ``data`` already in the database (the rest is this part's)
    chunks: int = 0  # chunks they are stored in


@dataclass
class Part:
    """Where one request stands in a stream."""

    init: bool
    final: bool
    correlation: bytes | None

    @property
    def streamed(self) -> bool:
        """Part of a multi-part operation (not a one-part request)."""
        return self.init or self.correlation is not None


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
    # Unknown, expired, another identity's or another operation's: one answer for all, so that a
    # Correlation Value reveals nothing about streams the caller does not own.
    reason = ResultReason.INVALID_CORRELATION_VALUE if ctx.v2 else ResultReason.INVALID_FIELD
    return KmipError(reason, "unknown or expired Correlation Value")


def _now_ms() -> int:
    return int(time.time() * 1000)


def take(ctx: RequestContext, correlation: bytes, operation: int) -> Stream:
    """The stream this Correlation Value continues, as its last part left it."""
    if len(correlation) != stream_seal.CORRELATION_BYTES:
        raise _invalid(ctx)
    sid, key = stream_seal.derive(correlation)
    row = rows.load(ctx.services.store, sid, _now_ms())
    if row is None or row.owner != ctx.identity.name or row.operation != operation:
        raise _invalid(ctx)
    try:
        header = stream_seal.unseal(key, sid, row.owner, row.operation, row.nonce, row.sealed)
        data = bytearray()
        for chunk in row.chunks:
            data += stream_seal.unseal_chunk(key, sid, chunk.seq, chunk.nonce, chunk.sealed)
    except InvalidTag:  # altered in the database: not a stream this server wrote
        raise _invalid(ctx) from None
    if len(data) != header["size"] or len(row.chunks) != header["chunks"]:
        raise _invalid(ctx)  # a chunk missing (removed from the database, or merged meanwhile)
    return Stream(owner=row.owner, operation=row.operation, uid=header["uid"], state=header["state"],
                  data=data, sent=header["sent"], limit=header["limit"], version=row.version,
                  correlation=correlation, stored=len(data), chunks=len(row.chunks))


def feed(ctx: RequestContext, stream: Stream, chunk: bytes) -> None:
    if len(stream.data) + len(chunk) > stream.limit:
        raise ctx.limit_exceeded(f"a stream may carry at most {stream.limit} bytes (server.max_stream_bytes)")
    stream.data += chunk


_QUOTA_MESSAGES = {
    "streams_per_owner": "this client already has {n} open streams (server.max_streams_per_identity); "
                         "finish some first",
    "streams": "too many open streams on this server; retry later",
    "bytes_per_owner": "this client's open streams buffer too much data (server.max_stream_bytes_per_identity); "
                       "finish some first",
    "bytes_total": "open streams buffer too much data on this server; retry later",
}


def save(ctx: RequestContext, stream: Stream) -> bytes:
    """Stores the stream for its next part; returns its Correlation Value (new for a first part).
    Refused when it would take the caller or the server past a budget: the stream then stays as
    its previous part left it (a first part opens nothing)."""
    b = ctx.services.budgets
    correlation = stream.correlation or secrets.token_bytes(stream_seal.CORRELATION_BYTES)
    sid, key = stream_seal.derive(correlation)
    seq = stream.version + 1
    # This part's input is one more chunk; past MAX_CHUNKS all of them are merged into one, so a
    # part writes what it brought and, now and then, the whole input once (not at every part).
    compact = stream.chunks + 1 > MAX_CHUNKS
    piece = bytes(stream.data) if compact else bytes(stream.data[stream.stored :])
    chunk = rows.Chunk(seq, *stream_seal.seal_chunk(key, sid, seq, piece)) if piece else None
    chunks = (1 if piece else 0) if compact else stream.chunks + (1 if piece else 0)
    header = {"uid": stream.uid, "state": stream.state, "sent": stream.sent, "limit": stream.limit,
              "size": len(stream.data), "chunks": chunks}
    nonce, sealed = stream_seal.seal(key, sid, stream.owner, stream.operation, header)
    now = _now_ms()
    row = rows.StreamRow(id=sid, owner=stream.owner, operation=stream.operation, size=len(stream.data),
                         expires_ms=now + int(b.stream_idle_timeout * 1000), version=stream.version,
                         nonce=nonce, sealed=sealed)
    quotas = rows.Quotas(streams=b.max_streams, streams_per_owner=b.max_streams_per_identity,
                         bytes_per_owner=b.max_stream_bytes_per_identity, bytes_total=b.max_stream_bytes_total)
    try:
        stream.version = rows.put(ctx.services.store, row, chunk, compact, quotas, now)
    except rows.QuotaExceeded as exc:
        raise ctx.limit_exceeded(_QUOTA_MESSAGES[exc.which].format(n=b.max_streams_per_identity)) from None
    except ConcurrentUpdate:
        raise _invalid(ctx) from None
    stream.correlation, stream.stored, stream.chunks = correlation, len(stream.data), chunks
    return correlation


def start(ctx: RequestContext, payload: Item, operation: int) -> tuple[Part, Stream | None]:
    """This request's place in a stream, and the stream it continues (None for a first part)."""
    if ctx.version < (1, 3) and any(
        payload.get(t.value) is not None for t in (T.INIT_INDICATOR, T.FINAL_INDICATOR, T.CORRELATION_VALUE)
    ):  # the fields exist from 1.3: an older request carrying them is not a stream, it is malformed
        raise KmipError(ResultReason.INVALID_FIELD, "multi-part operations (Init Indicator, Correlation Value, "
                        "Final Indicator) are KMIP 1.3 and later")
    p = part(payload)
    return p, take(ctx, p.correlation, operation) if p.correlation is not None else None


def new(ctx: RequestContext, operation: int, uid: str | None, **state: object) -> Stream:
    return Stream(owner=ctx.identity.name, operation=operation, uid=uid, state=state,
                  limit=ctx.services.budgets.max_stream_bytes)


def finish(ctx: RequestContext, p: Part, stream: Stream) -> list[Item]:
    """The Correlation Value to answer with while the stream goes on; nothing once it is final
    (the final part ends the stream: of two parallel final parts, one is refused)."""
    if not p.final:
        return [ttlv.bytes_(T.CORRELATION_VALUE, save(ctx, stream))]
    if stream.version:
        sid, _ = stream_seal.derive(stream.correlation)  # type: ignore[arg-type]
        try:
            rows.drop(ctx.services.store, sid, stream.version, _now_ms())
        except ConcurrentUpdate:
            raise _invalid(ctx) from None
    return []
