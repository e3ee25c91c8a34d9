"""Encrypt and Decrypt with a stored key: symmetric ciphers (see ciphers.py) and RSA (OAEP,
PKCS#1 v1.5), one-shot or multi-part (Init Indicator / Correlation Value / Final Indicator)."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import padding, rsa
from kmip.core.enums import (
    CryptographicUsageMask,
    HashingAlgorithm,
    ObjectType,
    Operation,
    PaddingMethod,
    ResultReason,
)
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.errors import KmipError
from ..protocol.ttlv import Item
from . import ciphers, keyuse, streams
from .context import RequestContext
from .keyuse import KeyUse, Params

_O = ObjectType
_ENCRYPT_TYPES = frozenset({_O.SYMMETRIC_KEY.value, _O.PUBLIC_KEY.value})
_DECRYPT_TYPES = frozenset({_O.SYMMETRIC_KEY.value, _O.PRIVATE_KEY.value})


@keyuse.guarded
def encrypt(ctx: RequestContext, payload: Item) -> Item:
    return _run(ctx, payload, encrypting=True)


@keyuse.guarded
def decrypt(ctx: RequestContext, payload: Item) -> Item:
    return _run(ctx, payload, encrypting=False)


def _run(ctx: RequestContext, payload: Item, encrypting: bool) -> Item:
    op = Operation.ENCRYPT.value if encrypting else Operation.DECRYPT.value
    p, stream = streams.start(ctx, payload, op)
    use = keyuse.prepare(
        ctx,
        payload,
        uid=stream.uid if stream else None,
        types=_ENCRYPT_TYPES if encrypting else _DECRYPT_TYPES,
        usage=(CryptographicUsageMask.ENCRYPT if encrypting else CryptographicUsageMask.DECRYPT).value,
        protect=encrypting,
    )
    if stream is None:  # a first part fixes the parameters for the whole stream
        stream = streams.new(ctx, op, use.uid, params=use.params)
    else:
        use.params = stream.state["params"]  # type: ignore[assignment]
    chunk = keyuse.data(payload, required=p.correlation is None)
    streams.feed(ctx, stream, chunk)
    amount = keyuse.check_limits(use, len(chunk), first=p.correlation is None)
    extra: list[Item] = []
    if use.row.object_type == _O.SYMMETRIC_KEY.value:
        out, tag = _symmetric(ctx, use, payload, stream, p.final, encrypting, extra)
    else:
        out, tag = (_rsa(ctx, use, bytes(stream.data), encrypting) if p.final else b""), None
    piece, stream.sent = out[stream.sent :], len(out)
    body = [ttlv.text(T.UNIQUE_IDENTIFIER, use.uid)]
    # Data is optional in the 1.3+ response: a part of a stream that yields no output yet (a
    # block held back, RSA before the final part) carries none. A one-part request always does
    # (1.0-1.2 require it, even empty).
    if piece or not p.streamed:
        body.append(ttlv.bytes_(T.DATA, piece))
    body += extra
    keyuse.consume(ctx, use, amount)  # every part, before the stream is kept for the next one
    body += streams.finish(ctx, p, stream)
    if tag is not None:
        body.append(ttlv.bytes_(T.AUTHENTICATED_ENCRYPTION_TAG, tag))
    ctx.id_placeholder = use.uid
    return ttlv.struct_(T.RESPONSE_PAYLOAD, body)


def _symmetric(
    ctx: RequestContext, use: KeyUse, payload: Item, stream: streams.Stream, final: bool, encrypting: bool,
    extra: list[Item],
) -> tuple[bytes, bytes | None]:
    key = keyuse.symmetric_bytes(ctx, use)
    try:
        spec = stream.state.get("spec")
        if spec is None:
            iv = payload.value_of(T.IV_COUNTER_NONCE.value)
            aad = payload.value_of(T.AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA.value, b"")
            if not isinstance(iv, bytes | None) or not isinstance(aad, bytes):
                raise KmipError(ResultReason.INVALID_FIELD, "IV/Counter/Nonce and additional data are bytes")
            spec, generated = ciphers.resolve(ctx, use.algorithm, use.params, iv, aad, encrypting)
            if spec.aead and ctx.version < (1, 4):
                # Authenticated Encryption Tag / Additional Data are KMIP 1.4 fields: an earlier
                # version has no way to carry the tag, so the mode is refused, never half-done.
                raise keyuse.unsupported(ctx, "authenticated encryption (GCM, ChaCha20-Poly1305) needs "
                                              "KMIP 1.4 or later: earlier versions cannot carry its tag")
            stream.state["spec"] = spec
            if generated:
                extra.append(ttlv.bytes_(T.IV_COUNTER_NONCE, spec.iv))  # type: ignore[arg-type]
        if encrypting:
            return ciphers.encrypt(key, spec, bytes(stream.data), final)  # type: ignore[arg-type]
        tag = payload.value_of(T.AUTHENTICATED_ENCRYPTION_TAG.value)
        return ciphers.decrypt(key, spec, bytes(stream.data), tag, final), None  # type: ignore[arg-type]
    finally:
        del key  # no reference to the plaintext key outlives the request


def _rsa_padding(ctx: RequestContext, params: Params) -> padding.AsymmetricPadding:
    method = params.padding_method if params.padding_method is not None else PaddingMethod.OAEP.value
    if method == PaddingMethod.PKCS1v15.value:
        return padding.PKCS1v15()
    if method != PaddingMethod.OAEP.value:
        raise keyuse.unsupported(ctx, "RSA encryption takes Padding Method OAEP or PKCS1 v1.5")
    # PKCS #1 defaults: SHA-1; MGF1 uses the OAEP hash unless told otherwise.
    digest = params.hashing_algorithm if params.hashing_algorithm is not None else HashingAlgorithm.SHA_1.value
    mgf = keyuse.hash_for(ctx, params.mask_generator_hashing_algorithm, digest)
    return padding.OAEP(padding.MGF1(mgf), keyuse.hash_for(ctx, digest), params.p_source or None)


def _rsa(ctx: RequestContext, use: KeyUse, data: bytes, encrypting: bool) -> bytes:
    pad = _rsa_padding(ctx, use.params)
    if encrypting:
        public = keyuse.public_key(ctx, use)
        if not isinstance(public, rsa.RSAPublicKey):
            raise keyuse.unsupported(ctx, "only RSA public keys encrypt")
        try:
            return public.encrypt(data, pad)
        except ValueError as exc:
            raise KmipError(ResultReason.INVALID_FIELD, "the data is too long for this key and padding") from exc
    private = keyuse.private_key(ctx, use)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise keyuse.unsupported(ctx, "only RSA private keys decrypt")
    try:
        return private.decrypt(data, pad)
    except ValueError as exc:
        raise keyuse.crypto_failure("RSA decryption failed") from exc
    finally:
        del private
