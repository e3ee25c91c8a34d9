"""Queries over the object store. Every state change is one transaction."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from .models import attributes, objects


class StoreError(Exception):
    """Base for store failures; messages are safe to show (no values)."""


class StoreUnavailable(StoreError):
    """The database could not be reached or answered with an error."""


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

    @property
    def has_material(self) -> bool:
        return self.ciphertext is not None


@dataclass(frozen=True)
class LocatedRow:
    uid: str
    owner: str
    object_type: int
    policy: str


_OBJECT_COLUMNS = [c.name for c in objects.columns]


def normalise_url(url: str) -> str:
    """psycopg2 is the driver we ship; SQLAlchemy 2.1 would pick psycopg 3 for a bare URL."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def make_engine(url: str, pool_size: int = 8) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = sa.create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args={"check_same_thread": False, "timeout": 30},
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            # WAL lets readers run beside the writer; FULL makes an acknowledged write durable.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=10,
        connect_args={"connect_timeout": 5} if url.startswith("postgresql+psycopg2") else {},
    )


class Store:
    def __init__(self, url: str, pool_size: int = 8) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size)

    def close(self) -> None:
        self.engine.dispose()

    # -- writes ---------------------------------------------------------------------------------
    def insert_object(self, row: ObjectRow, attrs: Sequence[AttrRow]) -> None:
        values = {name: getattr(row, name) for name in _OBJECT_COLUMNS}
        with self._begin() as conn:
            conn.execute(objects.insert(), values)
            if attrs:
                conn.execute(attributes.insert(), [_attr_values(row.uid, a) for a in attrs])

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
            .where(objects.c.kek_label.in_(list(labels)), objects.c.uid > after_uid)
            .order_by(objects.c.uid)
            .limit(limit)
        )
        with self._connect() as conn:
            return [ObjectRow(**rec._mapping) for rec in conn.execute(query)]

    def mark_served(self, uid: str) -> None:
        """Clears Fresh. Not versioned: it races with nothing (only ever goes true -> false)."""
        with self._begin() as conn:
            conn.execute(
                objects.update().where(objects.c.uid == uid, objects.c.fresh.is_(True)).values(fresh=False)
            )

    # -- reads ----------------------------------------------------------------------------------
    def load_object(self, uid: str) -> ObjectRow | None:
        with self._connect() as conn:
            rec = conn.execute(sa.select(objects).where(objects.c.uid == uid)).first()
        return ObjectRow(**rec._mapping) if rec is not None else None

    def load_attributes(self, uid: str, names: Sequence[str] | None = None) -> list[AttrRow]:
        query = sa.select(
            attributes.c.name, attributes.c.value, attributes.c.position, attributes.c.search
        ).where(attributes.c.uid == uid)
        if names:
            query = query.where(attributes.c.name.in_(list(names)))
        query = query.order_by(attributes.c.id)
        with self._connect() as conn:
            return [AttrRow(r.name, r.value, r.position, r.search) for r in conn.execute(query)]

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
    ) -> list[LocatedRow]:
        """Objects matching every criterion, newest first (none in ``exclude_states``).
        ``bit_filters``: (name, mask) — an integer attribute with at least those bits set.

        Scope: objects of ``owner`` plus objects of any owner whose type is in ``other_types``
        (``owner`` None or ``other_types`` None: every owner).
        """
        query = sa.select(objects.c.uid, objects.c.owner, objects.c.object_type, objects.c.policy)
        if owner is not None and other_types is not None:
            if other_types:
                query = query.where(
                    sa.or_(objects.c.owner == owner, objects.c.object_type.in_(sorted(other_types)))
                )
            else:
                query = query.where(objects.c.owner == owner)
        if object_type is not None:
            query = query.where(objects.c.object_type == object_type)
        if state is not None:
            query = query.where(objects.c.state == state)
        if exclude_states:
            query = query.where(objects.c.state.not_in(sorted(exclude_states)))
        if uid is not None:
            query = query.where(objects.c.uid == uid)
        if policy is not None:
            query = query.where(objects.c.policy == policy)
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
            else:
                match = attributes.c.search == search
            query = query.where(
                sa.exists().where(attributes.c.uid == objects.c.uid, attributes.c.name == name, match)
            )
        query = query.order_by(objects.c.created_at.desc(), objects.c.uid).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with self._connect() as conn:
            return [LocatedRow(r.uid, r.owner, r.object_type, r.policy) for r in conn.execute(query)]

    def count_by_kek(self) -> dict[str, int]:
        query = (
            sa.select(objects.c.kek_label, sa.func.count())
            .where(objects.c.kek_label.is_not(None))
            .group_by(objects.c.kek_label)
        )
        with self._connect() as conn:
            return {label: n for label, n in conn.execute(query)}

    def ping(self) -> None:
        with self._connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    @contextmanager
    def unit_of_work(self) -> Iterator[None]:
        """Runs every store call inside the block in one transaction: committed if the block
        completes, rolled back if it raises (KMIP's batch 'Undo' continuation option)."""
        if _TX.get() is not None:
            yield
            return
        with self._begin() as conn:
            token = _TX.set(conn)
            try:
                yield
            finally:
                _TX.reset(token)

    # -- plumbing -------------------------------------------------------------------------------
    def _connect(self):  # type: ignore[no-untyped-def]
        conn = _TX.get()
        return nullcontext(conn) if conn is not None else _Guard(self.engine.connect)

    def _begin(self):  # type: ignore[no-untyped-def]
        conn = _TX.get()
        return nullcontext(conn) if conn is not None else _Guard(self.engine.begin)


# The connection of an open unit of work; a ContextVar is private to each thread.
_TX: ContextVar[Connection | None] = ContextVar("kmip_bridge_store_tx", default=None)


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
            raise StoreUnavailable(_describe(exc)) from None

    def __exit__(self, exc_type, exc, tb):  # type: ignore[no-untyped-def]
        try:
            suppress = self._cm.__exit__(exc_type, exc, tb)  # type: ignore[union-attr]
        except (OperationalError, DBAPIError) as err:
            raise StoreUnavailable(_describe(err)) from None
        if isinstance(exc, (OperationalError, DBAPIError)):
            raise StoreUnavailable(_describe(exc)) from None
        return suppress


def _describe(exc: DBAPIError) -> str:
    orig = getattr(exc, "orig", None)
    kind = type(orig).__name__ if orig is not None else type(exc).__name__
    return f"database unavailable ({kind})"


def _attr_values(uid: str, a: AttrRow) -> dict[str, object]:
    return {"uid": uid, "name": a.name, "position": a.position, "value": a.value, "search": a.search}


def now() -> int:
    return int(time.time())
