"""`kmip-bridge certs sign`: an appliance's CSR (its key pair never leaves it) signed by the instance
CA, then used by a real TLS client against the real server, identified as the operator's NAME and
groups whatever the CSR asked for; CSRs, names and validities the CA must refuse."""

from __future__ import annotations

import datetime as dt
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kmip.core import enums
from kmip.pie.client import ProxyKmipClient
from kmip.pie.exceptions import KmipOperationFailure

from kmip_bridge.admin import pki

from .conftest import Instance, Server, make_instance, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> Instance:
    return make_instance(tmp_path_factory.mktemp("sign"), None)


@pytest.fixture(scope="module")
def srv(inst: Instance) -> Iterator[Server]:
    s = inst.start()
    yield s
    assert s.stop() == 0


def _csr(key: object, cn: str = "vcenter.example.com", ous: tuple[str, ...] = (), san: str | None = None) -> bytes:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, o) for o in ous]
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    # A CSR asking to be a CA: must not be honoured.
    b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


def _sign(inst: Instance, csr: Path, name: str, *extra: str, check: bool = True):  # type: ignore[no-untyped-def]
    return run_cli("certs", "sign", "--csr", str(csr), "--name", name, *extra, "--config", str(inst.config),
                   check=check)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def test_signed_csr_identifies_the_appliance_by_the_operators_name_and_groups(
    inst: Instance, srv: Server, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = tmp_path / "appliance.csr"
    # Hostile appliance: asks for the admin identity and group, a SAN, and CA rights.
    csr.write_bytes(_csr(key, cn="admin", ous=("admin",), san="evil.example"))
    out = _sign(inst, csr, "vcenter", "--group", "vsphere", "--group", "backup", "--days", "30")
    cert_path = Path(out.stdout.strip())
    assert cert_path == inst.dir / "clients" / "vcenter" / "cert.pem"
    assert "CN=admin" in out.stderr  # the operator is told what the CSR asked for
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "vcenter"
    assert sorted(a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)) == [
        "backup", "vsphere"]
    assert cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
        == key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH])
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    with pytest.raises(x509.ExtensionNotFound):  # nothing copied from the CSR
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=29) < lifetime <= dt.timedelta(days=30)
    ca_next_to_it = cert_path.parent / "ca.pem"
    assert ca_next_to_it.read_bytes() == (inst.dir / "pki" / "ca.pem").read_bytes()
    assert not (cert_path.parent / "key.pem").exists()  # the server never had the appliance's key

    # The appliance connects with its own key, the signed certificate and the CA it was handed.
    conf = tmp_path / "pykmip.conf"
    conf.write_text(
        f"[vcenter]\nhost=127.0.0.1\nport={srv.port}\ncertfile={cert_path}\n"
        f"keyfile={_write_key(tmp_path / 'appliance.key', key)}\nca_certs={ca_next_to_it}\n"
        "cert_reqs=CERT_REQUIRED\nssl_version=PROTOCOL_SSLv23\n"
    )
    with ProxyKmipClient(config="vcenter", config_file=str(conf)) as c:
        uid = c.create(enums.CryptographicAlgorithm.AES, 256)
    records = [json.loads(line) for line in (inst.dir / "audit.jsonl").read_text().splitlines()]
    created = [r for r in records if r["object"] == uid and r["operation"] == "CREATE"]
    assert [(r["identity"], r["groups"], r["status"]) for r in created] == [
        ("vcenter", ["backup", "vsphere"], "SUCCESS")]
    # Not an admin (what the CSR asked for): the admin's objects stay invisible to it.
    with ProxyKmipClient(config="admin", config_file=str(srv.client_conf())) as admin:
        admins = admin.create(enums.CryptographicAlgorithm.AES, 128)
    with ProxyKmipClient(config="vcenter", config_file=str(conf)) as c, pytest.raises(KmipOperationFailure) as err:
        c.get(admins)
    assert err.value.reason == enums.ResultReason.ITEM_NOT_FOUND

    # Renewal: a new CSR for the same name replaces the certificate.
    key2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr.write_bytes(_csr(key2))
    _sign(inst, csr, "vcenter", "--group", "vsphere")
    renewed = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert renewed.serial_number != cert.serial_number
    assert isinstance(renewed.public_key(), rsa.RSAPublicKey)
    lifetime = renewed.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=364) < lifetime <= dt.timedelta(days=365)  # the default validity


def _tampered(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A CSR whose signature does not match its content: the subject changed after signing."""
    good = x509.load_pem_x509_csr(_csr(key, cn="aaaa")).public_bytes(serialization.Encoding.DER)
    return good.replace(b"aaaa", b"root", 1)


@pytest.mark.parametrize(("case", "name", "why"), [
    ("bad-signature", "appliance1", "signature does not verify"),
    ("rsa-1024", "appliance2", "1024 bits is too weak"),
    ("not-a-csr", "appliance3", "not a certificate signing request"),
    ("ok", "../evil", "client name '../evil'"),
    ("ok", "a/b", "client name 'a/b'"),
    ("ok", ".hidden", "client name '.hidden'"),
    ("ok", "admin", "server-made key"),  # would orphan the admin's key.pem
])
def test_refused_csrs_and_names_write_nothing(inst: Instance, tmp_path: Path, case: str, name: str, why: str) -> None:
    csr = tmp_path / "x.csr"
    if case == "bad-signature":
        csr.write_bytes(_tampered(ec.generate_private_key(ec.SECP256R1())))
    elif case == "rsa-1024":
        csr.write_bytes(_csr(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    elif case == "not-a-csr":
        csr.write_bytes((inst.dir / "pki" / "ca.pem").read_bytes())
    else:
        csr.write_bytes(_csr(ec.generate_private_key(ec.SECP384R1())))
    before = sorted(p for p in inst.dir.rglob("*") if p.is_file())
    admin_cert = (inst.dir / "clients" / "admin" / "cert.pem").read_bytes()
    out = _sign(inst, csr, name, check=False)
    assert out.returncode == 1 and out.stdout == ""
    assert why in out.stderr and "Traceback" not in out.stderr
    assert sorted(p for p in inst.dir.rglob("*") if p.is_file()) == before
    assert not (inst.dir / "evil").exists()
    assert (inst.dir / "clients" / "admin" / "cert.pem").read_bytes() == admin_cert


def test_bad_group_and_validity_are_refused(inst: Instance, tmp_path: Path) -> None:
    csr = tmp_path / "x.csr"
    csr.write_bytes(_csr(ec.generate_private_key(ec.SECP256R1())))
    for extra, why in [(("--group", "a,b=c"), "group 'a,b=c'"), (("--days", "0"), "--days 0"),
                       (("--days", "826"), "--days 826: choose 1 to 825")]:
        out = _sign(inst, csr, "appliance9", *extra, check=False)
        assert out.returncode == 1 and why in out.stderr, out.stderr
    assert not (inst.dir / "clients" / "appliance9").exists()
    # Control: the same CSR with sane arguments is signed.
    assert _sign(inst, csr, "appliance9", "--group", "storage", "--days", "825").stdout.strip().endswith(
        "clients/appliance9/cert.pem")


def _conf(path: Path, name: str, port: int, cert: Path, key: Path, ca: Path) -> Path:
    path.write_text(f"[{name}]\nhost=127.0.0.1\nport={port}\ncertfile={cert}\nkeyfile={key}\nca_certs={ca}\n"
                    "cert_reqs=CERT_REQUIRED\nssl_version=PROTOCOL_SSLv23\n")
    return path


def _creates(conf: Path, name: str) -> bool:
    try:
        with ProxyKmipClient(config=name, config_file=str(conf)) as c:
            c.create(enums.CryptographicAlgorithm.AES, 128)
        return True
    except Exception:  # noqa: BLE001 - refused at the TLS handshake (PyKMIP wraps it variously)
        return False


def test_enterprise_ca_in_the_bundle_and_one_crl_per_ca(tmp_path_factory: pytest.TempPathFactory) -> None:
    """docs/operations.md, Bringing your own CA: an enterprise CA added to tls.ca (here in front of
    the dev CA) authenticates its clients; the dev CA keeps issuing and signing; a CA outside the
    bundle is refused; with tls.crl set, each CA in the bundle needs its CRL in that file."""
    base = tmp_path_factory.mktemp("byo-ca")
    byo = make_instance(base / "inst", None)
    ent, ent_key, rogue, rogue_key = base / "ent.pem", base / "ent.key", base / "rogue.pem", base / "rogue.key"
    pki.make_ca(ent, ent_key, "Example Corp Issuing CA")
    pki.make_ca(rogue, rogue_key, "Example Corp Issuing CA")  # same name, other key: not trusted
    bundle = byo.dir / "pki" / "ca.pem"
    bundle.write_bytes(ent.read_bytes() + bundle.read_bytes())
    for ca, key, who in [(ent, ent_key, "storage01"), (rogue, rogue_key, "storage02")]:
        pki.issue(ca, key, base / f"{who}.pem", base / f"{who}.key", who, server=False, groups=("storage",))
    signed_key = ec.generate_private_key(ec.SECP256R1())
    (base / "csr.pem").write_bytes(_csr(signed_key))
    _sign(byo, base / "csr.pem", "array01")  # the dev CA signs, though it is second in the bundle
    byo.client("bob")
    srv = byo.start()
    try:
        confs = {
            who: _conf(base / f"{who}.conf", who, srv.port, base / f"{who}.pem", base / f"{who}.key", bundle)
            for who in ("storage01", "storage02")}
        confs["array01"] = _conf(base / "array01.conf", "array01", srv.port, byo.dir / "clients/array01/cert.pem",
                                 _write_key(base / "array01.key", signed_key), byo.dir / "clients/array01/ca.pem")
        confs["bob"] = srv.client_conf("bob")
        assert {who: _creates(conf, who) for who, conf in confs.items()} == {
            "storage01": True, "storage02": False, "array01": True, "bob": True}
        identities = {json.loads(ln)["identity"] for ln in (byo.dir / "audit.jsonl").read_text().splitlines()}
        assert {"storage01", "array01", "bob"} <= identities and "storage02" not in identities

        # A CRL for the dev CA only: the enterprise CA's clients can no longer be checked, so refused.
        dev_crl = base / "dev-crl.pem"
        pki.revoke(bundle, byo.dir / "pki" / "ca.key", byo.dir / "clients" / "admin" / "cert.pem", dev_crl)
        cfg = byo.config.read_text()
        byo.config.write_text(cfg.replace("tls:\n", f"tls:\n  crl: {byo.dir / 'pki' / 'crl.pem'}\n", 1))
        (byo.dir / "pki" / "crl.pem").write_bytes(dev_crl.read_bytes())
        srv.proc.send_signal(signal.SIGHUP)
        assert eventually_bool(lambda: not _creates(confs["storage01"], "storage01"))
        assert _creates(confs["bob"], "bob") and not _creates(srv.client_conf(), "admin")
        # One CRL per CA in the same file: the enterprise clients are back.
        pki.revoke(ent, ent_key, base / "storage02.pem", base / "ent-crl.pem")  # any serial will do
        (byo.dir / "pki" / "crl.pem").write_bytes(dev_crl.read_bytes() + (base / "ent-crl.pem").read_bytes())
        srv.proc.send_signal(signal.SIGHUP)
        assert eventually_bool(lambda: _creates(confs["storage01"], "storage01"))
    finally:
        assert srv.stop() == 0


def eventually_bool(check, attempts: int = 40) -> bool:  # type: ignore[no-untyped-def]
    """True once ``check()`` is (each worker reloads on its own after SIGHUP)."""
    for _ in range(attempts):
        if check():
            return True
        time.sleep(0.25)
    return False
