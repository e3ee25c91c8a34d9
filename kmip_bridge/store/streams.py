"""The ``streams`` and ``stream_chunks`` tables: open multi-part operations, shared by every
worker and node on the database (what a row holds, and why it is safe to store, is in
operations/streams.py and stream_seal.py).

A stream is a small header row (its sealed state) plus its buffered input in chunks: a part adds
one chunk, so it writes what it brought, not the whole stream again; every so often the caller
merges the chunks into one (``compact``) so that a read stays a few rows.

A part reads its stream without a lock and writes it back only if nobody else did meanwhile
(``version``): two parts of one stream sent in parallel cannot both be kept. Every write runs in
a transaction serialized with all other stream writes (a PostgreSQL advisory lock, SQLite's one
write lock), so the quotas it checks — per stream, per identity, in all — hold across workers and
nodes: no two parallel requests can each see room for one more. Stream writes share commits
with concurrent ones (Store.grouped_streams): that serialization then costs one durable commit
per group, not per part. A refused write changes nothing and raises only once its group has committed: it does
not fail the group's transaction, which would make every other write of it retry alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .models import stream_chunks, streams
from .store import ConcurrentUpdate, Store, StoreError

# pg_advisory_xact_lock key of the stream tables (any fixed 64-bit number; "streams" in ASCII).
_PG_LOCK = int.from_bytes(b"streams", "big")
_GONE = "gone"  # a continued stream is no longer at the version its part read


@dataclass
class Chunk:
    seq: int  # the stream version that wrote it
    nonce: bytes
    sealed: bytes


@dataclass
class StreamRow:
    id: str
    owner: str
    operation: int
    size: int
    expires_ms: int
    version: int
    nonce: bytes
    sealed: bytes
    chunks: list[Chunk] = field(default_factory=list)  # by seq


@dataclass(frozen=True)
class Quotas:
    streams: int  # open streams in all
    streams_per_owner: int
    bytes_per_owner: int
    bytes_total: int


class QuotaExceeded(StoreError):
    """A stream write would take its owner or the whole table past a quota; ``which`` names it."""

    def __init__(self, which: str) -> None:
        super().__init__(which)
        self.which = which


_LOAD = (
    sa.select(streams, stream_chunks.c.seq, stream_chunks.c.nonce.label("chunk_nonce"),
              stream_chunks.c.sealed.label("chunk_sealed"))
    .select_from(streams.outerjoin(stream_chunks, stream_chunks.c.id == streams.c.id))
    .where(streams.c.id == sa.bindparam("sid"), streams.c.expires_ms >= sa.bindparam("now"))
    .order_by(stream_chunks.c.seq)
)


def load(store: Store, sid: str, now_ms: int) -> StreamRow | None:
    """The stream ``sid`` with its chunks (one statement: one consistent state), unless it is
    unknown or has expired."""
    with store.connection() as conn:
        recs = conn.execute(_LOAD, {"sid": sid, "now": now_ms}).all()
    if not recs:
        return None
    head = recs[0]
    row = StreamRow(id=head.id, owner=head.owner, operation=head.operation, size=head.size,
                    expires_ms=head.expires_ms, version=head.version, nonce=bytes(head.nonce),
                    sealed=bytes(head.sealed))
    row.chunks = [Chunk(r.seq, bytes(r.chunk_nonce), bytes(r.chunk_sealed)) for r in recs if r.seq is not None]
    return row


def _serialize(conn: Connection) -> None:
    """Waits for every other stream write of every node (until this transaction ends)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK})
    # SQLite: the transaction already holds the database's one write lock (writes.write_lock).


def put(store: Store, row: StreamRow, chunk: Chunk | None, compact: bool, quotas: Quotas, now_ms: int) -> int:
    """Stores ``row`` (header) and ``chunk`` (this part's input; with ``compact``, all of it,
    replacing the stream's chunks): a new stream when ``row.version`` is 0, else the next state
    of a stream still at ``row.version`` (ConcurrentUpdate otherwise: another part won, or it
    expired). Returns the stored version. Expired streams are deleted first, by whoever comes."""

    def write(conn: Connection) -> int | str:  # the new version, or why nothing was written
        _serialize(conn)
        conn.execute(streams.delete().where(streams.c.expires_ms < now_ms))  # their chunks: ON DELETE CASCADE
        mine = streams.c.owner == row.owner
        others = sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(streams.c.size), 0),
            sa.func.coalesce(sa.func.sum(sa.case((mine, 1), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((mine, streams.c.size), else_=0)), 0),
        ).where(streams.c.id != row.id)
        count, total, owned, owned_bytes = conn.execute(others).one()
        if row.version == 0 and owned + 1 > quotas.streams_per_owner:
            return "streams_per_owner"
        if row.version == 0 and count + 1 > quotas.streams:
            return "streams"
        if owned_bytes + row.size > quotas.bytes_per_owner:
            return "bytes_per_owner"
        if total + row.size > quotas.bytes_total:
            return "bytes_total"
        values = {"size": row.size, "expires_ms": row.expires_ms, "version": row.version + 1,
                  "nonce": row.nonce, "sealed": row.sealed}
        if row.version == 0:
            conn.execute(streams.insert().values(id=row.id, owner=row.owner, operation=row.operation, **values))
        else:
            done = conn.execute(
                streams.update()
                .where(streams.c.id == row.id, streams.c.version == row.version, streams.c.expires_ms >= now_ms)
                .values(**values)
            )
            if done.rowcount != 1:
                return _GONE
            if compact:
                conn.execute(stream_chunks.delete().where(stream_chunks.c.id == row.id))
        if chunk is not None:
            conn.execute(stream_chunks.insert().values(id=row.id, seq=chunk.seq, nonce=chunk.nonce,
                                                       sealed=chunk.sealed))
        return row.version + 1

    outcome = store.grouped_streams(write)
    if outcome == _GONE:
        raise ConcurrentUpdate("the stream was continued by another request or has expired")
    if isinstance(outcome, str):
        raise QuotaExceeded(outcome)
    return outcome


def drop(store: Store, sid: str, version: int, now_ms: int) -> None:
    """Ends a stream at its final part: ConcurrentUpdate if it is no longer at ``version`` (a
    parallel part won, or it expired), so that only one part ever finishes a stream."""

    def write(conn: Connection) -> int:
        return conn.execute(
            streams.delete().where(streams.c.id == sid, streams.c.version == version, streams.c.expires_ms >= now_ms)
        ).rowcount

    if store.grouped_streams(write) != 1:
        raise ConcurrentUpdate("the stream was continued by another request or has expired")
