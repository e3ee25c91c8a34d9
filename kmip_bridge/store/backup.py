"""`kmip-bridge db backup` / `db restore`: a consistent copy of the database, taken while servers run.

SQLite: the online backup API (``sqlite3.Connection.backup``) copies one consistent snapshot while
writers carry on (WAL: the read transaction does not block them); the backup is itself a SQLite
file (journal mode DELETE, checked with ``PRAGMA quick_check``). PostgreSQL: ``pg_dump
--format=custom`` (one MVCC snapshot) and ``pg_restore --single-transaction``. A backup holds what
the database holds — sealed material, useless without the token's KEKs, and attributes in the
clear — and is written 0600. A restore is all or nothing, and refuses a database that already
holds objects unless forced.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError

from .store import make_engine, normalise_url

PG_TOOLS_HINT = (
    "install the PostgreSQL client tools of the server's major version (Debian: apt-get install postgresql-client)"
)


class BackupError(Exception):
    """A backup or restore that cannot be done; the message says why and what to do."""


def _url(url: str) -> URL:
    return make_url(normalise_url(url))


def _is_sqlite(url: str) -> bool:
    return _url(url).get_backend_name() == "sqlite"


def _sqlite_path(url: str) -> Path:
    database = _url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError(f"database.url {url!r}: only a SQLite database file can be backed up or restored")
    return Path(database)


def object_count(url: str) -> int | None:
    """Objects in the database at ``url`` (destroyed ones included); None if it has no objects table."""
    if _is_sqlite(url) and not _sqlite_path(url).exists():
        return None
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("objects"):
                return None
            return int(conn.execute(sa.text("SELECT count(*) FROM objects")).scalar_one())
    except DBAPIError as exc:
        kind = type(exc.orig or exc).__name__
        raise BackupError(f"cannot read the database ({kind}): is database.url right, and does it exist?") from None
    finally:
        engine.dispose()


def backup(url: str, output: Path) -> None:
    """Writes a consistent copy of the database at ``url`` to ``output`` (replaced atomically)."""
    output = output.resolve()
    if not output.parent.is_dir():
        raise BackupError(f"{output.parent}: no such directory")
    tmp = output.with_name(f".{output.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        if _is_sqlite(url):
            _sqlite_backup(_sqlite_path(url), tmp)
        else:
            _pg_dump(url, tmp)
        os.chmod(tmp, 0o600)  # sealed material and attributes: the owner only
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def restore(url: str, source: Path, force: bool = False) -> None:
    """Replaces the database at ``url`` with the backup ``source``; refuses a database that holds
    objects unless ``force``."""
    if not source.is_file():
        raise BackupError(f"{source}: no such backup file")
    sqlite = _is_sqlite(url)
    if sqlite:
        _check_sqlite_backup(source)
    else:
        _check_pg_archive(source)
    count = object_count(url)
    if count and not force:
        raise BackupError(
            f"the database already holds {count} objects; restoring would replace them "
            "(use --force to overwrite it)"
        )
    if sqlite:
        _sqlite_restore(source, _sqlite_path(url))
    else:
        _pg_restore(url, source)


# -- SQLite ---------------------------------------------------------------------------------------


def _sqlite_backup(path: Path, tmp: Path) -> None:
    if not path.is_file():
        raise BackupError(f"{path}: no such SQLite database")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    src = sqlite3.connect(path, timeout=30)
    dst = sqlite3.connect(tmp)
    try:
        src.backup(dst)  # every page in one step: one consistent snapshot
        dst.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
        verdict = dst.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise BackupError(f"the copy failed its integrity check: {verdict}")
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite backup of {path} failed: {exc}") from None
    finally:
        dst.close()
        src.close()


def _check_sqlite_backup(source: Path) -> None:
    try:
        conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{source} is not a SQLite backup ({exc})") from None
    if not {"objects", "attributes", "alembic_version"} <= tables:
        raise BackupError(f"{source} is a SQLite database but not a kmip-bridge backup (no objects table)")


def _sqlite_restore(source: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(path, timeout=30)
    try:
        # One step: SQLite replaces the destination in one write transaction (all or nothing).
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=WAL")  # as the server runs it
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite restore into {path} failed (nothing was changed): {exc}") from None
    finally:
        dst.close()
        src.close()
    os.chmod(path, 0o600)


# -- PostgreSQL -----------------------------------------------------------------------------------


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} not found on PATH: {PG_TOOLS_HINT}")
    return found


def _conninfo(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection string for the tools, and their environment: the password goes in
    PGPASSWORD, never on a command line that ``ps`` shows."""
    u = _url(url)

    def quote(value: object) -> str:
        return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"

    parts = {"host": u.host, "port": u.port, "user": u.username, "dbname": u.database}
    for key, value in u.query.items():
        parts[key] = value if isinstance(value, str) else value[-1]
    conninfo = " ".join(f"{k}={quote(v)}" for k, v in parts.items() if v is not None)
    env = dict(os.environ)
    if u.password is not None:
        env["PGPASSWORD"] = str(u.password)
    return conninfo, env


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, check=False)


def _tool_failed(name: str, result: subprocess.CompletedProcess[str]) -> BackupError:
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    why = "; ".join(lines[-3:]) or f"exit code {result.returncode}"
    return BackupError(f"{name} failed: {why}")


def _pg_dump(url: str, tmp: Path) -> None:
    conninfo, env = _conninfo(url)
    result = _run(
        [_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", f"--file={tmp}",
         f"--dbname={conninfo}"],
        env,
    )
    if result.returncode != 0:
        raise _tool_failed("pg_dump", result)


def _check_pg_archive(source: Path) -> None:
    result = _run([_tool("pg_restore"), "--list", str(source)])
    if result.returncode != 0:
        raise BackupError(f"{source} is not a pg_dump custom-format archive ({_tool_failed('pg_restore', result)})")
    if not re.search(r"\bTABLE \S+ objects\b", result.stdout):
        raise BackupError(f"{source} is a pg_dump archive but not a kmip-bridge backup (no objects table)")


def _pg_restore(url: str, source: Path) -> None:
    conninfo, env = _conninfo(url)
    result = _run(
        [_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-privileges", "--exit-on-error",
         "--single-transaction", f"--dbname={conninfo}", str(source)],
        env,
    )
    if result.returncode != 0:
        raise BackupError(f"{_tool_failed('pg_restore', result)} (nothing was changed: one transaction)")
