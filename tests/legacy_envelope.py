"""Rows as kmip-bridge wrote them before, so that tests can make the old rows a real database may
still hold. Envelope format 1 (before migration 0004): one AAD (object id, KEK label, KEK kind,
context) binds both the material and the DEK wrap; rsa-oaep wraps the bare DEK. Format 2 before
the mechanism choice: kek_kind "aes-kwp" (AES-GCM, host IV) or "rsa-oaep" (OAEP SHA-1, DEK||binding).
Test code only."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmip_bridge.keyhsm import AES, KeyHsm, Sealed, envelope, mechanisms

LEGACY = {AES: mechanisms.LEGACY_AES_KWP, "rsa": mechanisms.LEGACY_RSA_OAEP}


def _wrap(hsm: KeyHsm, label: str, kind: str, dek_or_bound: bytes, associated: bytes) -> tuple[bytes, bytes]:
    m = LEGACY[kind]
    if kind == AES:
        return hsm._on_token(label, kind, "wrapping", lambda key: mechanisms.aes_wrap(m, key, dek_or_bound, associated))
    return hsm._rsa_public(label).encrypt(dek_or_bound, mechanisms._oaep(m)[0]), b""


def seal_v1(hsm: KeyHsm, object_id: str, material: bytes, context: str = "", kek_name: str | None = None) -> Sealed:
    info = hsm.current_kek(kek_name)
    name = LEGACY[info.kind].name
    associated = envelope.aad(object_id, info.label, name, context)
    dek = os.urandom(32)
    nonce = os.urandom(12)
    ciphertext = AESGCM(dek).encrypt(nonce, material, associated)
    wrapped, wrap_nonce = _wrap(hsm, info.label, info.kind, dek, associated)
    return Sealed(info.label, name, nonce, ciphertext, wrapped, wrap_nonce, envelope.FORMAT_1)


def seal_v2_legacy_kind(
    hsm: KeyHsm, object_id: str, material: bytes, context: str = "", kek_name: str | None = None
) -> Sealed:
    """A format-2 row with the former kind name in kek_kind."""
    info = hsm.current_kek(kek_name)
    name = LEGACY[info.kind].name
    dek = os.urandom(32)
    nonce, ciphertext = envelope.encrypt(dek, material, envelope.material_aad(object_id, context))
    associated = envelope.wrap_aad(object_id, info.label, name, context)
    if info.kind == AES:
        wrapped, wrap_nonce = _wrap(hsm, info.label, info.kind, dek, associated)
    else:
        wrapped, wrap_nonce = _wrap(hsm, info.label, info.kind, dek + mechanisms.binding(associated), b"")
    return Sealed(info.label, name, nonce, ciphertext, wrapped, wrap_nonce, envelope.FORMAT_2)
