"""The hot path's statements in the driver's own SQL, run on the driver's cursor.

A Create+Get pair runs five statements: the object row's and its attributes' inserts, their two
reads, and the Fresh flip. Through SQLAlchemy's execution context one such statement cost 21 µs of CPU on SQLite and
98 µs on PostgreSQL, against 7 and 48 µs on the driver's cursor (docs/performance.md). The
statements are the same SQL SQLAlchemy compiles; only the per-call machinery is skipped.

Errors still go through SQLAlchemy's own handler (``Connection._handle_dbapi_exception``, private
but unchanged across the 2.x versions setup.cfg admits): the driver's error arrives wrapped in a
``DBAPIError`` exactly as from ``Connection.execute``, and a connection the database dropped is
invalidated together with the pool's older ones, which the store's retries rely on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy.engine import Connection, Dialect

_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
_ATTRIBUTE_COLUMNS = "name, value, position, search"
_INSERT_ATTRIBUTES = "INSERT INTO attributes (uid, name, position, value, search)"
# Rows per multi-row INSERT: 5 parameters each stays far below SQLite's 32,766 and PostgreSQL's
# 65,535 bound parameters per statement.
ATTRIBUTE_CHUNK = 200


class HotStatements:
    """The hot SQL for one dialect; ``columns`` is the order object rows are read and written in."""

    def __init__(self, dialect: Dialect, columns: Sequence[str]) -> None:
        mark = _MARKS.get(dialect.paramstyle)
        if mark is None:
            raise ValueError(f"unsupported DBAPI paramstyle {dialect.paramstyle!r}")
        self._mark = mark
        names = ", ".join(columns)
        self.insert_object = f"INSERT INTO objects ({names}) VALUES ({', '.join([mark] * len(columns))})"
        self._attribute_row = f"({', '.join([mark] * 5)})"
        self.insert_attribute = f"{_INSERT_ATTRIBUTES} VALUES {self._attribute_row}"
        self._insert_attributes: dict[int, str] = {}
        self._multi_row = dialect.name == "postgresql"
        # fresh as parameters, not literals: SQLite stores 1/0, PostgreSQL a boolean.
        self.mark_served = f"UPDATE objects SET fresh = {mark} WHERE uid = {mark} AND fresh = {mark}"
        # Plus the two dates the effective State depends on (states.py), in the same round trip.
        dates = ", ".join(
            f"(SELECT a.search FROM attributes a WHERE a.uid = objects.uid AND a.name = '{n}' "
            "ORDER BY a.position LIMIT 1)" for n in ("Activation Date", "Deactivation Date")
        )
        self.load_object = f"SELECT {names}, {dates} FROM objects WHERE uid = {mark}"
        # SQLite has no FOR UPDATE; its unit of work already holds the one write lock.
        lock = " FOR UPDATE" if dialect.name == "postgresql" else ""
        self.load_object_for_update = self.load_object + lock
        self.load_attributes = f"SELECT {_ATTRIBUTE_COLUMNS} FROM attributes WHERE uid = {mark} ORDER BY id"
        self._named: dict[int, str] = {}
        # psycopg2 returns bytea as memoryview; sqlite3 returns bytes.
        self.blobs_as_memoryview = dialect.name == "postgresql"

    def insert_attributes(self, rows: Sequence[tuple[Any, ...]]) -> Iterator[tuple[str, Any, bool]]:
        """(sql, parameters, executemany?) inserting ``rows`` of (uid, name, position, value,
        search). PostgreSQL: one multi-row INSERT per ATTRIBUTE_CHUNK rows, since psycopg2's
        executemany sends one statement per row. SQLite: executemany, which cost 98 µs per
        object of 15 attributes against 155 µs for the multi-row INSERT (in process, no fsync)."""
        if not self._multi_row:
            if rows:
                yield self.insert_attribute, rows, True
            return
        for start in range(0, len(rows), ATTRIBUTE_CHUNK):
            chunk = rows[start : start + ATTRIBUTE_CHUNK]
            sql = self._insert_attributes.get(len(chunk))
            if sql is None:
                values = ", ".join([self._attribute_row] * len(chunk))
                sql = self._insert_attributes[len(chunk)] = f"{_INSERT_ATTRIBUTES} VALUES {values}"
            yield sql, [value for row in chunk for value in row], False

    def load_named_attributes(self, count: int) -> str:
        sql = self._named.get(count)
        if sql is None:
            marks = ", ".join([self._mark] * count)
            where = f"uid = {self._mark} AND name IN ({marks})"
            sql = self._named[count] = f"SELECT {_ATTRIBUTE_COLUMNS} FROM attributes WHERE {where} ORDER BY id"
        return sql


def execute(conn: Connection, sql: str, params: Any, many: bool = False) -> Any:
    """Runs ``sql`` on the driver cursor of ``conn``; returns the cursor (the caller fetches)."""
    cursor = conn.connection.cursor()
    try:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
    except BaseException as exc:  # noqa: BLE001 - as SQLAlchemy: an interrupt leaves the connection unusable
        conn._handle_dbapi_exception(exc, sql, params, cursor, None)
    return cursor


def fetch_one(conn: Connection, sql: str, params: Any) -> tuple[Any, ...] | None:
    cursor = execute(conn, sql, params)
    try:
        return cursor.fetchone()
    finally:
        cursor.close()


def fetch_all(conn: Connection, sql: str, params: Any) -> list[tuple[Any, ...]]:
    cursor = execute(conn, sql, params)
    try:
        return cursor.fetchall()
    finally:
        cursor.close()
