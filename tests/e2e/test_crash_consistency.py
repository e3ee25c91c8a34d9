"""Crash consistency: `db check` finds each kind of damage, and the server survives kill -9 during
a create/register/destroy storm with every acknowledged object intact (the short run of
scripts/crash_loop.py; the long runs are reported in docs/reliability.md)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml
from kmip.core import enums
from kmip.pie import objects
from kmip.pie.client import ProxyKmipClient

from tools.reliability import crashloop

from .conftest import Instance, make_instance, run_cli


def _db_check(instance: Instance, *extra: str) -> tuple[int, str]:
    result = run_cli("db", "check", *extra, "--config", str(instance.config), check=False)
    return result.returncode, result.stdout + result.stderr


def test_db_check_passes_a_whole_store_and_names_each_kind_of_damage(tmp_path: Path) -> None:
    instance = make_instance(tmp_path / "i", None)
    server = instance.start()
    c = ProxyKmipClient(config="admin", config_file=str(server.client_conf()))
    c.open()
    try:
        keys = [c.create(enums.CryptographicAlgorithm.AES, 256) for _ in range(4)]
        secret = c.register(objects.SecretData(b"sealed secret", enums.SecretDataType.PASSWORD))
        public, private = c.create_key_pair(enums.CryptographicAlgorithm.RSA, 2048)  # linked halves
        c.destroy(keys[3])
    finally:
        c.close()
    assert server.stop() == 0

    code, out = _db_check(instance, "--open")
    assert code == 0, out
    assert "objects 7 (live 6, destroyed 1)" in out
    assert "opened through the Key HSM 6" in out
    assert out.strip().endswith("store OK")

    db = sqlite3.connect(instance.database_url.removeprefix("sqlite:///"))
    db.execute("PRAGMA foreign_keys=OFF")
    db.execute("UPDATE objects SET wrapped_dek = NULL WHERE uid = ?", (keys[0],))  # half-written
    db.execute("UPDATE objects SET ciphertext = x'00112233445566778899aabbccddeeff00' WHERE uid = ?",
               (keys[3],))  # destroyed, yet material
    db.execute("INSERT INTO attributes (uid, name, position, value) VALUES ('no-such-object', 'Name', 0, x'00')")
    db.execute("DELETE FROM objects WHERE uid = ?", (public,))  # the private key's Link now dangles
    db.execute("DELETE FROM attributes WHERE uid = ?", (public,))
    # material of one object moved onto another: well-formed, but it does not open there
    db.execute("UPDATE objects SET (nonce, ciphertext, wrapped_dek, wrap_nonce) = "
               "(SELECT nonce, ciphertext, wrapped_dek, wrap_nonce FROM objects WHERE uid = ?) WHERE uid = ?",
               (keys[1], secret))
    db.commit()
    db.close()

    code, out = _db_check(instance)
    assert code == 1
    assert f"PROBLEM {keys[0]}: live object without wrapped_dek" in out
    assert f"PROBLEM {keys[3]}: destroyed but still holds ciphertext" in out
    assert "has no object no-such-object" in out
    assert f"PROBLEM {private}: Link to {public}, which does not exist" in out
    assert "does-not-open" not in out  # without --open the moved material looks well-formed
    assert "store DAMAGED: dangling-link 1, destroyed-with-material 1, half-written 1, orphan-attribute 1" in out

    code, out = _db_check(instance, "--open")
    assert code == 1
    assert f"PROBLEM {secret}: " in out and "does-not-open 1" in out
    assert "sealed secret" not in out


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_loop_loses_nothing_acknowledged(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("pg_database")() if backend == "postgresql" else None
    instance = make_instance(tmp_path / "i", url)
    cfg = yaml.safe_load(instance.config.read_text())
    cfg["server"]["workers"] = 2
    instance.config.write_text(yaml.safe_dump(cfg))
    summary = crashloop.run(
        instance.config, instance.dir / "clients" / "admin" / "pykmip.conf", kills=3, clients=3, seed=7,
        storm_seconds=(0.5, 2.0), log_path=tmp_path / "server.log", say=lambda _: None,
    )
    report = summary.render()
    assert summary.kills == 3, report
    assert summary.ok, report
    # the storm did real work in every kind, and every object it knows was read back
    for op in ("register", "create", "destroy"):
        assert summary.ledger.acked[op] > 0, report
    assert summary.last_checked == len(summary.ledger.live) + len(summary.ledger.destroyed) > 0
