"""The server's TLS context: mutual TLS, TLS 1.2 minimum, AEAD-only suites on 1.2 unless the
operator chooses the legacy profile or a suite list of their own."""

from __future__ import annotations

import hashlib
import ssl
from pathlib import Path

# ECDHE key exchange with AEAD ciphers only; TLS 1.3 suites are AEAD by definition.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
# tls.profile legacy, for appliances that know nothing newer: the modern suites first (the server's
# preference decides, so capable clients still get them), then AES-CBC with SHA-256 over ECDHE and
# over plain RSA key exchange (no forward secrecy: needs an RSA server certificate), and AES-GCM
# over RSA key exchange. Off by default; warned at start-up.
LEGACY_TLS12_CIPHERS = (
    TLS12_CIPHERS + ":ECDHE+AES+SHA256:AES256-GCM-SHA384:AES128-GCM-SHA256:AES256-SHA256:AES128-SHA256"
)
PROFILES = {"modern": TLS12_CIPHERS, "legacy": LEGACY_TLS12_CIPHERS}


def server_context(
    ca: Path, cert: Path, key: Path, min_version: str = "1.2", crl: Path | None = None,
    profile: str = "modern", ciphers: str | None = None,
) -> ssl.SSLContext:
    """``ciphers`` (an OpenSSL cipher string for TLS 1.2) replaces the ``profile``'s suites."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(ca))
    if crl is not None:
        # Client certificates are checked against the CA's revocation list (leaf only: the
        # CA is the trust anchor itself).
        ctx.load_verify_locations(cafile=str(crl))
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    ctx.set_ciphers(ciphers or PROFILES[profile])
    # What the context trusts and presents: session-ticket keys are derived from it (tickets.py),
    # so a new CRL or certificate also ends every session resumed under the old ones — a client
    # revoked by SIGHUP must do a full handshake, where the CRL is checked.
    digest = hashlib.sha256()
    for path in (ca, cert, crl):
        if path is not None:
            digest.update(path.read_bytes())
    ctx.material_digest = digest.digest()  # type: ignore[attr-defined]
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    return ctx
