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
    """Raises IdentityError when the certificate cannot identify a client."""
    cert = x509.load_der_x509_certificate(der)
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise IdentityError("client certificate is not valid for clientAuth")
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns or not str(cns[0].value).strip():
        raise IdentityError("client certificate has no subject common name")
    groups = frozenset(
        str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    )
    return Identity(name=str(cns[0].value), groups=groups)
