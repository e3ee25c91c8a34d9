"""Identity from a verified client certificate: subject CN is the name, OUs are the groups."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class IdentityError(ValueError):
    pass


@dataclass(frozen=True)
class Identity:
    name: str
    groups: frozenset[str] = frozenset()


def identity_from_certificate(der: bytes) -> Identity:
    """Raises IdentityError when the certificate cannot identify a client: it must be an end
    entity (not CA:TRUE), carry the clientAuth extended key usage (OpenSSL's check at the
    handshake lets a certificate without any EKU, or a CA certificate, through) and name exactly
    one non-empty subject CN (with several, which one is "the" identity is anybody's guess)."""
    cert = x509.load_der_x509_certificate(der)
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        basic = None
    if basic is not None and basic.ca:
        raise IdentityError("client certificate is a CA certificate (basicConstraints CA:TRUE)")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise IdentityError("client certificate has no extended key usage (clientAuth is required)") from None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise IdentityError("client certificate is not valid for clientAuth")
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) > 1:
        raise IdentityError(f"client certificate subject has {len(cns)} common names (exactly one is required)")
    if not cns or not str(cns[0].value).strip():
        raise IdentityError("client certificate has no subject common name")
    groups = frozenset(
        str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    )
    return Identity(name=str(cns[0].value), groups=groups)
