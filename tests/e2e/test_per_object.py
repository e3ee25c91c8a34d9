"""keyhsm.per_object: a token key per object, destroyed with the object. The point of the mode: an
object destroyed after a database backup stays destroyed when that backup is restored (its key is
gone from the token), where the shared-KEK mode brings it back. Also: db check finds and sweeps
orphan keys (the crash window between Destroy's commit and the key's destruction), rewrap and KEK
revocation leave per-object rows alone, objects made before the switch keep their envelope, and
socket mode does the same through the Key HSM service."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from kmip.core import enums
from kmip.pie import objects
from kmip.pie.client import ProxyKmipClient
from kmip.pie.exceptions import KmipOperationFailure

from .conftest import Instance, Server, free_port, make_instance, run_cli, start_node

pytestmark = pytest.mark.e2e


def _per_object(instance: Instance, on: bool = True) -> None:
    cfg = yaml.safe_load(instance.config.read_text())
    cfg["keyhsm"]["per_object"] = on
    instance.config.write_text(yaml.safe_dump(cfg))


def _client(server: Server) -> ProxyKmipClient:
    c = ProxyKmipClient(config="admin", config_file=str(server.client_conf()))
    c.open()
    return c


def _row(instance: Instance, uid: str) -> tuple[str, str, int, bytes | None]:
    path = instance.database_url.split("///", 1)[1]
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT kek_label, kek_kind, state, ciphertext FROM objects WHERE uid = ?", (uid,)
        ).fetchone()


def _sql(instance: Instance, statement: str, *args: object) -> None:
    path = instance.database_url.split("///", 1)[1]
    with sqlite3.connect(path) as db:
        db.execute(statement, args)


def _object_keys(instance: Instance) -> tuple[int, int]:
    """(per-object keys on the token, live objects with one) from 'keyhsm list'."""
    out = run_cli("keyhsm", "list", "--config", str(instance.config)).stdout
    m = re.search(r"^per-object object-aes keys (\d+) objects (\d+)", out, re.M)
    assert m, out
    return int(m[1]), int(m[2])


@pytest.mark.parametrize("per_object", [True, False], ids=["per-object", "shared-kek"])
def test_destroyed_after_backup_stays_destroyed_after_restore(per_object: bool, tmp_path: Path) -> None:
    instance = make_instance(tmp_path / "inst", None)
    _per_object(instance, per_object)
    cfg = str(instance.config)
    backup = tmp_path / "db.backup"
    server = instance.start()
    try:
        c = _client(server)
        try:
            doomed = c.register(objects.SecretData(b"shred me", enums.SecretDataType.PASSWORD))
            kept = c.create(enums.CryptographicAlgorithm.AES, 256)
            kept_value = c.get(kept).value
            assert c.get(doomed).value == b"shred me"
            run_cli("db", "backup", "--config", cfg, "--output", str(backup))
            c.destroy(doomed)  # Pre-Active: no Revoke needed
        finally:
            c.close()
    finally:
        assert server.stop() == 0
    label, kind, _, _ = _row(instance, doomed)
    if per_object:
        assert kind == "object-aes" and label.startswith(f"obj.{doomed}.t")
        assert _object_keys(instance) == (1, 1)  # kept's key; doomed's went with it
    else:
        assert (label, kind) == ("default-v1", "aes-gcm")  # the mechanism SoftHSM2 gives an AES KEK

    restored = run_cli("db", "restore", "--force", "--config", cfg, "--input", str(backup))
    assert "database restored" in restored.stdout
    if per_object:
        assert "per-object' (1 objects)" in restored.stderr and "irretrievable" in restored.stderr
    else:
        assert "warning" not in restored.stderr

    server = instance.start()
    try:
        c = _client(server)
        try:
            assert c.get(kept).value == kept_value
            if per_object:
                with pytest.raises(KmipOperationFailure) as err:
                    c.get(doomed)
                assert err.value.reason == enums.ResultReason.CRYPTOGRAPHIC_FAILURE
                assert f"per-object key '{label}'" in err.value.message
                assert "irretrievable" in err.value.message
            else:
                assert c.get(doomed).value == b"shred me"  # the backup brought it back
        finally:
            c.close()
    finally:
        assert server.stop() == 0

    check = run_cli("db", "check", "--open", "--config", cfg, check=False)
    if per_object:
        assert check.returncode == 1
        assert f"PROBLEM {doomed}:" in check.stdout and "object-key-missing 1" in check.stdout
        assert "per-object keys on the token 1" in check.stdout
    else:
        assert check.returncode == 0, check.stdout


def test_db_check_finds_and_sweeps_orphan_keys(tmp_path: Path) -> None:
    instance = make_instance(tmp_path / "inst", None)
    _per_object(instance)
    cfg = str(instance.config)
    server = instance.start()
    try:
        c = _client(server)
        try:
            live = c.register(objects.SecretData(b"stays", enums.SecretDataType.PASSWORD))
            crashed = c.register(objects.SecretData(b"crash window", enums.SecretDataType.PASSWORD))
            rowless = c.register(objects.SecretData(b"no row", enums.SecretDataType.PASSWORD))
        finally:
            c.close()
    finally:
        assert server.stop() == 0
    assert _object_keys(instance) == (3, 3)
    # The state a crash between Destroy's commit and the key's destruction leaves: the row is
    # destroyed (material gone, label kept), the key still on the token.
    _sql(instance, "UPDATE objects SET state = 6, nonce = NULL, ciphertext = NULL, wrapped_dek = NULL, "
                   "wrap_nonce = NULL, row_version = row_version + 1 WHERE uid = ?", crashed)
    # A key whose row was never written (a create that died between the two).
    _sql(instance, "DELETE FROM attributes WHERE uid = ?", rowless)
    _sql(instance, "DELETE FROM objects WHERE uid = ?", rowless)

    # Without the token, db check cannot know; with it (--open), the destroyed row's key is an
    # orphan. The row-less key is young: a create in flight looks the same, so it is left alone.
    assert run_cli("db", "check", "--config", cfg).returncode == 0
    found = run_cli("db", "check", "--open", "--config", cfg, check=False)
    assert found.returncode == 1
    assert f"PROBLEM {crashed}: destroyed, but its per-object key" in found.stdout
    assert "orphan-object-key 1" in found.stdout
    assert _object_keys(instance) == (3, 1)

    swept = run_cli("db", "check", "--repair", "--config", cfg)
    assert "orphans destroyed 1" in swept.stdout and "store OK" in swept.stdout
    assert _object_keys(instance) == (2, 1)
    # Old enough (grace 0): the row-less key is an orphan too, and the sweep takes it.
    found = run_cli("db", "check", "--open", "--grace", "0", "--config", cfg, check=False)
    assert found.returncode == 1 and "has no object row" in found.stdout
    run_cli("db", "check", "--repair", "--grace", "0", "--config", cfg)
    assert _object_keys(instance) == (1, 1)
    assert "store OK" in run_cli("db", "check", "--open", "--grace", "0", "--config", cfg).stdout

    server = instance.start()  # the live object never lost its key
    try:
        c = _client(server)
        try:
            assert c.get(live).value == b"stays"
        finally:
            c.close()
    finally:
        assert server.stop() == 0


def test_rewrap_revoke_and_objects_from_before_the_switch(tmp_path: Path) -> None:
    instance = make_instance(tmp_path / "inst", None)
    cfg = str(instance.config)
    server = instance.start()
    try:
        c = _client(server)
        try:
            before = c.register(objects.SecretData(b"shared kek", enums.SecretDataType.PASSWORD))
        finally:
            c.close()
    finally:
        assert server.stop() == 0
    _per_object(instance)
    server = instance.start()
    try:
        c = _client(server)
        try:
            after = c.register(objects.SecretData(b"own key", enums.SecretDataType.PASSWORD))
            assert _row(instance, before)[:2] == ("default-v1", "aes-gcm")  # kept its envelope
            assert _row(instance, after)[1] == "object-aes"
            run_cli("keyhsm", "rotate", "--config", cfg)
            out = run_cli("keyhsm", "rewrap", "--config", cfg).stdout
            assert "rewrapped 1 objects" in out  # the shared-KEK one; the per-object row is its own
            assert _row(instance, before)[0] == "default-v2"
            after_row = _row(instance, after)
            # Revoking every version of the shared KEK leaves the per-object object readable.
            run_cli("keyhsm", "revoke", "default-v1", "--config", cfg)
            assert c.get(after).value == b"own key"
            assert c.get(before).value == b"shared kek"
            assert _row(instance, after) == after_row
            # Revoke for a compromise keeps the key (decided: only Destroy shreds); Destroy takes it.
            c.revoke(enums.RevocationReasonCode.KEY_COMPROMISE, after)
            assert _object_keys(instance) == (1, 1)
            c.destroy(after)
            assert _object_keys(instance) == (0, 0)
            with pytest.raises(KmipOperationFailure):
                c.get(after)
        finally:
            c.close()
    finally:
        assert server.stop() == 0


def test_socket_mode(tmp_path: Path) -> None:
    instance = make_instance(tmp_path / "inst", None, keyhsm_mode="socket")
    _per_object(instance)
    cfg = str(instance.config)
    backup = tmp_path / "db.backup"
    server = instance.start()
    try:
        c = _client(server)
        try:
            uids = [c.create(enums.CryptographicAlgorithm.AES, 128) for _ in range(3)]
            values = {uid: c.get(uid).value for uid in uids}
            assert {_row(instance, uid)[1] for uid in uids} == {"object-aes"}
            assert _object_keys(instance) == (3, 3)  # through the service: no PIN in the CLI
            run_cli("db", "backup", "--config", cfg, "--output", str(backup))
            c.destroy(uids[0])
            assert _object_keys(instance) == (2, 2)
        finally:
            c.close()
    finally:
        assert server.stop() == 0
    # The service stopped with the server, so restore's KEK warnings cannot be computed (exit 1).
    restored = run_cli("db", "restore", "--force", "--config", cfg, "--input", str(backup), check=False)
    assert "database restored" in restored.stdout
    server = instance.start()
    try:
        c = _client(server)
        try:
            with pytest.raises(KmipOperationFailure) as err:
                c.get(uids[0])
            assert err.value.reason == enums.ResultReason.CRYPTOGRAPHIC_FAILURE
            assert "per-object key" in err.value.message and "irretrievable" in err.value.message
            assert c.get(uids[1]).value == values[uids[1]]
            check = run_cli("db", "check", "--open", "--config", cfg, check=False)
            assert check.returncode == 1 and "object-key-missing 1" in check.stdout
        finally:
            c.close()
    finally:
        assert server.stop() == 0


def test_two_nodes_one_postgresql(tmp_path: Path, pg_database: Callable[[], str]) -> None:
    """Nodes share token and database: a key made by one node's worker opens on the other, and a
    Destroy through either removes it (the token is the same files, under one lock file)."""
    instance = make_instance(tmp_path / "inst", pg_database())
    _per_object(instance)
    node_a = instance.start()
    node_b = start_node(instance, free_port())
    try:
        conf = str(node_a.client_conf())
        a = ProxyKmipClient(config="admin", config_file=conf)
        b = ProxyKmipClient(port=node_b.port, config="admin", config_file=conf)
        a.open()
        b.open()
        try:
            made_on_a = [a.register(objects.SecretData(b"from a %d" % i, enums.SecretDataType.PASSWORD))
                         for i in range(3)]
            made_on_b = b.create(enums.CryptographicAlgorithm.AES, 256)
            assert [b.get(uid).value for uid in made_on_a] == [b"from a %d" % i for i in range(3)]
            assert len(a.get(made_on_b).value) == 32
            assert _object_keys(instance) == (4, 4)
            b.destroy(made_on_a[0])
            a.destroy(made_on_b)
            assert _object_keys(instance) == (2, 2)
            for c, uid in ((a, made_on_a[0]), (b, made_on_b)):
                with pytest.raises(KmipOperationFailure):
                    c.get(uid)
            assert a.get(made_on_a[1]).value == b"from a 1"
            assert "store OK" in run_cli("db", "check", "--open", "--config", str(instance.config)).stdout
        finally:
            a.close()
            b.close()
    finally:
        assert node_b.stop() == 0
        assert node_a.stop() == 0
