"""The CRL read for per-request revocation checks: only CRLs signed by a CA of tls.ca count."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from kmip_bridge.admin import pki
from kmip_bridge.policy.revocation import RevocationError, revoked_serials


def _ca(tmp: Path, name: str) -> tuple[Path, Path]:
    pki.make_ca(tmp / f"{name}.pem", tmp / f"{name}.key", name=name)
    return tmp / f"{name}.pem", tmp / f"{name}.key"


def _client(tmp: Path, ca: tuple[Path, Path], name: str) -> Path:
    pki.issue(*ca, tmp / f"{name}.crt", tmp / f"{name}.k", name, server=False)
    return tmp / f"{name}.crt"


def test_revoked_serials_of_the_cas_crl(tmp_path: Path) -> None:
    ca = _ca(tmp_path, "ca")
    eve, bob = _client(tmp_path, ca, "eve"), _client(tmp_path, ca, "bob")
    crl = tmp_path / "crl.pem"
    pki.revoke(*ca, eve, crl)
    serial = x509.load_pem_x509_certificate(eve.read_bytes()).serial_number
    assert revoked_serials(ca[0], crl) == {serial}
    assert x509.load_pem_x509_certificate(bob.read_bytes()).serial_number not in revoked_serials(ca[0], crl)
    assert revoked_serials(ca[0], None) == frozenset()


def test_a_crl_of_another_ca_is_refused(tmp_path: Path) -> None:
    ca, other = _ca(tmp_path, "ca"), _ca(tmp_path, "other")
    crl = tmp_path / "crl.pem"
    pki.revoke(*other, _client(tmp_path, other, "x"), crl)
    with pytest.raises(RevocationError, match=r"not signed by a CA of tls\.ca"):
        revoked_serials(ca[0], crl)
    (tmp_path / "junk.pem").write_text("not a crl")
    with pytest.raises(RevocationError, match="holds no PEM CRL"):
        revoked_serials(ca[0], tmp_path / "junk.pem")
