"""Settings: typed, validated, paths relative to the file, environment overrides."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kmip_bridge.config import ConfigError, load

BASE = {
    "tls": {"ca": "pki/ca.pem", "cert": "pki/s.pem", "key": "/abs/s.key"},
    "keyhsm": {"pin_file": "token/user.pin"},
    "database": {"url": "sqlite:///data.db"},
}


def _write(tmp_path: Path, cfg: dict) -> Path:
    p = tmp_path / "server.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_defaults_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KMIP_BRIDGE_DATABASE_URL", raising=False)
    s = load(_write(tmp_path, BASE))
    assert s.server.port == 5696 and s.server.host == "127.0.0.1"
    assert s.tls.ca == tmp_path / "pki" / "ca.pem"
    assert s.tls.key == Path("/abs/s.key")
    assert s.database.url == f"sqlite:///{tmp_path}/data.db"
    assert load(_write(tmp_path, BASE), port=7000).server.port == 7000
    # The database writer's socket: one per node (port), so nodes sharing an instance do not meet.
    assert s.database.writer == "process"
    assert s.database.writer_socket == tmp_path / "db-writer.5696.sock"
    assert load(_write(tmp_path, BASE), port=7000).database.writer_socket == tmp_path / "db-writer.7000.sock"


def test_database_timeouts_survive_relative_sqlite_paths(tmp_path: Path) -> None:
    cfg = yaml.safe_load(yaml.safe_dump(BASE))
    cfg["database"].update(busy_timeout=2, statement_timeout=0, pool_size=3)
    s = load(_write(tmp_path, cfg))
    assert s.database.url == f"sqlite:///{tmp_path}/data.db"
    assert (s.database.busy_timeout, s.database.statement_timeout, s.database.pool_size) == (2.0, 0.0, 3)
    assert s.database.connect_timeout == 5.0 and s.database.pool_timeout == 10.0


def test_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _write(tmp_path, BASE)
    monkeypatch.setenv("KMIP_BRIDGE_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("KMIP_BRIDGE_CONFIG", str(p))
    s = load()
    assert s.database.url == "postgresql://u@h/db"
    monkeypatch.setenv("KMIP_BRIDGE_TOKEN_PIN", "1234")
    assert s.keyhsm.read_pin() == "1234"


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("server", "port", 70000, "server.port: 70000 is not a TCP port"),
        ("server", "workers", True, "server.workers: must be an integer"),
        ("tls", "min_version", "1.1", "tls.min_version"),
        ("logging", "format", "xml", "logging.format"),
        ("database", "url", 5, "database.url: must be a string"),
        ("server", "max_batch_items", 0, "server.max_batch_items: must be at least 1"),
        ("server", "max_depth", 1000, "server.max_depth: must be at most 256"),
        ("server", "max_request_work", 0, "server.max_request_work: must be at least 1"),
        ("server", "max_items", "many", "server.max_items: must be an integer"),
        ("server", "read_timeout", 0, "server.read_timeout: must be a positive number"),
        ("server", "handshake_timeout", 0, "server.handshake_timeout: must be a positive number"),
        ("server", "max_handshakes", 0, "server.max_handshakes: must be at least 1"),
        ("server", "max_handshakes_per_ip", 200, "server.max_handshakes_per_ip: must be at most server.max_handshakes"),
        ("server", "max_handshakes_per_ip", 1.5, "server.max_handshakes_per_ip: must be an integer"),
        ("database", "connect_timeout", 0, "database.connect_timeout: must be a positive number of seconds"),
        ("database", "statement_timeout", -1, "database.statement_timeout: must be 0 (no limit) or a positive"),
        ("database", "busy_timeout", "long", "database.busy_timeout: must be a number"),
        ("database", "pool_timeout", 0, "database.pool_timeout: must be a positive number of seconds"),
        ("server", "max_located_items", 0, "server.max_located_items: must be at least 1"),
        ("tls", "profile", "old", "tls.profile: must be modern or legacy"),
        ("server", "handler_threads", 0, "server.handler_threads: must be between 1 and 256"),
        ("database", "writer", "thread", "database.writer: must be one of process, inline"),
        ("tls", "ciphers", "NO-SUCH-SUITE", "tls.ciphers: OpenSSL knows no cipher suite in 'NO-SUCH-SUITE'"),
    ],
)
def test_errors_name_key(tmp_path: Path, section: str, key: str, value: object, message: str) -> None:
    cfg = yaml.safe_load(yaml.safe_dump(BASE))
    cfg.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(_write(tmp_path, cfg))


def test_missing_pin_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KMIP_BRIDGE_TOKEN_PIN", raising=False)
    s = load(_write(tmp_path, BASE))
    with pytest.raises(ConfigError, match=r"keyhsm\.pin_file: cannot read"):
        s.keyhsm.read_pin()


@pytest.mark.parametrize(
    "server, message",
    [
        ({"max_response_size": 100}, "server.max_response_size: must be at least 4096 bytes"),
        ({"undo_lock_seconds": 0}, "server.undo_lock_seconds: must be a positive number of seconds"),
        ({"max_streams_per_identity": 0}, "server.max_streams_per_identity: must be at least 1"),
        ({"max_streams": 10, "max_streams_per_identity": 11}, "server.max_streams_per_identity: must not exceed"),
        ({"max_stream_bytes": 2**25}, "server.max_stream_bytes: must not exceed server.max_stream_bytes_per_identity"),
        ({"max_stream_bytes_total": 2**20}, "server.max_stream_bytes_per_identity: must not exceed"),
        ({"stream_idle_timeout": 0}, "server.stream_idle_timeout: must be a positive number of seconds"),
        ({"max_response_size": "4MB"}, "server.max_response_size: must be an integer"),
    ],
)
def test_resource_budgets_are_validated(tmp_path: Path, server: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(_write(tmp_path, {**BASE, "server": server}))


def test_resource_budget_defaults_reach_the_services(tmp_path: Path) -> None:
    from kmip_bridge.app import budgets
    from kmip_bridge.operations.context import Budgets

    s = load(_write(tmp_path, BASE))
    assert budgets(s) == Budgets()  # the config defaults and the operations' defaults agree
    s = load(_write(tmp_path, {**BASE, "server": {"max_response_size": 65536, "max_streams_per_identity": 4}}))
    assert budgets(s).max_response_size == 65536 and budgets(s).max_streams_per_identity == 4
