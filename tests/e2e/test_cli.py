"""The command-line contract: init is idempotent, config errors are precise, serve refuses to
start on an unusable token, and the generated admin pykmip.conf works as is."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml
from kmip.core import enums
from kmip.pie.client import ProxyKmipClient

from .conftest import CLI, make_instance, run_cli

pytestmark = pytest.mark.e2e


def _digest_tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.endswith(("-wal", "-shm", ".lock")):
            # SoftHSM2 rewrites token.object (login bookkeeping) on every login; its key objects
            # are separate files, compared byte for byte.
            content = b"" if p.name == "token.object" else p.read_bytes()
            out[str(p.relative_to(root))] = hashlib.sha256(content).hexdigest()
    return out


def test_init_is_idempotent_and_complete(tmp_path: Path) -> None:
    inst = tmp_path / "inst"
    run_cli("init", "--dir", str(inst), "--port", "15696")
    for rel in ["server.yaml", "pki/ca.pem", "pki/server.pem", "pki/server.key", "token/softhsm2.conf",
                "token/user.pin", "clients/admin/pykmip.conf", "clients/admin/cert.pem", "kmip-bridge.db"]:
        assert (inst / rel).is_file(), rel
    assert (inst / "pki" / "server.key").stat().st_mode & 0o077 == 0
    assert (inst / "token" / "user.pin").stat().st_mode & 0o077 == 0
    conf = (inst / "clients" / "admin" / "pykmip.conf").read_text()
    assert conf.startswith("[admin]\n") and "port=15696" in conf
    before = _digest_tree(inst)
    run_cli("init", "--dir", str(inst), "--port", "15696")
    assert _digest_tree(inst) == before
    listing = run_cli("keyhsm", "list", "--config", str(inst / "server.yaml")).stdout
    assert listing.splitlines() == ["default-v1 aes current 0"]


def test_certs_client_prints_conf_path(tmp_path: Path) -> None:
    inst = make_instance(tmp_path / "i", None)
    out = run_cli("certs", "client", "carol", "--group", "ops", "--config", str(inst.config)).stdout.strip()
    path = Path(out)
    assert path == inst.dir / "clients" / "carol" / "pykmip.conf"
    assert path.read_text().startswith("[carol]\n")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c["server"].update(port="x"), "server.port: must be an integer"),
        (lambda c: c["server"].update(prot=1), "server.prot: unknown key"),
        (lambda c: c["keyhsm"].update(kek_kind="des"), "keyhsm.kek_kind: must be one of"),
        (lambda c: c.update(extra={}), "extra: unknown section"),
        (lambda c: c["tls"].pop("cert"), "tls.cert: required"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    cfg_path = tmp_path / "server.yaml"
    cfg = {
        "server": {"port": 5696},
        "tls": {"ca": "ca.pem", "cert": "s.pem", "key": "s.key"},
        "keyhsm": {"pin_file": "pin"},
        "database": {"url": "sqlite:///x.db"},
    }
    mutate(cfg)
    cfg_path.write_text(yaml.safe_dump(cfg))
    result = subprocess.run([*CLI, "serve", "--config", str(cfg_path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert message in result.stderr


def test_serve_refuses_unusable_token(tmp_path: Path) -> None:
    inst = make_instance(tmp_path / "i", None)
    (inst.dir / "token" / "user.pin").write_text("wrong-pin\n")
    result = subprocess.run([*CLI, "serve", "--config", str(inst.config)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert "server cannot start" in result.stderr
    assert "PIN" in result.stderr or "pin" in result.stderr


def test_generated_admin_conf_works_with_pykmip(tmp_path: Path) -> None:
    inst = make_instance(tmp_path / "i", None)
    server = inst.start()
    try:
        client = ProxyKmipClient(config="admin", config_file=str(server.client_conf()))
        with client:
            uid = client.create(enums.CryptographicAlgorithm.AES, 256)
            assert len(client.get(uid).value) == 32
    finally:
        assert server.stop() == 0
