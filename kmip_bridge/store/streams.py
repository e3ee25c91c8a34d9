"""The ``streams`` table: open multi-part operations, shared by every worker and node on the
database (what a row holds, and why it is safe to store, is in operations/streams.py).

A part reads its stream without a lock and writes it back only if nobody else did meanwhile
(``version``): two parts of one stream sent in parallel cannot both be kept. Every write runs in
one transaction serialized with all other stream writes (Store.serialize: a PostgreSQL advisory
lock, SQLite's one write lock), so the quotas it checks — per stream, per identity, in all — hold
across workers and nodes: no two parallel requests can each see room for one more.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from .models import streams
from .store import ConcurrentUpdate, Store, StoreError

_LOCK = "kmip-bridge streams"


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


def load(store: Store, sid: str, now_ms: int) -> StreamRow | None:
    """The stream ``sid`` unless it is unknown or has expired."""
    query = sa.select(streams).where(streams.c.id == sid, streams.c.expires_ms >= now_ms)
    with store.connection() as conn:
        rec = conn.execute(query).first()
    if rec is None:
        return None
    row = StreamRow(**rec._mapping)
    row.nonce, row.sealed = bytes(row.nonce), bytes(row.sealed)  # PostgreSQL: memoryview
    return row


def put(store: Store, row: StreamRow, quotas: Quotas, now_ms: int) -> int:
    """Stores ``row``: a new stream when ``row.version`` is 0, else the next state of a stream
    still at ``row.version`` (ConcurrentUpdate otherwise: another part won, or it expired).
    Returns the stored version. Expired streams are deleted first, by whichever request comes."""
    with store.unit_of_work():
        store.serialize(_LOCK)
        with store.connection() as conn:
            conn.execute(streams.delete().where(streams.c.expires_ms < now_ms))
            mine = streams.c.owner == row.owner
            others = sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(streams.c.size), 0),
                sa.func.coalesce(sa.func.sum(sa.case((mine, 1), else_=0)), 0),
                sa.func.coalesce(sa.func.sum(sa.case((mine, streams.c.size), else_=0)), 0),
            ).where(streams.c.id != row.id)
            count, total, owned, owned_bytes = conn.execute(others).one()
            if row.version == 0 and owned + 1 > quotas.streams_per_owner:
                raise QuotaExceeded("streams_per_owner")
            if row.version == 0 and count + 1 > quotas.streams:
                raise QuotaExceeded("streams")
            if owned_bytes + row.size > quotas.bytes_per_owner:
                raise QuotaExceeded("bytes_per_owner")
            if total + row.size > quotas.bytes_total:
                raise QuotaExceeded("bytes_total")
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
                    raise ConcurrentUpdate("the stream was continued by another request or has expired")
    return row.version + 1


def drop(store: Store, sid: str, version: int, now_ms: int) -> None:
    """Ends a stream at its final part: ConcurrentUpdate if it is no longer at ``version`` (a
    parallel part won, or it expired), so that only one part ever finishes a stream."""
    with store.unit_of_work(), store.connection() as conn:
        done = conn.execute(
            streams.delete().where(streams.c.id == sid, streams.c.version == version, streams.c.expires_ms >= now_ms)
        )
        conn.execute(streams.delete().where(streams.c.expires_ms < now_ms))
        if done.rowcount != 1:
            raise ConcurrentUpdate("the stream was continued by another request or has expired")


def count(store: Store) -> int:
    """Open (unexpired or not yet purged) streams: for operators and tests."""
    with store.connection() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(streams)).scalar_one())
