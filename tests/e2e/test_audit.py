"""The audit file end to end: a real server (two workers appending to one file), every batch item
recorded, the chain verified by 'kmip-bridge audit verify', tampering caught at the right line,
and no secret (registered material, created key, token PIN) in the audit file or the logs."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kmip.core import enums
from kmip.pie import objects
from kmip.pie.client import ProxyKmipClient
from kmip.pie.exceptions import KmipOperationFailure

from .conftest import Instance, Server, make_instance, run_cli

pytestmark = pytest.mark.e2e

SECRET = b"audit-e2e secret value 5f1c9a7e0d"
MISSING = "no-such-object-4711"


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Instance:
    inst = make_instance(tmp_path_factory.mktemp("audit"), None)
    cfg = yaml.safe_load(inst.config.read_text())
    cfg["logging"]["level"] = "DEBUG"  # the most the server ever logs must still hold no secret
    cfg["audit"] = {"checkpoint_every": 5}  # several signed checkpoints from this module's traffic
    inst.config.write_text(yaml.safe_dump(cfg))
    return inst


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[ProxyKmipClient]:
    c = ProxyKmipClient(config="admin", config_file=str(server.client_conf()))
    c.open()
    yield c
    c.close()


@pytest.fixture(scope="module")
def traffic(client: ProxyKmipClient, server: Server) -> dict[str, object]:
    """Requests of every kind, once per module."""
    created = client.create(enums.CryptographicAlgorithm.AES, 256)
    key = client.get(created).value
    registered = client.register(objects.SecretData(SECRET, enums.SecretDataType.PASSWORD))
    assert client.get(registered).value == SECRET
    client.activate(created)
    with pytest.raises(KmipOperationFailure):
        client.get(MISSING)

    def burst() -> None:
        with ProxyKmipClient(config="admin", config_file=str(server.client_conf())) as c:
            for _ in range(10):
                c.create(enums.CryptographicAlgorithm.AES, 128)

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert server.saw(MISSING)  # the log pipe has caught up with the last single request
    return {"created": created, "key": key, "registered": registered}


def _records(instance: Instance) -> list[dict[str, object]]:
    return [json.loads(line) for line in (instance.dir / "audit.jsonl").read_bytes().splitlines()]


def test_every_batch_item_is_recorded(traffic: dict[str, object], instance: Instance) -> None:
    records = _records(instance)
    by = [(r["operation"], r["object"], r["status"], r["reason"]) for r in records]
    created, registered = traffic["created"], traffic["registered"]
    for expected in [
        ("CREATE", created, "SUCCESS", None),
        ("GET", created, "SUCCESS", None),
        ("REGISTER", registered, "SUCCESS", None),
        ("GET", registered, "SUCCESS", None),
        ("ACTIVATE", created, "SUCCESS", None),
        ("GET", MISSING, "OPERATION_FAILED", "ITEM_NOT_FOUND"),
    ]:
        assert expected in by
    assert sum(1 for r in records if r["operation"] == "CREATE") == 41
    for r in records:
        assert r["identity"] == "admin" and r["groups"] == ["admin"]
        assert str(r["peer"]).startswith("127.0.0.1:")
        assert {"ts", "prev", "hash"} <= set(r)


def test_verify_accepts_the_chain_written_by_two_workers(traffic: dict[str, object], instance: Instance) -> None:
    out = run_cli("audit", "verify", "--config", str(instance.config)).stdout
    records = _records(instance)
    assert "intact" in out and f"{len(records)} records" in out
    # Batches of both workers (bursts of four clients) interleave: still one record per line.
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert len({r["hash"] for r in records}) == len(records)


@pytest.mark.parametrize("tamper", ["edit", "delete", "swap"])
def test_verify_catches_tampering_at_the_right_line(
    traffic: dict[str, object], instance: Instance, tmp_path: Path, tamper: str
) -> None:
    lines = (instance.dir / "audit.jsonl").read_bytes().splitlines(keepends=True)
    assert len(lines) > 5
    if tamper == "edit":
        assert b'"identity":"admin"' in lines[2]
        lines[2] = lines[2].replace(b'"identity":"admin"', b'"identity":"mallory"')
        why = "altered"
    elif tamper == "delete":
        del lines[2]
        why = "deleted"
    else:
        lines[2], lines[3] = lines[3], lines[2]
        why = "reordered"
    copy = tmp_path / "audit.jsonl"
    copy.write_bytes(b"".join(lines))
    result = run_cli("audit", "verify", "--config", str(instance.config), "--file", str(copy), check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "broken at line 3:" in result.stdout and why in result.stdout
    assert "2 records intact" in result.stdout


def _recomputed(lines: list[bytes], at: int) -> list[bytes]:
    """Record ``at`` edited and every hash after it recomputed: a chain consistent in itself."""
    from kmip_bridge.audit import GENESIS, canonical, record_hash

    records = [json.loads(line) for line in lines]
    records[at]["identity"] = "mallory"
    prev = records[at - 1]["hash"] if at else GENESIS
    for r in records[at:]:
        r["prev"] = prev
        r["hash"] = prev = record_hash(r)
    return [canonical(r) + b"\n" for r in records]


@pytest.mark.parametrize("tamper", ["cut-tail", "emptied", "recomputed"])
def test_signed_checkpoints_catch_what_the_chain_cannot(
    traffic: dict[str, object], instance: Instance, server: Server, tmp_path: Path, tamper: str
) -> None:
    assert (instance.dir / "audit.key").stat().st_mode & 0o077 == 0
    # A consistent snapshot: the log and its checkpoints, copied together while no request runs.
    lines = (instance.dir / "audit.jsonl").read_bytes().splitlines(keepends=True)
    checkpoints = tmp_path / "cps"
    checkpoints.write_bytes((instance.dir / "audit.jsonl.checkpoints").read_bytes())
    signed = max(json.loads(line)["seq"] for line in checkpoints.read_bytes().splitlines())
    assert signed >= 10 and signed <= len(lines)
    copy = tmp_path / "audit.jsonl"
    args = ["audit", "verify", "--config", str(instance.config), "--file", str(copy), "--checkpoints", str(checkpoints)]
    copy.write_bytes(b"".join(lines))
    assert "intact" in run_cli(*args).stdout  # control: the untouched copy
    tampered = {"cut-tail": lines[: signed - 3], "emptied": [], "recomputed": _recomputed(lines, 2)}[tamper]
    copy.write_bytes(b"".join(tampered))
    # The chain alone finds nothing wrong ...
    assert "intact" in run_cli("audit", "verify", "--config", str(instance.config), "--file", str(copy)).stdout
    # ... the signed checkpoints do.
    result = run_cli(*args, check=False)
    assert result.returncode == 1, result.stdout
    why = {"cut-tail": "removed from the end", "emptied": "emptied", "recomputed": "recomputed"}[tamper]
    assert why in result.stdout


def _forms(secret: bytes) -> list[bytes]:
    return [secret, secret.hex().encode(), secret.hex().upper().encode(), base64.b64encode(secret)]


def test_no_secret_in_the_audit_file_or_the_logs(
    traffic: dict[str, object], instance: Instance, server: Server
) -> None:
    pin = (instance.dir / "token" / "user.pin").read_text().strip().encode()
    key = traffic["key"]
    assert isinstance(key, bytes)
    audit_bytes = (instance.dir / "audit.jsonl").read_bytes()
    log_bytes = "".join(server.log).encode()
    assert b'"msg": "request"' in log_bytes  # the log holds the per-item lines
    for where, blob in (("audit file", audit_bytes), ("server log", log_bytes)):
        for secret in (SECRET, key, pin):
            for form in _forms(secret):
                assert form not in blob, f"a secret appears in the {where}"
