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


def _serials(crl: Path) -> set[int]:
    from cryptography import x509

    return {e.serial_number for e in x509.load_pem_x509_crl(crl.read_bytes())} if crl.exists() else set()


def _cert(path: Path):  # type: ignore[no-untyped-def]
    from cryptography import x509

    return x509.load_pem_x509_certificate(path.read_bytes())


def _one_line_refusal(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_certs_revoke_refuses_a_path_for_a_name(tmp_path: Path) -> None:
    """'certs revoke ../../x' used to revoke the certificate found at clients/../../x/cert.pem."""
    from kmip_bridge.admin import pki

    inst = make_instance(tmp_path / "i", None)
    outside = tmp_path / "x"  # = clients/../../x seen from the instance
    pki.issue(inst.dir / "pki" / "ca.pem", inst.dir / "pki" / "ca.key", outside / "cert.pem",
              outside / "key.pem", "x", server=False)
    crl = inst.dir / "pki" / "crl.pem"
    for name in ("../../x", "..", "a/b", ".hidden", ""):
        _one_line_refusal(run_cli("certs", "revoke", name, "--config", str(inst.config), check=False),
                          "client name")
    assert not crl.exists()  # nothing was revoked
    missing = run_cli("certs", "revoke", "nobody", "--config", str(inst.config), check=False)
    assert missing.returncode == 1 and "no client certificate for 'nobody'" in missing.stderr
    # Control: a real client's name is revoked.
    inst.client("bob")
    assert Path(run_cli("certs", "revoke", "bob", "--config", str(inst.config)).stdout.strip()) == crl
    assert _serials(crl) == {_cert(inst.dir / "clients" / "bob" / "cert.pem").serial_number}


def test_certs_client_refuses_bad_names_in_one_line(tmp_path: Path) -> None:
    inst = make_instance(tmp_path / "i", None)
    _one_line_refusal(run_cli("certs", "client", "a" * 65, "--config", str(inst.config), check=False),
                      "client name")
    _one_line_refusal(run_cli("certs", "client", "ok", "--group", "g" * 65, "--config", str(inst.config),
                              check=False), "group")
    _one_line_refusal(run_cli("certs", "client", "ok", "--group", "a\nb", "--config", str(inst.config),
                              check=False), "group")
    assert not (inst.dir / "clients" / ("a" * 65)).exists()
    assert not (inst.dir / "clients" / "ok").exists()
    # Control: 64 characters is the longest CN, and works.
    conf = Path(run_cli("certs", "client", "b" * 64, "--config", str(inst.config)).stdout.strip())
    assert conf.read_text().startswith(f"[{'b' * 64}]\n")


def test_certs_client_reissues_with_new_groups(tmp_path: Path) -> None:
    from cryptography.x509.oid import NameOID

    inst = make_instance(tmp_path / "i", None)
    cert_path = inst.dir / "clients" / "carol" / "cert.pem"

    def ous() -> set[str]:
        return {str(a.value) for a in _cert(cert_path).subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)}

    inst.client("carol", "ops")
    first = cert_path.read_bytes()
    inst.client("carol", "ops")  # same groups: nothing changes
    assert cert_path.read_bytes() == first
    result = run_cli("certs", "client", "carol", "--group", "ops", "--group", "dba", "--config", str(inst.config))
    assert "re-issued carol's certificate" in result.stderr
    assert ous() == {"ops", "dba"}
    # The previous certificate (group ops only) is revoked: it must not outlive its groups.
    from cryptography import x509

    assert x509.load_pem_x509_certificate(first).serial_number in _serials(inst.dir / "pki" / "crl.pem")
    assert _cert(cert_path).serial_number not in _serials(inst.dir / "pki" / "crl.pem")
