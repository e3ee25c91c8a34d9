"""A self-made development PKI: a CA, the server certificate and client certificates.

For development and tests only; production points ``tls:`` at certificates from a real CA.
Private keys are written 0600 and never leave the instance directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
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
    # tls.ca may be a bundle (the dev CA plus an enterprise CA, in any order): the issuer is the
    # certificate that matches the key, not the bundle's first.
    return ca_pair(ca_cert, ca_key)  # type: ignore[return-value]


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


# -- signing an appliance's CSR ---------------------------------------------------------------------
# Appliances (vCenter, storage arrays) make their own key pair and hand over a CSR: the server never
# sees their private key. What the certificate says is decided here, not by the CSR: the subject
# (CN = identity, OU = groups) comes from the operator, and none of the CSR's extensions are copied.

SIGN_DEFAULT_DAYS = 365
SIGN_MAX_DAYS = 825  # the CA/Browser Forum's former ceiling; appliances rarely renew more often
MIN_RSA_BITS = 2048
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


class CsrError(ValueError):
    """A CSR, name or validity the CA refuses to sign; the message says what to fix."""


@dataclass(frozen=True)
class Signed:
    cert: x509.Certificate
    requested_subject: str  # what the CSR asked for (shown to the operator, never used)
    clamped: bool  # not_after cut back to the CA's own expiry


def check_name(kind: str, value: str) -> str:
    """Identity and group names end up in a path (clients/NAME) and in policies: a plain token only."""
    if not _CLIENT_NAME.fullmatch(value):  # the rule certs client applies to names
        raise CsrError(
            f"{kind} '{value}' must be 1-64 letters, digits, '-', '_' or '.', not starting with '.' or '-'"
        )
    return value


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = (x509.load_pem_x509_csr(data) if b"-----BEGIN" in data else x509.load_der_x509_csr(data))
    except ValueError as exc:
        raise CsrError(f"not a certificate signing request (PEM or DER PKCS#10): {exc}") from None
    if not csr.is_signature_valid:
        raise CsrError("the CSR's signature does not verify: it was not made with the private key it carries")
    _check_key(csr.public_key())
    return csr


def _check_key(key: object) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise CsrError(f"RSA key of {key.key_size} bits is too weak: at least {MIN_RSA_BITS} bits")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _CURVES):
            raise CsrError(f"EC curve {key.curve.name} is not accepted: use P-256, P-384 or P-521")
    elif not isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        raise CsrError(f"{type(key).__name__.removesuffix('PublicKey').lstrip('_')} keys are not accepted: "
                       "use RSA (2048+ bits), EC P-256/384/521 or Ed25519")


def ca_pair(ca_bundle: Path, ca_key: Path) -> tuple[x509.Certificate, PrivateKeyTypes]:
    """The CA certificate in ``ca_bundle`` (tls.ca may hold several CAs) that matches ``ca_key``."""
    if not ca_key.exists():
        raise CsrError(f"no CA key at {ca_key}: 'certs sign' signs with the instance's own CA; with an "
                       "enterprise CA in tls.ca, have that CA sign the CSR (docs/operations.md)")
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    want = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for cert in x509.load_pem_x509_certificates(ca_bundle.read_bytes()):
        have = cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        if have == want:
            return cert, key
    raise CsrError(f"no certificate in {ca_bundle} matches the CA key {ca_key}")


def sign_csr(
    ca: x509.Certificate,
    ca_private: PrivateKeyTypes,
    csr: x509.CertificateSigningRequest,
    name: str,
    groups: tuple[str, ...] = (),
    days: int = SIGN_DEFAULT_DAYS,
) -> Signed:
    """A clientAuth certificate for the CSR's (already checked) public key: CN = name, OU = groups."""
    check_name("client name", name)
    for g in groups:
        check_name("group", g)
    if not 1 <= days <= SIGN_MAX_DAYS:
        raise CsrError(f"--days {days}: choose 1 to {SIGN_MAX_DAYS} days")
    now = dt.datetime.now(dt.UTC)
    not_after = now + dt.timedelta(days=days)
    clamped = not_after > ca.not_valid_after_utc
    if clamped:  # a certificate cannot outlive its issuer usefully
        not_after = ca.not_valid_after_utc
    key = csr.public_key()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, name)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, g) for g in groups]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca.subject)
        .public_key(key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=isinstance(key, rsa.RSAPublicKey),
                content_commitment=False, data_encipherment=False, key_agreement=False,
                key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)  # type: ignore[arg-type]
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_private, None if isinstance(ca_private, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
              else hashes.SHA256())  # type: ignore[arg-type]
    )
    return Signed(cert, csr.subject.rfc4514_string(), clamped)


def write_signed(folder: Path, cert: x509.Certificate, ca: x509.Certificate) -> Path:
    """clients/NAME/cert.pem and the issuing CA next to it (what the appliance imports)."""
    if (folder / "key.pem").exists():
        raise CsrError(f"{folder} holds a server-made key ('certs client'): sign the CSR under another name")
    _write_cert(folder / "ca.pem", ca)
    _write_cert(folder / "cert.pem", cert)
    return folder / "cert.pem"
