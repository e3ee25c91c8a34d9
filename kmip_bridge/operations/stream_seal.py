"""How an open stream is written to the database: sealed under a key derived from its
Correlation Value, which the database never sees.

The Correlation Value is 16 random bytes handed to the client only. HKDF turns it into the row's
id and an AES-256-GCM key; neither can be turned back into it, so the database file (or a
PostgreSQL dump) alone cannot open a stream, and nothing the server keeps can either once the
client forgets the value. The AAD binds the header to the row id, its owner and operation, and
each chunk of input to the row id and its place: a sealed blob copied to another row or place, or
a row whose owner was rewritten, does not open; the header records how many chunks and bytes the
input has, so a chunk removed is noticed too. No Key HSM call per part: a stream is short-lived
client input, not a managed object under a KEK.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .ciphers import Spec
from .keyuse import Params

CORRELATION_BYTES = 16
_INFO_ID, _INFO_KEY = b"kmip-bridge stream id v1", b"kmip-bridge stream key v1"
# The dataclasses a stream's state may hold (operation parameters, a cipher's IV and AAD).
_TYPES: dict[str, type] = {"Params": Params, "Spec": Spec}


def _hkdf(correlation: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(correlation)


def derive(correlation: bytes) -> tuple[str, bytes]:
    """(row id, sealing key) of the stream with this Correlation Value."""
    return _hkdf(correlation, _INFO_ID).hex(), _hkdf(correlation, _INFO_KEY)


def _aad(*parts: object) -> bytes:
    return json.dumps(["kmip-bridge stream v1", *parts]).encode()


def seal(key: bytes, sid: str, owner: str, operation: int, header: dict[str, Any]) -> tuple[bytes, bytes]:
    """(nonce, ciphertext) of a stream's header: its state (parameters, IV, AAD, output sent...)."""
    head = json.dumps(_encode(header), separators=(",", ":")).encode()
    nonce = os.urandom(12)  # random per write: a stream is written a few thousand times at most
    return nonce, AESGCM(key).encrypt(nonce, head, _aad("header", sid, owner, operation))


def unseal(key: bytes, sid: str, owner: str, operation: int, nonce: bytes, sealed: bytes) -> dict[str, Any]:
    """The header of a sealed stream; cryptography's InvalidTag if it was altered or moved."""
    return _decode(json.loads(AESGCM(key).decrypt(nonce, sealed, _aad("header", sid, owner, operation))))


def seal_chunk(key: bytes, sid: str, seq: int, data: bytes) -> tuple[bytes, bytes]:
    """(nonce, ciphertext) of a piece of a stream's input, bound to its place in the stream."""
    nonce = os.urandom(12)
    return nonce, AESGCM(key).encrypt(nonce, data, _aad("chunk", sid, seq))


def unseal_chunk(key: bytes, sid: str, seq: int, nonce: bytes, sealed: bytes) -> bytes:
    return AESGCM(key).decrypt(nonce, sealed, _aad("chunk", sid, seq))


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$b": value.hex()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        name = type(value).__name__
        assert _TYPES.get(name) is type(value), f"stream state cannot hold {name}"
        return {"$t": name, **{f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "$b" in value:
            return bytes.fromhex(value["$b"])
        fields = {k: _decode(v) for k, v in value.items() if k != "$t"}
        return _TYPES[value["$t"]](**fields) if "$t" in value else fields
    return value
