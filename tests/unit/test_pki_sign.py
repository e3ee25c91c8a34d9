"""admin/pki.py's CSR signing, without a server: which keys, names and validities the CA accepts,
what the certificate says, and the CA found in a bundle by its key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from kmip_bridge.admin import pki


def _csr(key: object) -> bytes:
    b = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "appliance")]))
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return b.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)  # type: ignore[arg-type]


@pytest.fixture
def ca(tmp_path: Path) -> tuple[x509.Certificate, object]:
    pki.make_ca(tmp_path / "ca.pem", tmp_path / "ca.key")
    return pki.ca_pair(tmp_path / "ca.pem", tmp_path / "ca.key")


@pytest.mark.parametrize("key", [
    rsa.generate_private_key(public_exponent=65537, key_size=2048),
    ec.generate_private_key(ec.SECP384R1()),
    ec.generate_private_key(ec.SECP521R1()),
    ed25519.Ed25519PrivateKey.generate(),
], ids=["rsa-2048", "p-384", "p-521", "ed25519"])
def test_accepted_keys(ca, key) -> None:  # type: ignore[no-untyped-def]
    signed = pki.sign_csr(*ca, pki.load_csr(_csr(key)), "array-01", ("storage",), days=10)
    assert signed.cert.public_key() == key.public_key()
    assert signed.requested_subject == "CN=appliance" and not signed.clamped
    signed.cert.verify_directly_issued_by(ca[0])


@pytest.mark.parametrize(("key", "why"), [
    (rsa.generate_private_key(public_exponent=65537, key_size=1536), "1536 bits is too weak"),
    (ec.generate_private_key(ec.SECP256K1()), "curve secp256k1 is not accepted"),
    (dsa.generate_private_key(key_size=2048), "DSA keys are not accepted"),
], ids=["rsa-1536", "secp256k1", "dsa"])
def test_weak_or_unusual_keys_are_refused(key, why: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(pki.CsrError, match=why):
        pki.load_csr(_csr(key))


def test_der_csr_is_read_and_garbage_refused() -> None:
    pem = _csr(ec.generate_private_key(ec.SECP256R1()))
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    assert pki.load_csr(der).subject == pki.load_csr(pem).subject
    with pytest.raises(pki.CsrError, match="not a certificate signing request"):
        pki.load_csr(b"\x30\x03\x02\x01\x00")


@pytest.mark.parametrize("name", ["", "a" * 65, "../x", "a b", "-rf", ".x", "CN=x,OU=admin", "é"])
def test_names_that_are_not_plain_tokens_are_refused(ca, name: str) -> None:  # type: ignore[no-untyped-def]
    csr = pki.load_csr(_csr(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(pki.CsrError, match="client name"):
        pki.sign_csr(*ca, csr, name)
    with pytest.raises(pki.CsrError, match="group"):
        pki.sign_csr(*ca, csr, "ok", ("fine", name))


def test_validity_bounds_and_clamp_to_the_ca(ca) -> None:  # type: ignore[no-untyped-def]
    csr = pki.load_csr(_csr(ec.generate_private_key(ec.SECP256R1())))
    for days in (0, -1, pki.SIGN_MAX_DAYS + 1):
        with pytest.raises(pki.CsrError, match="choose 1 to 825"):
            pki.sign_csr(*ca, csr, "a", days=days)
    # The dev CA lives 825 days from a few seconds ago: the maximum is cut to its expiry.
    signed = pki.sign_csr(*ca, csr, "a", days=pki.SIGN_MAX_DAYS)
    assert signed.clamped and signed.cert.not_valid_after_utc == ca[0].not_valid_after_utc
    one = pki.sign_csr(*ca, csr, "a", days=1).cert
    assert dt.timedelta(hours=23) < one.not_valid_after_utc - dt.datetime.now(dt.UTC) <= dt.timedelta(days=1)


def test_ca_found_in_a_bundle_by_its_key(tmp_path: Path) -> None:
    pki.make_ca(tmp_path / "other.pem", tmp_path / "other.key", "other")
    pki.make_ca(tmp_path / "ca.pem", tmp_path / "ca.key")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes((tmp_path / "other.pem").read_bytes() + (tmp_path / "ca.pem").read_bytes())
    cert, _ = pki.ca_pair(bundle, tmp_path / "ca.key")
    assert cert.subject.rfc4514_string() == "CN=kmip-bridge dev CA"
    with pytest.raises(pki.CsrError, match="no certificate in"):
        pki.ca_pair(tmp_path / "other.pem", tmp_path / "ca.key")
    with pytest.raises(pki.CsrError, match="no CA key at"):
        pki.ca_pair(bundle, tmp_path / "missing.key")
