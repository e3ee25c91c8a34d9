"""How an open stream is written to the database: sealed under a key derived from its
Correlation Value, which the database never sees.

The Correlation Value is 16 random bytes handed to the client only. HKDF turns it into the row's
id and an AES-256-GCM key; neither can be turned back into it, so the database file (or a
PostgreSQL dump) alone cannot open a stream, and nothing the server keeps can either once the
client forgets the value. The AAD binds the ciphertext to the row id, its owner and operation: a
sealed blob copied to another row, or a row whose owner was rewritten, does not open. No Key HSM
call per part: a stream is short-lived client input, not a managed object under a KEK.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
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


def _aad(sid: str, owner: str, operation: int) -> bytes:
    return json.dumps(["kmip-bridge stream v1", sid, owner, operation]).encode()


def seal(key: bytes, sid: str, owner: str, operation: int, header: dict[str, Any], data: bytes) -> tuple[bytes, bytes]:
    """(nonce, ciphertext) of the stream's header (its state, JSON) followed by its input."""
    head = json.dumps(_encode(header), separators=(",", ":")).encode()
    nonce = os.urandom(12)  # a random nonce per write: a stream is written at most a few thousand times
    return nonce, AESGCM(key).encrypt(nonce, struct.pack(">I", len(head)) + head + data, _aad(sid, owner, operation))


def unseal(
    key: bytes, sid: str, owner: str, operation: int, nonce: bytes, sealed: bytes
) -> tuple[dict[str, Any], bytes]:
    """The header and input of a sealed stream; cryptography's InvalidTag if it was tampered with."""
    plain = AESGCM(key).decrypt(nonce, sealed, _aad(sid, owner, operation))
    (size,) = struct.unpack(">I", plain[:4])
    return _decode(json.loads(plain[4 : 4 + size])), plain[4 + size :]


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
