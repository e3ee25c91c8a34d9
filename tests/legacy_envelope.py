"""Envelope format 1, as kmip-bridge wrote it before migration 0004, so that tests can make the
old-format rows a real database may still hold: one AAD (object id, KEK label, KEK kind, context)
binds both the material and the DEK wrap; rsa-oaep wraps the bare DEK. Test code only."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11 import Mechanism
from pkcs11.mechanisms import GCMParams

from kmip_bridge.keyhsm import AES_KWP, KeyHsm, Sealed, envelope
from kmip_bridge.keyhsm.hsm import _OAEP_SOFTWARE


def seal_v1(hsm: KeyHsm, object_id: str, material: bytes, context: str = "", kek_name: str | None = None) -> Sealed:
    info = hsm.current_kek(kek_name)
    associated = envelope.aad(object_id, info.label, info.kind, context)
    dek = os.urandom(32)
    nonce = os.urandom(12)
    ciphertext = AESGCM(dek).encrypt(nonce, material, associated)
    if info.kind == AES_KWP:
        wrap_nonce = os.urandom(12)
        params = GCMParams(wrap_nonce, associated)
        wrapped = hsm._on_token(
            info.label, info.kind, "wrapping a data key",
            lambda key: key.encrypt(dek, mechanism=Mechanism.AES_GCM, mechanism_param=params),
        )
    else:
        wrap_nonce = b""
        wrapped = hsm._rsa_public(info.label).encrypt(dek, _OAEP_SOFTWARE)
    return Sealed(info.label, info.kind, nonce, ciphertext, wrapped, wrap_nonce, envelope.FORMAT_1)
