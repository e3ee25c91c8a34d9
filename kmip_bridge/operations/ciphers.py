"""Symmetric encryption for Encrypt/Decrypt: AES and 3DES in ECB, CBC, CTR and GCM, ChaCha20 and
ChaCha20-Poly1305, with `cryptography` as the primitive layer.

Functions always process a stream's whole accumulated input and the caller returns the part of
the output not yet sent, so a multi-part operation never needs a live cipher context (which would
hold the expanded key between requests). For a part that is not final only the prefix whose output
cannot change is processed: whole blocks for ECB/CBC (one held back when decrypting with padding),
everything for the stream-like modes.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from kmip.core.enums import BlockCipherMode, CryptographicAlgorithm, PaddingMethod, ResultReason

from ..protocol.errors import KmipError
from .context import RequestContext
from .keyuse import Params, crypto_failure, unsupported

_A, _M, _P = CryptographicAlgorithm, BlockCipherMode, PaddingMethod
_BLOCK_CIPHERS = {_A.AES.value: (algorithms.AES, 16), _A.TRIPLE_DES.value: (TripleDES, 8)}
_BLOCK_MODES = {_M.ECB.value, _M.CBC.value, _M.CTR.value, _M.GCM.value}
_PADDINGS = {_P.PKCS5.value: padding.PKCS7, _P.ANSI_X923.value: padding.ANSIX923}
# Authentication tag lengths (bytes) NIST SP 800-38D allows; others are refused as the vectors expect.
TAG_LENGTHS = frozenset({4, 8, 12, 13, 14, 15, 16})


@dataclass(frozen=True)
class Spec:
    algorithm: int
    mode: int | None
    padding: int
    iv: bytes | None
    aad: bytes
    tag_length: int

    @property
    def aead(self) -> bool:
        return self.mode == _M.GCM.value or self.algorithm == _A.CHACHA20_POLY1305.value

    @property
    def block_size(self) -> int:
        return _BLOCK_CIPHERS[self.algorithm][1] if self.algorithm in _BLOCK_CIPHERS else 1


def _iv_size(algorithm: int, mode: int | None) -> int:
    """Length of a server-generated IV/nonce; 0 when the mode takes none."""
    if algorithm in _BLOCK_CIPHERS:
        return {_M.CBC.value: _BLOCK_CIPHERS[algorithm][1], _M.CTR.value: _BLOCK_CIPHERS[algorithm][1],
                _M.GCM.value: 12}.get(mode, 0)  # type: ignore[arg-type]
    return 12  # ChaCha20 (RFC 8439 nonce) and ChaCha20-Poly1305


def resolve(
    ctx: RequestContext, algorithm: int | None, params: Params, iv: bytes | None, aad: bytes, encrypt: bool
) -> tuple[Spec, bool]:
    """The operation's Spec and whether its IV was generated here (it is then returned)."""
    mode = params.block_cipher_mode
    if algorithm in _BLOCK_CIPHERS:
        if mode not in _BLOCK_MODES:
            raise unsupported(ctx, "a Block Cipher Mode of ECB, CBC, CTR or GCM is required")
    elif algorithm == _A.CHACHA20.value or algorithm == _A.CHACHA20_POLY1305.value:
        if mode not in (None, _M.AEAD.value) or (mode == _M.AEAD.value and algorithm == _A.CHACHA20.value):
            raise unsupported(ctx, "ChaCha20 takes no Block Cipher Mode (AEAD for ChaCha20-Poly1305)")
    else:
        raise unsupported(ctx, "the key's Cryptographic Algorithm cannot be used for Encrypt/Decrypt")
    pad = params.padding_method if params.padding_method is not None else _P.NONE.value
    if pad != _P.NONE.value and (pad not in _PADDINGS or mode not in (_M.ECB.value, _M.CBC.value)):
        raise unsupported(ctx, "Padding Method must be None, or PKCS5/ANSI X9.23 with ECB/CBC")
    tag_length = params.tag_length if params.tag_length is not None else 16
    aead = mode == _M.GCM.value or algorithm == _A.CHACHA20_POLY1305.value
    if aead and tag_length not in TAG_LENGTHS:
        raise KmipError(ResultReason.GENERAL_FAILURE, f"invalid Tag Length {tag_length}")
    if algorithm == _A.CHACHA20_POLY1305.value and iv is not None and len(iv) != 12:
        raise KmipError(ResultReason.INVALID_FIELD, "a ChaCha20-Poly1305 nonce is 12 bytes")
    generated = False
    size = _iv_size(algorithm, mode)  # type: ignore[arg-type]
    if size and iv is None:
        if not encrypt:
            raise KmipError(ResultReason.INVALID_MESSAGE, "missing IV/Counter/Nonce")
        # An explicit IV is honoured; otherwise (and for Random IV) the server draws one.
        iv, generated = secrets.token_bytes(size), True
    return Spec(algorithm, mode, pad, iv if size else None, aad, tag_length), generated  # type: ignore[arg-type]


def _chacha_nonce(iv: bytes, counter: int) -> bytes:
    """OpenSSL's 16-byte ChaCha20 IV (little-endian counter, then nonce) from the client's nonce:
    8 bytes is the original 64-bit-nonce variant, 12 bytes RFC 8439, 16 bytes taken as is."""
    if len(iv) == 8:
        return counter.to_bytes(8, "little") + iv
    if len(iv) == 12:
        return counter.to_bytes(4, "little") + iv
    if len(iv) == 16:
        return iv
    raise KmipError(ResultReason.INVALID_FIELD, "a ChaCha20 nonce is 8, 12 or 16 bytes")


def _cipher(spec: Spec, key: bytes, tag: bytes | None = None) -> Cipher:  # type: ignore[type-arg]
    try:
        if spec.algorithm == _A.CHACHA20.value:
            return Cipher(algorithms.ChaCha20(key, _chacha_nonce(spec.iv, 0)), None)  # type: ignore[arg-type]
        if spec.algorithm == _A.CHACHA20_POLY1305.value:  # the keystream after Poly1305's block 0
            return Cipher(algorithms.ChaCha20(key, (1).to_bytes(4, "little") + spec.iv), None)  # type: ignore[operator]
        alg = _BLOCK_CIPHERS[spec.algorithm][0](key)
        mode: modes.Mode
        if spec.mode == _M.ECB.value:
            mode = modes.ECB()
        elif spec.mode == _M.CBC.value:
            mode = modes.CBC(spec.iv)  # type: ignore[arg-type]
        elif spec.mode == _M.CTR.value:
            mode = modes.CTR(spec.iv)  # type: ignore[arg-type]
        else:
            mode = modes.GCM(spec.iv, tag, min_tag_length=len(tag) if tag else 16)  # type: ignore[arg-type]
        return Cipher(alg, mode)
    except ValueError as exc:
        raise KmipError(
            ResultReason.INVALID_FIELD, "the key or IV/Counter/Nonce length does not suit the algorithm and mode"
        ) from exc


def _blocks(spec: Spec, data: bytes, final: bool, hold_back: bool) -> bytes:
    """The processable input of an ECB/CBC operation."""
    bs = spec.block_size
    if final:
        if len(data) % bs and (spec.padding == _P.NONE.value or hold_back):
            raise KmipError(ResultReason.INVALID_FIELD, f"the data is not a multiple of the {bs}-byte block")
        return data
    n = len(data) - len(data) % bs
    if hold_back and n == len(data) and n:
        n -= bs  # the last block may be the padding; it is only undone with the final part
    return data[:n]


def encrypt(key: bytes, spec: Spec, data: bytes, final: bool = True) -> tuple[bytes, bytes | None]:
    """Ciphertext of ``data`` (and the tag when final and authenticated)."""
    if spec.algorithm == _A.CHACHA20_POLY1305.value:
        sealed = ChaCha20Poly1305(key).encrypt(spec.iv, data, spec.aad or None)  # type: ignore[arg-type]
        return sealed[:-16], sealed[-16:][: spec.tag_length] if final else None
    block = spec.mode in (_M.ECB.value, _M.CBC.value)
    if block:
        data = _blocks(spec, data, final, hold_back=False)
        if final and spec.padding != _P.NONE.value:
            padder = _PADDINGS[spec.padding](spec.block_size * 8).padder()
            data = padder.update(data) + padder.finalize()
    enc = _cipher(spec, key).encryptor()
    if spec.mode == _M.GCM.value and spec.aad:
        enc.authenticate_additional_data(spec.aad)
    out = enc.update(data)
    if not final:
        return out, None
    out += enc.finalize()
    return out, enc.tag[: spec.tag_length] if spec.mode == _M.GCM.value else None  # type: ignore[attr-defined]


def decrypt(key: bytes, spec: Spec, data: bytes, tag: bytes | None, final: bool = True) -> bytes:
    """Plaintext of ``data``; a wrong tag or padding is a Cryptographic Failure."""
    if final and spec.aead:
        if tag is None:
            raise KmipError(ResultReason.MISSING_DATA, "missing Authenticated Encryption Tag")
        if len(tag) not in TAG_LENGTHS:
            raise KmipError(ResultReason.GENERAL_FAILURE, f"invalid tag length {len(tag)}")
    padded = spec.padding != _P.NONE.value
    if spec.mode in (_M.ECB.value, _M.CBC.value):
        data = _blocks(spec, data, final, hold_back=padded)
    use_tag = tag if final and spec.mode == _M.GCM.value else None
    dec = _cipher(spec, key, use_tag).decryptor()
    if spec.mode == _M.GCM.value and spec.aad:
        dec.authenticate_additional_data(spec.aad)
    out = dec.update(data)
    if not final:
        return out
    try:
        out += dec.finalize()
        if spec.algorithm == _A.CHACHA20_POLY1305.value:
            # Recomputing the tag also checks a truncated one, which the AEAD API cannot.
            expected = ChaCha20Poly1305(key).encrypt(spec.iv, out, spec.aad or None)[-16:]  # type: ignore[arg-type]
            if not hmac.compare_digest(expected[: len(tag)], tag):  # type: ignore[arg-type]
                raise InvalidTag()
        if padded:
            unpadder = _PADDINGS[spec.padding](spec.block_size * 8).unpadder()
            out = unpadder.update(out) + unpadder.finalize()
    except (InvalidTag, ValueError) as exc:
        raise crypto_failure("decryption failed: wrong key, IV, tag, additional data or padding") from exc
    return out
