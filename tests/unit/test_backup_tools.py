"""db backup / restore failures that need no server: missing PostgreSQL tools, bad URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmip_bridge.store.backup import BackupError, _conninfo, backup


def test_missing_pg_dump_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_dump anywhere on it
    with pytest.raises(BackupError, match="pg_dump not found on PATH: install the PostgreSQL client tools"):
        backup("postgresql://kb@127.0.0.1:5432/kb", tmp_path / "out")
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_password_goes_to_the_environment_not_the_command_line() -> None:
    conninfo, env = _conninfo("postgresql://kb:s3cr'et@db.example:6543/kmip?sslmode=require")
    assert "s3cr" not in conninfo
    assert env["PGPASSWORD"] == "s3cr'et"
    assert conninfo == "host='db.example' port='6543' user='kb' dbname='kmip' sslmode='require'"


def test_an_in_memory_sqlite_database_cannot_be_backed_up(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="only a SQLite database file"):
        backup("sqlite://", tmp_path / "out")
