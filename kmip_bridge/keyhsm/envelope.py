"""The software half of the envelope: the sealed record, its AAD, AES-256-GCM under the DEK."""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import IntegrityError
from .kek import AES_KWP, KINDS, parse_label

DOMAIN = b"kmip-bridge/1"
DEK_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


@dataclass(frozen=True)
class Sealed:
    kek_label: str  # e.g. "default-v1"
    kek_kind: str  # "aes-kwp" | "rsa-oaep"
    nonce: bytes  # AES-GCM nonce for the material
    ciphertext: bytes  # AES-256-GCM(material) incl. tag
    wrapped_dek: bytes  # DEK wrapped by the KEK
    wrap_nonce: bytes  # IV of the on-token AES-GCM wrap of the DEK (b"" for rsa-oaep)


def aad(object_id: str, kek_label: str, kek_kind: str, context: str) -> bytes:
    """Length-prefixed fields, so no two different tuples encode alike."""
    out = bytearray()
    for part in (DOMAIN, object_id.encode(), kek_label.encode(), kek_kind.encode(), context.encode()):
        out += len(part).to_bytes(4, "big") + part
    return bytes(out)


def new_dek() -> bytes:
    return os.urandom(DEK_BYTES)


def encrypt(dek: bytes, material: bytes, associated: bytes) -> tuple[bytes, bytes]:
    """(nonce, ciphertext with tag)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce, AESGCM(dek).encrypt(nonce, material, associated)


def decrypt(dek: bytes, sealed: Sealed, associated: bytes) -> bytes:
    if len(dek) != DEK_BYTES:
        raise IntegrityError("the wrapped data key does not unwrap to a 256-bit key (tampered with)")
    try:
        return AESGCM(dek).decrypt(sealed.nonce, sealed.ciphertext, associated)
    except InvalidTag:
        raise IntegrityError(
            "sealed material failed its integrity check (tampered with, or moved from another object)"
        ) from None


def validate(sealed: Sealed) -> None:
    """Shape checks before anything touches the token; a stored record is not trusted."""
    if sealed.kek_kind not in KINDS or parse_label(sealed.kek_label) is None:
        raise IntegrityError(
            f"sealed record names an invalid KEK ({sealed.kek_label!r}, {sealed.kek_kind!r})"
        )
    wrap_nonce_len = NONCE_BYTES if sealed.kek_kind == AES_KWP else 0
    if (
        len(sealed.nonce) != NONCE_BYTES
        or len(sealed.ciphertext) < TAG_BYTES
        or len(sealed.wrap_nonce) != wrap_nonce_len
        or not sealed.wrapped_dek
    ):
        raise IntegrityError("sealed record is malformed (truncated or tampered with)")
