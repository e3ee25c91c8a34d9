"""A self-made development PKI: a CA, the server certificate and client certificates.

For development and tests only; production points ``tls:`` at certificates from a real CA.
Private keys are written 0600 and never leave the instance directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=825)
# A client name is a folder name under clients/ and a certificate CN (at most 64 characters,
# RFC 5280 ub-common-name): plain ASCII, no path separators, not starting with a dot.
_CLIENT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_MAX_OU = 64  # RFC 5280 ub-organizational-unit-name


class CertNameError(ValueError):
    """A client name or group that cannot become a certificate subject (or a folder)."""


def check_client_name(name: str) -> str:
    if not _CLIENT_NAME.fullmatch(name):
        shown = name if len(name) <= 80 and name.isprintable() else repr(name[:80]) + "..."
        raise CertNameError(
            f"client name '{shown}': use 1-64 characters among letters, digits, '-', '_' and '.', "
            "not starting with '.'"
        )
    return name


def check_group(group: str) -> str:
    if not group or len(group) > _MAX_OU or not group.isprintable() or group != group.strip():
        shown = group if len(group) <= 80 and group.isprintable() else repr(group[:80]) + "..."
        raise CertNameError(
            f"group '{shown}': use 1-{_MAX_OU} printable characters without leading or trailing spaces"
        )
    return group


def client_groups(cert_path: Path) -> tuple[str, ...]:
    """The groups (OUs) of an issued client certificate, sorted."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return tuple(sorted(str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)))


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _load(ca_cert: Path, ca_key: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    return cert, key  # type: ignore[return-value]


def make_ca(cert_path: Path, key_path: Path, name: str = "kmip-bridge dev CA") -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, key)
    _write_cert(cert_path, cert)


def issue(
    ca_cert: Path,
    ca_key: Path,
    cert_path: Path,
    key_path: Path,
    common_name: str,
    *,
    server: bool,
    groups: tuple[str, ...] = (),
    hosts: tuple[str, ...] = (),
) -> None:
    ca, ca_private = _load(ca_cert, ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, g) for g in groups]
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for h in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                names.append(x509.DNSName(h))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_private, hashes.SHA256())
    _write_private(key_path, key)
    _write_cert(cert_path, cert)


def revoke(ca_cert: Path, ca_key: Path, cert_path: Path, crl_path: Path) -> None:
    """Adds a certificate to the CA's CRL (``crl_path``, created if absent), keeping earlier entries."""
    ca, ca_private = _load(ca_cert, ca_key)
    serial = x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=30))
    )
    serials = {serial}
    if crl_path.exists():
        for entry in x509.load_pem_x509_crl(crl_path.read_bytes()):
            if entry.serial_number not in serials:
                builder = builder.add_revoked_certificate(entry)
    builder = builder.add_revoked_certificate(
        x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
    )
    crl = builder.sign(ca_private, hashes.SHA256())
    crl_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
