"""The software half of the envelope: the sealed record, its AADs, AES-256-GCM under the DEK.

Two record formats exist (``Sealed.format``, stored per row):

1. the material's AAD and the DEK wrap's AAD are the same and bind object id, KEK label, KEK kind
   and context. Moving such an object to another KEK means re-encrypting the material.
2. (current) the material's AAD binds the object alone (id, context); the DEK wrap binds the object
   *and* the KEK. A KEK rotation then rewraps only the DEK and the material ciphertext stays as it
   is, while a wrapped DEK or a whole record moved to another row still fails.

Format-1 records keep opening; `keyhsm rewrap` converts them once, by re-sealing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import mechanisms, per_object
from .errors import IntegrityError
from .kek import parse_label

DOMAIN = b"kmip-bridge/1"  # format 1: one AAD for material and wrap
DOMAIN_2 = b"kmip-bridge/2"
FORMAT_1 = 1
FORMAT_2 = 2
FORMATS = (FORMAT_1, FORMAT_2)
CURRENT_FORMAT = FORMAT_2
DEK_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


@dataclass(frozen=True)
class Sealed:
    kek_label: str  # e.g. "default-v1"
    kek_kind: str  # the wrap mechanism's name (mechanisms.ALL), e.g. "aes-gcm"; column kek_kind
    nonce: bytes  # AES-GCM nonce for the material
    ciphertext: bytes  # AES-256-GCM(material) incl. tag
    wrapped_dek: bytes  # DEK wrapped by the KEK
    wrap_nonce: bytes  # IV of an on-token AES-GCM wrap of the DEK (b"" for the others)
    format: int  # FORMAT_1 or FORMAT_2: which AADs bind the record (see the module docstring)


def _fields(*parts: bytes) -> bytes:
    """Length-prefixed fields, so no two different tuples encode alike."""
    out = bytearray()
    for part in parts:
        out += len(part).to_bytes(4, "big") + part
    return bytes(out)


def aad(object_id: str, kek_label: str, kek_kind: str, context: str) -> bytes:
    """Format 1: the one AAD of both the material and the DEK wrap."""
    return _fields(DOMAIN, object_id.encode(), kek_label.encode(), kek_kind.encode(), context.encode())


def material_aad(object_id: str, context: str) -> bytes:
    """Format 2: the material is bound to its object, not to the KEK that wraps its DEK."""
    return _fields(DOMAIN_2, b"material", object_id.encode(), context.encode())


def wrap_aad(object_id: str, kek_label: str, kek_kind: str, context: str) -> bytes:
    """Format 2: the wrapped DEK is bound to its object and to the KEK version that wraps it."""
    return _fields(DOMAIN_2, b"dek-wrap", object_id.encode(), kek_label.encode(), kek_kind.encode(), context.encode())


def material_aad_of(sealed: Sealed, object_id: str, context: str) -> bytes:
    if sealed.format == FORMAT_1:
        return aad(object_id, sealed.kek_label, sealed.kek_kind, context)
    return material_aad(object_id, context)


def wrap_aad_of(sealed: Sealed, object_id: str, context: str) -> bytes:
    if sealed.format == FORMAT_1:
        return aad(object_id, sealed.kek_label, sealed.kek_kind, context)
    return wrap_aad(object_id, sealed.kek_label, sealed.kek_kind, context)


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
    if sealed.format not in FORMATS:
        raise IntegrityError(f"sealed record has an unknown envelope format ({sealed.format!r})")
    mech = None if per_object.is_per_object(sealed.kek_kind) else mechanisms.get(sealed.kek_kind)
    if per_object.is_per_object(sealed.kek_kind):
        if per_object.parse_label(sealed.kek_label) is None:
            raise IntegrityError(f"sealed record names an invalid per-object key ({sealed.kek_label!r})")
    elif mech is None or parse_label(sealed.kek_label) is None:
        raise IntegrityError(
            f"sealed record names an invalid KEK or wrap mechanism ({sealed.kek_label!r}, {sealed.kek_kind!r})"
        )
    if mech is None:  # a per-object key: AES-GCM on the token, binding as AAD
        wrap_nonce_len = NONCE_BYTES
    else:
        if sealed.format == FORMAT_1 and mech.writes:
            # Format 1 predates the mechanism names: such a row can only carry a former kind name.
            raise IntegrityError(f"sealed record claims envelope format 1 with mechanism {sealed.kek_kind!r}")
        wrap_nonce_len = mech.nonce_bytes
    if (
        len(sealed.nonce) != NONCE_BYTES
        or len(sealed.ciphertext) < TAG_BYTES
        or len(sealed.wrap_nonce) != wrap_nonce_len
        or not sealed.wrapped_dek
    ):
        raise IntegrityError("sealed record is malformed (truncated or tampered with)")
