"""Sign and SignatureVerify: RSA (PKCS#1 v1.5, PSS) and ECDSA, chosen by a Digital Signature
Algorithm or by Cryptographic Algorithm + Padding Method + Hashing Algorithm; over Data (one or
several parts) or over Digested Data (a hash the client computed)."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa, utils, x448, x25519
from kmip.core.enums import (
    CryptographicUsageMask,
    DigitalSignatureAlgorithm,
    HashingAlgorithm,
    ObjectType,
    Operation,
    PaddingMethod,
    ResultReason,
    ValidityIndicator,
)
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.errors import KmipError
from ..protocol.ttlv import Item
from . import keys, keyuse, streams
from .context import RequestContext
from .keyuse import Params

_D, _H, _P = DigitalSignatureAlgorithm, HashingAlgorithm, PaddingMethod
# Digital Signature Algorithm -> (Padding Method or None for ECDSA, Hashing Algorithm or None = from params)
_SCHEMES: dict[int, tuple[int | None, int | None]] = {
    _D.MD5_WITH_RSA_ENCRYPTION.value: (_P.PKCS1v15.value, _H.MD5.value),
    _D.SHA1_WITH_RSA_ENCRYPTION.value: (_P.PKCS1v15.value, _H.SHA_1.value),
    _D.SHA224_WITH_RSA_ENCRYPTION.value: (_P.PKCS1v15.value, _H.SHA_224.value),
    _D.SHA256_WITH_RSA_ENCRYPTION.value: (_P.PKCS1v15.value, _H.SHA_256.value),
    _D.SHA384_WITH_RSA_ENCRYPTION.value: (_P.PKCS1v15.value, _H.SHA_384.value),
    _D.SHA512_WITH_RSA_ENCRYPTION.value: (_P.PKCS1v15.value, _H.SHA_512.value),
    _D.SHA3_256_WITH_RSA_ENCRYPTION.value: (_P.PKCS1v15.value, _H.SHA3_256.value),
    _D.SHA3_384_WITH_RSA_ENCRYPTION.value: (_P.PKCS1v15.value, _H.SHA3_384.value),
    _D.SHA3_512_WITH_RSA_ENCRYPTION.value: (_P.PKCS1v15.value, _H.SHA3_512.value),
    _D.RSASSA_PSS.value: (_P.PSS.value, None),
    _D.ECDSA_WITH_SHA1.value: (None, _H.SHA_1.value),
    _D.ECDSA_WITH_SHA224.value: (None, _H.SHA_224.value),
    _D.ECDSA_WITH_SHA256.value: (None, _H.SHA_256.value),
    _D.ECDSA_WITH_SHA384.value: (None, _H.SHA_384.value),
    _D.ECDSA_WITH_SHA512.value: (None, _H.SHA_512.value),
}
_SIGN_TYPES = frozenset({ObjectType.PRIVATE_KEY.value})
_VERIFY_TYPES = frozenset({ObjectType.PUBLIC_KEY.value, ObjectType.CERTIFICATE.value})


def _scheme(ctx: RequestContext, params: Params, signing: bool, prehashed: bool) -> tuple[object, object]:
    """(RSA padding, or None for ECDSA or an unspecified RSA padding; hash for `cryptography`)."""
    method, digest = params.padding_method, params.hashing_algorithm
    ecdsa = False
    if params.digital_signature_algorithm is not None:
        scheme = _SCHEMES.get(params.digital_signature_algorithm)
        if scheme is None:
            raise keyuse.unsupported(ctx, "unsupported Digital Signature Algorithm")
        method, digest, ecdsa = scheme[0], scheme[1] if scheme[1] is not None else digest, scheme[0] is None
    algorithm = keyuse.hash_for(ctx, digest, _H.SHA_256.value)
    chosen: hashes.HashAlgorithm | utils.Prehashed = utils.Prehashed(algorithm) if prehashed else algorithm
    if method is None:
        return ("ecdsa" if ecdsa else None), chosen
    if method == _P.PKCS1v15.value:
        return padding.PKCS1v15(), chosen
    if method != _P.PSS.value:
        raise keyuse.unsupported(ctx, "signatures take Padding Method PKCS1 v1.5 or PSS")
    mgf = keyuse.hash_for(ctx, params.mask_generator_hashing_algorithm, digest or _H.SHA_256.value)
    # Without a Salt Length: the longest salt when signing (as the vectors' signatures use),
    # and any salt when verifying.
    salt = params.salt_length
    if salt is None:
        salt = padding.PSS.MAX_LENGTH if signing else padding.PSS.AUTO  # type: ignore[assignment]
    return padding.PSS(padding.MGF1(mgf), salt), chosen


def _rsa_padding(ctx: RequestContext, pad: object) -> padding.AsymmetricPadding:
    if pad == "ecdsa":
        raise keyuse.unsupported(ctx, "an ECDSA Digital Signature Algorithm needs an EC key")
    return pad if isinstance(pad, padding.AsymmetricPadding) else padding.PKCS1v15()


def _ecdsa(ctx: RequestContext, pad: object, algorithm: object) -> ec.ECDSA:
    if pad not in (None, "ecdsa"):
        raise keyuse.unsupported(ctx, "an EC key signs with ECDSA only")
    return ec.ECDSA(algorithm)  # type: ignore[arg-type]


def _input(ctx: RequestContext, payload: Item, stream: streams.Stream, one_part: bool) -> tuple[bool, int]:
    """Feeds Data (or, in a one-part request, Digested Data); whether the input is a digest,
    and how many bytes this part brought."""
    if payload.value_of(T.DIGESTED_DATA.value) is not None:
        if ctx.version < (1, 4):
            raise KmipError(ResultReason.INVALID_FIELD, "Digested Data is a KMIP 1.4 field")
        if not one_part:
            raise KmipError(ResultReason.INVALID_FIELD, "Digested Data is only taken in a one-part request")
        if payload.get(T.DATA.value) is not None:
            raise KmipError(ResultReason.INVALID_FIELD, "a request carries Data or Digested Data, not both")
        chunk = keyuse.data(payload, T.DIGESTED_DATA)
        streams.feed(ctx, stream, chunk)
        return True, len(chunk)
    chunk = keyuse.data(payload, required=one_part)
    streams.feed(ctx, stream, chunk)
    return False, len(chunk)


def _pure(prehashed: bool, stream: streams.Stream) -> bytes:
    """Ed25519 and Ed448 (KMIP 2.x) sign the message itself, with their own hash: no Digested Data."""
    if prehashed:
        raise KmipError(ResultReason.INVALID_FIELD, "Ed25519/Ed448 sign the message itself, not Digested Data")
    return bytes(stream.data)


def _agreement_only(ctx: RequestContext) -> KmipError:
    """X25519/X448 keys agree keys (RFC 7748): no signature exists for them. The key is of the
    wrong kind for the operation, as a symmetric key would be."""
    return keys.by_version(ctx, ResultReason.INVALID_FIELD, ResultReason.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK,
                           "an X25519/X448 key agrees keys: it cannot sign or verify")


@keyuse.guarded
def sign(ctx: RequestContext, payload: Item) -> Item:
    p, stream = streams.start(ctx, payload, Operation.SIGN.value)
    use = keyuse.prepare(ctx, payload, uid=stream.uid if stream else None, types=_SIGN_TYPES,
                         usage=CryptographicUsageMask.SIGN.value, protect=True)
    one_part, first = stream is None and p.final, stream is None
    stream = stream or streams.new(ctx, Operation.SIGN.value, use.uid, params=use.params)
    use.params = stream.state["params"]  # type: ignore[assignment]
    prehashed, size = _input(ctx, payload, stream, one_part)
    amount = keyuse.check_limits(use, size, first=first)
    body = [ttlv.text(T.UNIQUE_IDENTIFIER, use.uid)]
    if p.final:
        pad, algorithm = _scheme(ctx, use.params, signing=True, prehashed=prehashed)
        key = keyuse.private_key(ctx, use)
        try:
            if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
                signature = key.sign(_pure(prehashed, stream))
            elif isinstance(key, (x25519.X25519PrivateKey, x448.X448PrivateKey)):
                raise _agreement_only(ctx)
            elif isinstance(key, rsa.RSAPrivateKey):
                signature = key.sign(bytes(stream.data), _rsa_padding(ctx, pad), algorithm)  # type: ignore[arg-type]
            elif isinstance(key, ec.EllipticCurvePrivateKey):
                signature = key.sign(bytes(stream.data), _ecdsa(ctx, pad, algorithm))
            else:
                raise keyuse.unsupported(ctx, "only RSA and EC private keys sign")
        except ValueError as exc:  # e.g. a digest of the wrong length, a salt too long for the key
            raise KmipError(ResultReason.INVALID_FIELD, "the data or parameters do not suit this key") from exc
        finally:
            del key
        body.append(ttlv.bytes_(T.SIGNATURE_DATA, signature))
    keyuse.consume(ctx, use, amount)  # every part, before the stream is kept for the next one
    body += streams.finish(ctx, p, stream)
    ctx.id_placeholder = use.uid
    return ttlv.struct_(T.RESPONSE_PAYLOAD, body)


@keyuse.guarded
def verify(ctx: RequestContext, payload: Item) -> Item:
    p, stream = streams.start(ctx, payload, Operation.SIGNATURE_VERIFY.value)
    use = keyuse.prepare(ctx, payload, uid=stream.uid if stream else None, types=_VERIFY_TYPES,
                         usage=CryptographicUsageMask.VERIFY.value, protect=False)
    one_part = stream is None and p.final
    stream = stream or streams.new(ctx, Operation.SIGNATURE_VERIFY.value, use.uid, params=use.params)
    use.params = stream.state["params"]  # type: ignore[assignment]
    prehashed, _ = _input(ctx, payload, stream, one_part)
    validity = ValidityIndicator.UNKNOWN  # until the final part
    if p.final:
        signature = keyuse.data(payload, T.SIGNATURE_DATA)
        pad, algorithm = _scheme(ctx, use.params, signing=False, prehashed=prehashed)
        key = keyuse.public_key(ctx, use)
        try:
            if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
                key.verify(signature, _pure(prehashed, stream))
            elif isinstance(key, (x25519.X25519PublicKey, x448.X448PublicKey)):
                raise _agreement_only(ctx)
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, bytes(stream.data), _rsa_padding(ctx, pad), algorithm)  # type: ignore[arg-type]
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, bytes(stream.data), _ecdsa(ctx, pad, algorithm))
            else:
                raise keyuse.unsupported(ctx, "only RSA and EC public keys verify")
            validity = ValidityIndicator.VALID
        except InvalidSignature:
            validity = ValidityIndicator.INVALID
        except ValueError as exc:
            raise KmipError(ResultReason.INVALID_FIELD, "the data or parameters do not suit this key") from exc
    body = [ttlv.text(T.UNIQUE_IDENTIFIER, use.uid), ttlv.enum(T.VALIDITY_INDICATOR, validity)]
    body += streams.finish(ctx, p, stream)
    ctx.id_placeholder = use.uid
    return ttlv.struct_(T.RESPONSE_PAYLOAD, body)
