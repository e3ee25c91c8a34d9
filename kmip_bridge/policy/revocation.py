"""Revoked client certificates, per request: the serials of ``tls.crl``.

OpenSSL checks the CRL at the handshake only, so a certificate revoked by a CRL reload (SIGHUP)
would keep working on the connections it opened before. The server therefore also checks each
request's peer certificate serial against the current CRL, the way a disabled identity is refused
on open connections (``app.Session``).
"""

from __future__ import annotations

import re
from pathlib import Path

from cryptography import x509

_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.S)


class RevocationError(ValueError):
    pass


def certificate_serial(der: bytes) -> int:
    return x509.load_der_x509_certificate(der).serial_number


def revoked_serials(ca: Path, crl: Path | None) -> frozenset[int]:
    """The serials revoked by the CRL(s) in ``crl`` (PEM), each of which must be signed by a CA of
    ``ca``; an empty set without a CRL. Raises RevocationError (naming the key) otherwise."""
    if crl is None:
        return frozenset()
    try:
        data, cas = crl.read_bytes(), x509.load_pem_x509_certificates(ca.read_bytes())
    except OSError as exc:
        raise RevocationError(f"tls.crl: cannot read {exc.filename}: {exc.strerror}") from None
    blocks = _PEM_CRL.findall(data)
    if not blocks:
        raise RevocationError(f"tls.crl: {crl} holds no PEM CRL")
    serials: set[int] = set()
    for block in blocks:
        try:
            lst = x509.load_pem_x509_crl(block)
        except ValueError as exc:
            raise RevocationError(f"tls.crl: {crl}: not a valid CRL ({exc})") from None
        issuers = [c for c in cas if c.subject == lst.issuer]
        if not any(lst.is_signature_valid(c.public_key()) for c in issuers):  # type: ignore[arg-type]
            raise RevocationError(f"tls.crl: {crl}: a CRL not signed by a CA of tls.ca ({lst.issuer.rfc4514_string()})")
        serials.update(entry.serial_number for entry in lst)
    return frozenset(serials)
