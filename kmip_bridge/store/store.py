"""Queries over the object store. Every state change is one transaction."""

from __future__ import annotations

import functools
import hashlib
import io
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from . import hot, states
from .models import attributes, objects
from .writes import GroupCommit, write_lock


class StoreError(Exception):
    """Base for store failures; messages are safe to show (no values)."""


class StoreUnavailable(StoreError):
    """The database could not be reached or answered with an error."""

    # The connection was found dead (a database restart): the same work may succeed on a new one.
    connection_lost: bool = False
    # The database failed, not this statement (busy, unreachable): other writes would fail too.
    database_wide: bool = False


class ConcurrentUpdate(StoreError):
    """Another request changed the object between our read and our write."""


@dataclass
class AttrRow:
    name: str
    value: bytes
    position: int = 0
    search: str | None = None


@dataclass
class ObjectRow:
    uid: str
    object_type: int
    state: int
    owner: str
    created_at: int
    policy: str = "default"
    fresh: bool = True
    row_version: int = 1
    kek_label: str | None = None
    kek_kind: str | None = None
    nonce: bytes | None = None
    ciphertext: bytes | None = None
    wrapped_dek: bytes | None = None
    wrap_nonce: bytes | None = None
    # The format KeyHsm.seal writes today (keyhsm/envelope.py CURRENT_FORMAT); rows read back
    # from the database always carry their own.
    envelope_format: int = 2

    @property
    def has_material(self) -> bool:
        return self.ciphertext is not None


@dataclass(frozen=True)
class LocatedRow:
    uid: str
    owner: str
    object_type: int
    policy: str


# One hot write as data: (sql, parameters, executemany?), see store/hot.py and store/writer.py.
Statement = tuple[str, Any, bool]

_OBJECT_COLUMNS = [c.name for c in objects.columns]
# The hot path reads and writes object rows as tuples in ObjectRow's field order.
_ROW_FIELDS = [f.name for f in fields(ObjectRow)]
assert sorted(_ROW_FIELDS) == sorted(_OBJECT_COLUMNS), "ObjectRow and the objects table disagree"
_FRESH = _ROW_FIELDS.index("fresh")
_STATE = _ROW_FIELDS.index("state")
_BLOBS = [_ROW_FIELDS.index(c) for c in ("nonce", "ciphertext", "wrapped_dek", "wrap_nonce")]


def normalise_url(url: str) -> str:
    """psycopg2 is the driver we ship; SQLAlchemy 2.1 would pick psycopg 3 for a bare URL."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


@dataclass(frozen=True)
class Timeouts:
    """How long a request may wait on the database (seconds; database.* in server.yaml)."""

    connect: float = 5.0  # PostgreSQL: establishing a connection
    statement: float = 0.0  # PostgreSQL: one statement, cancelled by the server; 0: no limit
    pool: float = 10.0  # a free pooled connection
    busy: float = 30.0  # SQLite: the busy handler retries this long while another writer holds the lock


def make_engine(url: str, pool_size: int = 8, timeouts: Timeouts = Timeouts()) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=timeouts.pool,
            connect_args={"check_same_thread": False, "timeout": timeouts.busy},
        )
        busy_ms = int(timeouts.busy * 1000)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            # WAL lets readers run beside the writer; FULL makes an acknowledged write durable.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.close()

        return engine
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No pre-ping: it cost a round trip per checkout (a quarter of the request time). A dead
        # connection fails its statement instead; SQLAlchemy then invalidates every pooled
        # connection opened before it, reads retry once (Store._read) and grouped writes retry
        # alone (writes.GroupCommit), so a database restart costs at most one failed request.
        pool_pre_ping=False,
        pool_timeout=timeouts.pool,
        connect_args=_pg_args(timeouts) if url.startswith("postgresql+psycopg2") else {},
    )


def _pg_args(timeouts: Timeouts) -> dict[str, object]:
    args: dict[str, object] = {
        "connect_timeout": max(1, round(timeouts.connect)),  # libpq takes whole seconds
        # A server that vanished without closing the socket (host down, partition) would leave a
        # statement waiting forever: keepalives notice an idle peer, tcp_user_timeout one that
        # stopped acknowledging what we sent.
        "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
    }
    if timeouts.statement > 0:
        ms = int(timeouts.statement * 1000)
        args["options"] = f"-c statement_timeout={ms}"
        args["tcp_user_timeout"] = ms
    return args


class Store:
    def __init__(self, url: str, pool_size: int = 8, timeouts: Timeouts = Timeouts(),
                 writer: str | None = None) -> None:
        """``writer``: the Unix socket of the database writer process (store/writer.py); hot
        writes go there while it answers, and are committed in this process otherwise."""
        self.url = url
        self.engine = make_engine(url, pool_size, timeouts)
        self._write_lock = write_lock(url)
        # One shared transaction at a time per worker, on PostgreSQL too: with 4 at once a commit
        # carried 1.3 writes, with 1 it carried 3.6, for the same throughput, a lower p99 (24-31
        # against 31-38 ms) and less CPU spent on commits (docs/performance.md).
        sqlite = self.engine.dialect.name == "sqlite"
        self._group = GroupCommit(self._begin_write)
        self._stream_group = GroupCommit(self._begin_write)
        self._reader = self.engine.connect if sqlite else self._autocommit_reader
        # The request path's SQL, run on the driver cursor (public for bench --scale's EXPLAIN).
        self.hot = hot.HotStatements(self.engine.dialect, _ROW_FIELDS)
        self._writer = None
        if writer is not None:
            from .writer import WriterClient

            # The writer's own bounds plus a margin: a write it took is answered within them.
            wait = timeouts.pool + max(timeouts.busy, timeouts.statement) + 5.0
            self._writer = WriterClient(writer, wait)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self.engine.dispose()

    # -- writes ---------------------------------------------------------------------------------
    def insert_object(self, row: ObjectRow, attrs: Sequence[AttrRow]) -> None:
        values = tuple(getattr(row, name) for name in _ROW_FIELDS)
        statements = [(self.hot.insert_object, values, False)]
        statements += self.hot.insert_attributes([(row.uid, a.name, a.position, a.value, a.search) for a in attrs])
        self.write_statements(statements)

    def write_statements(self, statements: Sequence[Statement]) -> None:
        """A hot write: inside a unit of work, part of it; otherwise committed with concurrent
        writes, by the writer process when there is one, else in this process."""
        conn = _TX.get()
        if conn is not None:
            _run_statements(conn, statements)
        elif self._writer is None or not self._writer.write(statements):
            self._group.run(lambda conn: _run_statements(conn, statements))

    def write_together(self, writes: Sequence[Sequence[Statement]]) -> list[BaseException | None]:
        """Hot writes gathered by the caller (the writer process), in one transaction; each
        write's error, or None. A failed group is retried write by write (writes.GroupCommit)."""
        outcomes = self._group.run_together([functools.partial(_run_statements, statements=w) for w in writes])
        return [error for _, error in outcomes]

    def insert_objects(self, items: Sequence[tuple[ObjectRow, Sequence[AttrRow]]]) -> None:
        """Many new objects in one transaction and two statements (bulk loads: bench --scale)."""
        with self._begin() as conn:
            if conn.dialect.name == "sqlite":
                # Tuples straight to sqlite3's executemany: SQLAlchemy's per-row parameter
                # processing cost more than SQLite itself (bench --scale loads 10^6 objects).
                # A bigger page cache keeps the growing indexes' pages in memory between batches.
                conn.exec_driver_sql("PRAGMA cache_size=-262144")
                objs = [tuple(getattr(row, c) for c in _OBJECT_COLUMNS) for row, _ in items]
                conn.exec_driver_sql(_BULK_OBJECTS, objs)
                rows = [(row.uid, a.name, a.position, a.value, a.search) for row, attrs in items for a in attrs]
                if rows:
                    conn.exec_driver_sql(_BULK_ATTRIBUTES, rows)
                return
            # PostgreSQL: COPY on the driver cursor. SQLAlchemy's executemany spent more of the
            # loader's time on per-row parameter processing than PostgreSQL spent inserting.
            cursor = conn.connection.cursor()
            try:
                cursor.copy_expert(_COPY_OBJECTS, _copy_text(
                    tuple(getattr(row, c) for c in _OBJECT_COLUMNS) for row, _ in items))
                cursor.copy_expert(_COPY_ATTRIBUTES, _copy_text(
                    (row.uid, a.name, a.position, a.value, a.search) for row, attrs in items for a in attrs))
            except BaseException as exc:  # noqa: BLE001 - as hot.execute: SQLAlchemy maps the error
                conn._handle_dbapi_exception(exc, "COPY", (), cursor, None)
            finally:
                cursor.close()

    def update_object(
        self,
        uid: str,
        expected_version: int,
        *,
        state: int | None = None,
        replace: Iterable[AttrRow] = (),
        add: Iterable[AttrRow] = (),
        delete: Iterable[tuple[str, int | None]] = (),
        clear_material: bool = False,
    ) -> int:
        """Applies a change in one transaction if the row is still at ``expected_version``.

        ``replace`` removes every value of each named attribute and writes the given ones;
        ``delete`` removes (name, position) or all values of a name (position None).
        Returns the new row version.
        """
        changes: dict[str, object] = {"row_version": expected_version + 1}
        if state is not None:
            changes["state"] = state
        if clear_material:
            for col in ("nonce", "ciphertext", "wrapped_dek", "wrap_nonce"):
                changes[col] = None
        replace = list(replace)
        with self._begin() as conn:
            result = conn.execute(
                objects.update()
                .where(objects.c.uid == uid, objects.c.row_version == expected_version)
                .values(**changes)
            )
            if result.rowcount != 1:
                raise ConcurrentUpdate("the object changed while this request ran; retry")
            names = {a.name for a in replace}
            if names:
                conn.execute(
                    attributes.delete().where(
                        attributes.c.uid == uid, attributes.c.name.in_(names)
                    )
                )
            for name, position in delete:
                cond = [attributes.c.uid == uid, attributes.c.name == name]
                if position is not None:
                    cond.append(attributes.c.position == position)
                conn.execute(attributes.delete().where(*cond))
            rows = [_attr_values(uid, a) for a in [*replace, *add]]
            if rows:
                conn.execute(attributes.insert(), rows)
        return expected_version + 1

    def replace_sealed(self, uid: str, expected_version: int, old_label: str, sealed: dict[str, object]) -> bool:
        """Swaps the sealed envelope of a row still at ``expected_version`` under ``old_label``
        (KEK rewrap); False if the row changed meanwhile. row_version is checked but not bumped:
        nothing a client sees changes, and a bump would fail concurrent client updates for nothing
        (every other writer of these columns — Destroy — bumps it, so the check orders them)."""
        with self._begin() as conn:
            result = conn.execute(
                objects.update()
                .where(
                    objects.c.uid == uid,
                    objects.c.row_version == expected_version,
                    objects.c.kek_label == old_label,
                )
                .values(**sealed)
            )
        return result.rowcount == 1

    def sealed_under(self, labels: Sequence[str], after_uid: str = "", limit: int = 500) -> list[ObjectRow]:
        """Rows with material sealed under one of ``labels``, by uid after ``after_uid``."""
        if not labels:
            return []
        query = (
            sa.select(objects)
            # Destroyed objects keep their KEK label but have nothing left to rewrap.
            .where(objects.c.kek_label.in_(list(labels)), objects.c.ciphertext.is_not(None),
                   objects.c.uid > after_uid)
            .order_by(objects.c.uid)
            .limit(limit)
        )
        with self._connect() as conn:
            return [ObjectRow(**rec._mapping) for rec in conn.execute(query)]

    def mark_served(self, uid: str) -> None:
        """Clears Fresh, durably, before the caller answers. Not versioned: it races with nothing
        (only ever goes true -> false). Grouped with concurrent writes (writes.GroupCommit)."""
        self.write_statements([(self.hot.mark_served, (False, uid, True), False)])

    # -- reads ----------------------------------------------------------------------------------
    def load_object(self, uid: str, for_update: bool = False) -> ObjectRow | None:
        """``for_update`` inside a unit of work: the row stays locked until it ends, so a
        read-modify-write of one object waits for (rather than races and loses to) another
        node's (PostgreSQL row lock; SQLite's unit of work already holds its one write lock)."""
        sql = self.hot.load_object_for_update if for_update and _TX.get() is not None else self.hot.load_object
        rec = self._read(lambda conn: hot.fetch_one(conn, sql, (uid,)))
        if rec is None:
            return None
        *values, activation, deactivation = rec
        values[_STATE] = states.effective_state(values[_STATE], activation, deactivation, int(time.time()))
        values[_FRESH] = bool(values[_FRESH])  # SQLite stores 1/0
        if self.hot.blobs_as_memoryview:
            for i in _BLOBS:
                if values[i] is not None:
                    values[i] = bytes(values[i])
        return ObjectRow(*values)

    def load_attributes(self, uid: str, names: Sequence[str] | None = None) -> list[AttrRow]:
        if names:
            sql, params = self.hot.load_named_attributes(len(names)), (uid, *names)
        else:
            sql, params = self.hot.load_attributes, (uid,)
        rows = self._read(lambda conn: hot.fetch_all(conn, sql, params))
        return [AttrRow(name, bytes(value), position, search) for name, value, position, search in rows]

    def locate(
        self,
        *,
        owner: str | None,
        other_types: frozenset[int] | None = frozenset(),
        object_type: int | None = None,
        state: int | None = None,
        attribute_filters: Sequence[tuple[str, str | tuple[int, int]]] = (),
        offset: int = 0,
        limit: int | None = None,
        exclude_states: Sequence[int] = (),
        uid: str | None = None,
        policy: str | None = None,
        bit_filters: Sequence[tuple[str, int]] = (),
        fresh: bool | None = None,
    ) -> list[LocatedRow]:
        """Objects matching every criterion, newest first (none in ``exclude_states``).
        ``bit_filters``: (name, mask) — an integer attribute with at least those bits set.
        ``fresh``: only objects whose Fresh flag (a column) is that.

        Scope: objects of ``owner`` plus objects of any owner whose type is in ``other_types``
        (``owner`` None or ``other_types`` None: every owner).
        """
        query = _locate_query(
            sa.select(objects.c.uid, objects.c.owner, objects.c.object_type, objects.c.policy),
            owner=owner, other_types=other_types, object_type=object_type, state=state,
            attribute_filters=attribute_filters, exclude_states=exclude_states, uid=uid, policy=policy,
            bit_filters=bit_filters, fresh=fresh,
        )
        query = query.order_by(objects.c.created_at.desc(), objects.c.uid).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with self._connect() as conn:
            return [LocatedRow(r.uid, r.owner, r.object_type, r.policy) for r in conn.execute(query)]

    def count_located(self, **criteria: Any) -> int:
        """How many objects ``locate`` with these criteria (no offset or limit) would return,
        counted by the database: a paging Locate's Located Items without loading every match."""
        query = _locate_query(sa.select(sa.func.count()).select_from(objects), **criteria)
        with self._connect() as conn:
            return int(conn.execute(query).scalar_one())

    def count_by_kek(self) -> dict[str, int]:
        """Objects with material (not destroyed), by the KEK label that seals them."""
        query = (
            sa.select(objects.c.kek_label, sa.func.count())
            .where(objects.c.kek_label.is_not(None), objects.c.ciphertext.is_not(None))  # not destroyed
            .group_by(objects.c.kek_label)
        )
        with self._connect() as conn:
            return {label: n for label, n in conn.execute(query)}

    def ping(self) -> None:
        with self._connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    @property
    def single_writer(self) -> bool:
        """Whether a write transaction excludes every other writer of the database (SQLite's
        one write lock, shared by all workers) rather than only the rows it writes."""
        return self.engine.dialect.name == "sqlite"

    def in_unit_of_work(self) -> bool:
        """Whether this thread runs inside ``unit_of_work`` (a retry must then restart the
        whole unit, not one statement of it)."""
        return _TX.get() is not None

    def serialize(self, key: str) -> None:
        """Inside ``unit_of_work``: units that serialize on the same ``key`` run one after the
        other, on every node sharing the database, until the holder commits — for check-then-write
        rules that no single row's version guards (a Name unique across objects)."""
        conn = _TX.get()
        if conn is None:
            raise RuntimeError("Store.serialize needs a unit_of_work")
        with self._begin() as conn:
            if conn.dialect.name == "postgresql":
                digest = hashlib.sha256(key.encode()).digest()
                lock_id = int.from_bytes(digest[:8], "big", signed=True)
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
            else:
                # SQLite has one writer at a time: a write (of nothing) takes that lock now, so the
                # unit's reads after it see every committed change and no other writer runs.
                conn.execute(objects.update().where(sa.false()).values(row_version=objects.c.row_version))

    @contextmanager
    def unit_of_work(self) -> Iterator[None]:
        """Runs every store call inside the block in one transaction: committed if the block
        completes, rolled back if it raises (KMIP's batch 'Undo' continuation option)."""
        if _TX.get() is not None:
            yield
            return
        after: list[Callable[[], None]] = []
        with self._begin() as conn:
            token, after_token = _TX.set(conn), _AFTER.set(after)
            try:
                yield
            finally:
                _TX.reset(token)
                _AFTER.reset(after_token)
        for action in after:  # committed: the changes they follow are durable
            action()

    def after_commit(self, action: Callable[[], None]) -> None:
        """Runs ``action`` once the current unit of work has committed (now, outside one: every
        store call then commits on its own); never if it rolls back. For side effects outside the
        database that must follow a durable change (destroying a per-object key on the token)."""
        pending = _AFTER.get()
        if _TX.get() is None or pending is None:
            action()
        else:
            pending.append(action)

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Runs the reads inside the block on one pooled connection (one checkout, not one per
        read). Writes inside it still commit on their own."""
        if _TX.get() is not None or _READ.get() is not None:
            yield
            return
        pinned = _Pinned(self._reader)
        token = _READ.set(pinned)
        try:
            yield
        finally:
            _READ.reset(token)
            pinned.drop()

    def connection(self):  # type: ignore[no-untyped-def]
        """A connection for a query module of its own (store/streams.py): the unit of work's
        inside one, else a pooled reader; driver errors become StoreUnavailable."""
        return self._connect()

    def grouped_streams(self, write: Callable[[Connection], _R]) -> _R:
        """Runs a stream write (store/streams.py) in the current unit of work, else in a
        transaction shared with concurrent stream writes (group commit); returns once committed.
        Not shared with object writes: stream writes take a lock of their own, and mixing it with
        object row locks in one transaction could make two workers' groups deadlock."""
        conn = _TX.get()
        return write(conn) if conn is not None else self._stream_group.run(write)

    # -- plumbing -------------------------------------------------------------------------------
    def _connect(self):  # type: ignore[no-untyped-def]
        conn, pinned = _TX.get(), _READ.get()
        if conn is not None:
            return nullcontext(conn)
        if pinned is not None:
            return _Guard(lambda: nullcontext(pinned.get()))
        return _Guard(self._reader)

    def _begin(self):  # type: ignore[no-untyped-def]
        conn = _TX.get()
        return nullcontext(conn) if conn is not None else self._begin_write()

    @contextmanager
    def _autocommit_reader(self) -> Iterator[Connection]:
        """A PostgreSQL connection for reads outside a transaction, in driver autocommit: else
        psycopg2 sends BEGIN before the first SELECT and a ROLLBACK at the end, two round trips
        per checkout for nothing (each statement sees committed data either way). Set on the
        driver, not through SQLAlchemy's isolation_level option, whose reset at check-in costs a
        round trip of its own (SET default_transaction_isolation). pysqlite never opens a
        transaction for a SELECT, so SQLite reads need none of this."""
        with self.engine.connect() as conn:
            driver = conn.connection.driver_connection
            driver.autocommit = True  # type: ignore[union-attr]
            try:
                yield conn
            finally:
                if not driver.closed:  # type: ignore[union-attr]
                    driver.autocommit = False  # type: ignore[union-attr]

    @contextmanager
    def _begin_write(self) -> Iterator[Connection]:
        """A new write transaction, behind the database's write lock (writes.write_lock). The
        pool checkout and check-in stay outside the lock: on SQLite every other writer of every
        worker waits while it is held."""
        with _Guard(self.engine.connect) as conn, self._write_lock(), _Guard(conn.begin):
            yield conn

    def _read(self, query: Callable[[Connection], _R]) -> _R:
        """Runs a read; on a pooled connection the database dropped (a restart), once more on a
        new one: reads are safe to repeat, and without pool pre-ping this is where it shows."""
        tx, pinned = _TX.get(), _READ.get()
        if tx is not None:  # a transaction cannot be repeated halfway: no retry
            with _Guard(lambda: nullcontext(tx)):
                return query(tx)
        for attempt in (1, 2):
            try:
                if pinned is not None:
                    return query(pinned.get())
                with self._reader() as conn:
                    return query(conn)
            except DBAPIError as exc:
                if pinned is not None:
                    pinned.drop()
                if attempt == 1 and exc.connection_invalidated:
                    continue
                raise _unavailable(exc) from None
        raise AssertionError("unreachable")


class _Pinned:
    """The connection of a reading() block, checked out at its first read."""

    def __init__(self, opener: Callable[[], AbstractContextManager[Connection]]) -> None:
        self._opener = opener
        self._cm: AbstractContextManager[Connection] | None = None
        self._conn: Connection | None = None

    def get(self) -> Connection:
        if self._conn is None:
            cm = self._opener()
            self._conn = cm.__enter__()
            self._cm = cm
        return self._conn

    def drop(self) -> None:
        cm, self._cm, self._conn = self._cm, None, None
        if cm is not None:
            try:
                cm.__exit__(None, None, None)
            except Exception:  # noqa: BLE001
                # Already invalidated: the pool discards it. Resetting a connection the database
                # dropped fails on check-in with the driver's own error (psycopg2.OperationalError,
                # not wrapped by SQLAlchemy; seen in the soak), and the reads have succeeded.
                pass


# The connection of an open unit of work / of a reading() block; a ContextVar is private to each
# thread.
_TX: ContextVar[Connection | None] = ContextVar("kmip_bridge_store_tx", default=None)
_READ: ContextVar[_Pinned | None] = ContextVar("kmip_bridge_store_read", default=None)
_AFTER: ContextVar[list[Callable[[], None]] | None] = ContextVar("kmip_bridge_store_after", default=None)
_R = TypeVar("_R")

# Bulk loads (insert_objects); the request path's statements are in hot.py.
_COPY_OBJECTS = f"COPY objects ({', '.join(_OBJECT_COLUMNS)}) FROM STDIN"
_COPY_ATTRIBUTES = "COPY attributes (uid, name, position, value, search) FROM STDIN"
_BULK_OBJECTS = f"INSERT INTO objects ({', '.join(_OBJECT_COLUMNS)}) VALUES ({', '.join('?' * len(_OBJECT_COLUMNS))})"
_BULK_ATTRIBUTES = "INSERT INTO attributes (uid, name, position, value, search) VALUES (?, ?, ?, ?, ?)"


class _Guard:
    """Turns driver errors into StoreUnavailable, without the SQL or its parameters (which
    could hold sealed blobs) in the message."""

    def __init__(self, opener) -> None:  # type: ignore[no-untyped-def]
        self._opener = opener
        self._cm = None

    def __enter__(self):  # type: ignore[no-untyped-def]
        try:
            self._cm = self._opener()
            return self._cm.__enter__()
        except (OperationalError, DBAPIError) as exc:
            raise _unavailable(exc) from None

    def __exit__(self, exc_type, exc, tb):  # type: ignore[no-untyped-def]
        try:
            suppress = self._cm.__exit__(exc_type, exc, tb)  # type: ignore[union-attr]
        except (OperationalError, DBAPIError) as err:
            raise _unavailable(err) from None
        if isinstance(exc, (OperationalError, DBAPIError)):
            raise _unavailable(exc) from None
        return suppress


def _run_statements(conn: Connection, statements: Sequence[Statement]) -> None:
    for sql, params, many in statements:
        hot.execute(conn, sql, params, many).close()


def _unavailable(exc: DBAPIError) -> StoreUnavailable:
    error = StoreUnavailable(_describe(exc))
    error.connection_lost = bool(getattr(exc, "connection_invalidated", False))
    error.database_wide = isinstance(exc, OperationalError)
    return error


def _describe(exc: DBAPIError) -> str:
    orig = getattr(exc, "orig", None)
    kind = type(orig).__name__ if orig is not None else type(exc).__name__
    # Only the driver's class and fixed phrases: its message may quote SQL or values.
    if kind == "QueryCanceled":
        return "database unavailable: a statement exceeded database.statement_timeout (QueryCanceled)"
    if "locked" in str(orig) or "busy" in str(orig):
        return f"database busy: another writer held the lock past database.busy_timeout ({kind})"
    return f"database unavailable ({kind})"


# COPY's text format: backslash escapes for the characters that separate fields and rows.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_field(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\\\x" + bytes(value).hex()  # bytea's hex input, its backslash escaped for COPY
    return str(value).translate(_COPY_ESCAPES)


def _copy_text(rows: Iterable[tuple[object, ...]]) -> io.StringIO:
    return io.StringIO("".join("\t".join(map(_copy_field, row)) + "\n" for row in rows))


def _locate_query(
    query: sa.Select[Any],
    *,
    owner: str | None,
    other_types: frozenset[int] | None = frozenset(),
    object_type: int | None = None,
    state: int | None = None,
    attribute_filters: Sequence[tuple[str, str | tuple[int, int]]] = (),
    exclude_states: Sequence[int] = (),
    uid: str | None = None,
    policy: str | None = None,
    bit_filters: Sequence[tuple[str, int]] = (),
    fresh: bool | None = None,
) -> sa.Select[Any]:
    """``query`` (over ``objects``) restricted to Locate's criteria (Store.locate)."""
    if owner is not None and other_types is not None:
        if other_types:
            query = query.where(
                sa.or_(objects.c.owner == owner, objects.c.object_type.in_(sorted(other_types)))
            )
        else:
            query = query.where(objects.c.owner == owner)
    if object_type is not None:
        query = query.where(objects.c.object_type == object_type)
    if state is not None:  # the effective state: stored state and dates (states.py)
        query = query.where(states.state_condition(state, int(time.time())))
    if exclude_states:
        query = query.where(objects.c.state.not_in(sorted(exclude_states)))
    if uid is not None:
        query = query.where(objects.c.uid == uid)
    if policy is not None:
        query = query.where(objects.c.policy == policy)
    if fresh is not None:
        query = query.where(objects.c.fresh == fresh)
    for name, bits in bit_filters:
        # CASE: the cast must only ever see this attribute's (numeric) search keys.
        number = sa.case((attributes.c.name == name, sa.cast(attributes.c.search, sa.BigInteger)))
        has_bits = number.op("&")(bits) == bits
        query = query.where(
            sa.exists().where(attributes.c.uid == objects.c.uid, attributes.c.name == name, has_bits)
        )
    for name, search in attribute_filters:
        if isinstance(search, tuple):  # an inclusive range of a numeric (date) attribute
            match = sa.cast(attributes.c.search, sa.BigInteger).between(*search)
            query = query.where(
                sa.exists().where(attributes.c.uid == objects.c.uid, attributes.c.name == name, match)
            )
        else:
            # IN, not a correlated EXISTS: SQLite then starts from ix_attributes_name_search
            # and looks the few matches up by primary key; EXISTS scanned every object
            # (EXPLAIN QUERY PLAN: SCAN objects), which 1,000,000 objects made take seconds.
            query = query.where(
                objects.c.uid.in_(
                    sa.select(attributes.c.uid).where(attributes.c.name == name, attributes.c.search == search)
                )
            )
    return query


def _attr_values(uid: str, a: AttrRow) -> dict[str, object]:
    return {"uid": uid, "name": a.name, "position": a.position, "value": a.value, "search": a.search}


def now() -> int:
    return int(time.time())
