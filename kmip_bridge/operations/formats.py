"""Key Format Types: conversion of a key's Key Block on Get, and the Digest attribute.

Keys are stored sealed in the format they were registered or generated in (Raw, PKCS#1, PKCS#8,
X.509 SubjectPublicKeyInfo, Transparent ...). A Get that names another Key Format Type is served
by converting on the way out, through `cryptography`'s key objects for asymmetric keys. This
module only rewrites TTLV trees: it neither reads the store nor unseals anything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa, x448, x25519
from kmip.core.enums import (
    CertificateType,
    CryptographicAlgorithm,
    HashingAlgorithm,
    KeyFormatType,
    ObjectType,
    RecommendedCurve,
    ResultReason,
)
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.errors import KmipError
from ..protocol.ttlv import Item, Type

F = KeyFormatType
A = CryptographicAlgorithm

# Curves we generate and convert; KMIP names them by Recommended Curve.
CURVES: dict[int, type[ec.EllipticCurve]] = {
    RecommendedCurve.P_224.value: ec.SECP224R1,
    RecommendedCurve.P_256.value: ec.SECP256R1,
    RecommendedCurve.P_384.value: ec.SECP384R1,
    RecommendedCurve.P_521.value: ec.SECP521R1,
    RecommendedCurve.SECP256K1.value: ec.SECP256K1,
}
_CURVE_BY_NAME = {cls.name: enum for enum, cls in CURVES.items()}

EC_ALGORITHMS = frozenset({A.EC.value, A.ECDSA.value, A.ECDH.value, A.ECMQV.value})
# 1.x had one transparent EC format per algorithm; 2.x folds them into Transparent EC.
_EC_PRIVATE_TRANSPARENT = frozenset(
    {F.TRANSPARENT_EC_PRIVATE_KEY.value, F.TRANSPARENT_ECDSA_PRIVATE_KEY.value,
     F.TRANSPARENT_ECDH_PRIVATE_KEY.value, F.TRANSPARENT_ECMQV_PRIVATE_KEY.value}
)
_EC_PUBLIC_TRANSPARENT = frozenset(
    {F.TRANSPARENT_EC_PUBLIC_KEY.value, F.TRANSPARENT_ECDSA_PUBLIC_KEY.value,
     F.TRANSPARENT_ECDH_PUBLIC_KEY.value, F.TRANSPARENT_ECMQV_PUBLIC_KEY.value}
)

# The KMIP 2.x curves of RFC 7748 / RFC 8032: Curve25519 and Curve448 (Recommended Curve), as
# X25519 / X448 (key agreement: Cryptographic Algorithm EC or ECDH) or Ed25519 / Ed448 (signing).
# Their keys are byte strings, not numbers: PKCS#8, X.509 SubjectPublicKeyInfo and Raw (the RFC
# encoding), and Transparent EC Public Key (Q String = the RFC encoding). Transparent EC Private
# Key is refused for them: KMIP gives D as an integer and says nothing of the byte order of a key
# that is a byte string.
Montgomery = x25519.X25519PrivateKey | x448.X448PrivateKey
Edwards = ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
RFC_PRIVATE = (x25519.X25519PrivateKey, x448.X448PrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)
RFC_PUBLIC = (x25519.X25519PublicKey, x448.X448PublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)
# (private class, public class, Recommended Curve, Raw length of either half) per Cryptographic Algorithm
# kind: Edwards keys by their own algorithm, Montgomery keys under EC/ECDH by their size.
_RFC_CURVES = {
    "x25519": (x25519.X25519PrivateKey, x25519.X25519PublicKey, RecommendedCurve.CURVE25519.value, 32),
    "x448": (x448.X448PrivateKey, x448.X448PublicKey, RecommendedCurve.CURVE448.value, 56),
    "ed25519": (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey, RecommendedCurve.CURVE25519.value, 32),
    "ed448": (ed448.Ed448PrivateKey, ed448.Ed448PublicKey, RecommendedCurve.CURVE448.value, 57),
}
RFC_CURVES = frozenset({RecommendedCurve.CURVE25519.value, RecommendedCurve.CURVE448.value})
RFC_LENGTHS = {"x25519": 256, "ed25519": 256, "x448": 448, "ed448": 448}  # Cryptographic Length
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | dsa.DSAPrivateKey | Montgomery | Edwards
PublicKey = (rsa.RSAPublicKey | ec.EllipticCurvePublicKey | dsa.DSAPublicKey | x25519.X25519PublicKey
             | x448.X448PublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)


def rfc_kind(key: object) -> str | None:
    """'x25519', 'x448', 'ed25519' or 'ed448' for a key (either half) of those curves, else None."""
    for kind, (priv, pub, _curve, _size) in _RFC_CURVES.items():
        if isinstance(key, (priv, pub)):
            return kind
    return None


def _rfc_kinds(algorithm: object, curve: object = None, size: int | None = None) -> list[str]:
    """The RFC 7748/8032 key kinds a Cryptographic Algorithm (and curve, or raw size) can mean."""
    if algorithm == A.ED25519.value:
        kinds = ["ed25519"]
    elif algorithm == A.ED448.value:
        kinds = ["ed448"]
    elif algorithm in (A.EC.value, A.ECDH.value):
        kinds = ["x25519", "x448"]
    else:
        return []
    return [k for k in kinds if (curve is None or _RFC_CURVES[k][2] == curve)
            and (size is None or _RFC_CURVES[k][3] == size)]


def not_supported(message: str) -> KmipError:
    return KmipError(ResultReason.KEY_FORMAT_TYPE_NOT_SUPPORTED, message)


# -- key blocks ------------------------------------------------------------------------------------
def key_block(
    object_type: int, fmt: int, material: Item | bytes, algorithm: int | None, length: int | None
) -> Item:
    """A Key Block holding ``material`` (bytes become a Key Material byte string)."""
    if isinstance(material, bytes):
        material = ttlv.bytes_(T.KEY_MATERIAL, material)
    return ttlv.struct_(
        T.KEY_BLOCK,
        [
            ttlv.enum(T.KEY_FORMAT_TYPE, fmt),
            ttlv.struct_(T.KEY_VALUE, [material]),
            ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, algorithm) if algorithm is not None else None,
            ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, length) if length is not None else None,
        ],
    )


def block_of(obj: Item) -> Item | None:
    block = obj.get(T.KEY_BLOCK.value) if obj.type == Type.STRUCTURE else None
    return block if block is not None and block.type == Type.STRUCTURE else None


def material_of(block: Item) -> Item | None:
    """The Key Material of an unwrapped Key Block (None when the Key Value is a wrapped blob)."""
    value = block.get(T.KEY_VALUE.value)
    if value is None or value.type != Type.STRUCTURE:
        return None
    return value.get(T.KEY_MATERIAL.value)


def raw_bytes(obj: Item) -> bytes:
    """The key bytes of a symmetric key or secret (Raw, Opaque or Transparent Symmetric Key)."""
    block = block_of(obj)
    material = material_of(block) if block is not None else None
    if material is not None and material.type == Type.BYTE_STRING:
        return material.value  # type: ignore[return-value]
    if material is not None and material.type == Type.STRUCTURE:
        key = material.value_of(T.KEY.value)
        if isinstance(key, bytes):
            return key
    raise not_supported("the object's key material is not available as plain bytes")


def _big(tag: T, value: int) -> Item:
    return Item(tag.value, Type.BIG_INTEGER, int(value))


def _ints(material: Item, *tags: T) -> list[int]:
    out = []
    for tag in tags:
        v = material.value_of(tag.value)
        if not isinstance(v, int) or isinstance(v, bool):
            raise not_supported(f"transparent key material lacks {tag.name}")
        out.append(v)
    return out


# -- asymmetric keys: load from / dump to a Key Format Type ----------------------------------------
def load_private(fmt: int, material: Item, algorithm: object = None) -> PrivateKey:
    """The key in ``material``; ``algorithm`` (the Key Block's Cryptographic Algorithm) tells
    which curve a Raw key of Curve25519/448 is on (its bytes alone do not)."""
    if fmt in (F.PKCS_1.value, F.PKCS_8.value, F.EC_PRIVATE_KEY.value) and material.type == Type.BYTE_STRING:
        key = serialization.load_der_private_key(material.value, password=None)  # type: ignore[arg-type]
        if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, dsa.DSAPrivateKey, *RFC_PRIVATE)):
            raise not_supported("unsupported private key type")
        return key
    if fmt == F.RAW.value and material.type == Type.BYTE_STRING:
        raw: bytes = material.value  # type: ignore[assignment]
        kinds = _rfc_kinds(algorithm, size=len(raw))
        if len(kinds) != 1:
            raise not_supported("a Raw private key is an X25519/X448/Ed25519/Ed448 key of its algorithm's size")
        return _RFC_CURVES[kinds[0]][0].from_private_bytes(raw)  # type: ignore[attr-defined,no-any-return]
    if material.type != Type.STRUCTURE:
        raise not_supported("key material does not match its Key Format Type")
    if fmt == F.TRANSPARENT_RSA_PRIVATE_KEY.value:
        n, e, d = _ints(material, T.MODULUS, T.PUBLIC_EXPONENT, T.PRIVATE_EXPONENT)
        if material.get(T.P.value) is not None and material.get(T.Q.value) is not None:
            p, q = _ints(material, T.P, T.Q)
        else:
            p, q = rsa.rsa_recover_prime_factors(n, e, d)
        return rsa.RSAPrivateNumbers(
            p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q),
            rsa.RSAPublicNumbers(e, n),
        ).private_key()
    if fmt == F.TRANSPARENT_DSA_PRIVATE_KEY.value:
        p, q, g, x = _ints(material, T.P, T.Q, T.G, T.X)
        y = pow(g, x, p)
        return dsa.DSAPrivateNumbers(x, dsa.DSAPublicNumbers(y, dsa.DSAParameterNumbers(p, q, g))).private_key()
    if fmt in _EC_PRIVATE_TRANSPARENT:
        if material.value_of(T.RECOMMENDED_CURVE.value) in RFC_CURVES:
            raise not_supported("Transparent EC Private Key is not defined for Curve25519/Curve448 keys")
        curve = _curve(material)
        (d,) = _ints(material, T.D)
        return ec.derive_private_key(d, curve())
    raise not_supported("unsupported private Key Format Type")


def load_public(fmt: int, material: Item, algorithm: object = None) -> PublicKey:
    if material.type == Type.BYTE_STRING:
        data: bytes = material.value  # type: ignore[assignment]
        if fmt in (F.PKCS_1.value, F.X_509.value):  # RSAPublicKey or SubjectPublicKeyInfo DER
            key = serialization.load_der_public_key(data)
            if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, dsa.DSAPublicKey, *RFC_PUBLIC)):
                raise not_supported("unsupported public key type")
            return key
        if fmt == F.RAW.value:
            return _rfc_public(algorithm, None, data)
        raise not_supported("unsupported public Key Format Type")
    if fmt == F.TRANSPARENT_RSA_PUBLIC_KEY.value:
        n, e = _ints(material, T.MODULUS, T.PUBLIC_EXPONENT)
        return rsa.RSAPublicNumbers(e, n).public_key()
    if fmt == F.TRANSPARENT_DSA_PUBLIC_KEY.value:
        p, q, g, y = _ints(material, T.P, T.Q, T.G, T.Y)
        return dsa.DSAPublicNumbers(y, dsa.DSAParameterNumbers(p, q, g)).public_key()
    if fmt in _EC_PUBLIC_TRANSPARENT:
        point = material.value_of(T.Q_STRING.value)
        if not isinstance(point, bytes):
            raise not_supported("transparent EC public key lacks Q String")
        named = material.value_of(T.RECOMMENDED_CURVE.value)
        if named in RFC_CURVES:
            return _rfc_public(algorithm, named, point)
        return ec.EllipticCurvePublicKey.from_encoded_point(_curve(material)(), point)
    raise not_supported("unsupported public Key Format Type")


def _rfc_public(algorithm: object, curve: object, data: bytes) -> PublicKey:
    kinds = _rfc_kinds(algorithm, curve, size=len(data) if curve is None else None)
    if len(kinds) != 1:
        raise not_supported("the public key is not an X25519/X448/Ed25519/Ed448 key of its algorithm and curve")
    return _RFC_CURVES[kinds[0]][1].from_public_bytes(data)  # type: ignore[attr-defined,no-any-return]


def _curve(material: Item) -> type[ec.EllipticCurve]:
    curve = CURVES.get(material.value_of(T.RECOMMENDED_CURVE.value))  # type: ignore[arg-type]
    if curve is None:
        raise not_supported("unsupported Recommended Curve")
    return curve


def curve_enum(curve: ec.EllipticCurve) -> int:
    value = _CURVE_BY_NAME.get(curve.name)
    if value is None:
        raise not_supported(f"unsupported curve {curve.name}")
    return value


def dump_private(key: PrivateKey, fmt: int) -> Item:
    der = serialization.Encoding.DER
    none = serialization.NoEncryption()
    if fmt == F.PKCS_8.value:
        return ttlv.bytes_(T.KEY_MATERIAL, key.private_bytes(der, serialization.PrivateFormat.PKCS8, none))
    if isinstance(key, RFC_PRIVATE) and fmt == F.RAW.value:
        raw = serialization.Encoding.Raw
        return ttlv.bytes_(T.KEY_MATERIAL, key.private_bytes(raw, serialization.PrivateFormat.Raw, none))
    if isinstance(key, rsa.RSAPrivateKey):
        if fmt == F.PKCS_1.value:
            return ttlv.bytes_(
                T.KEY_MATERIAL, key.private_bytes(der, serialization.PrivateFormat.TraditionalOpenSSL, none)
            )
        if fmt == F.TRANSPARENT_RSA_PRIVATE_KEY.value:
            pn = key.private_numbers()
            return ttlv.struct_(T.KEY_MATERIAL, [
                _big(T.MODULUS, pn.public_numbers.n), _big(T.PRIVATE_EXPONENT, pn.d),
                _big(T.PUBLIC_EXPONENT, pn.public_numbers.e), _big(T.P, pn.p), _big(T.Q, pn.q),
                _big(T.PRIME_EXPONENT_P, pn.dmp1), _big(T.PRIME_EXPONENT_Q, pn.dmq1),
                _big(T.CRT_COEFFICIENT, pn.iqmp),
            ])
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        if fmt == F.EC_PRIVATE_KEY.value:  # RFC 5915 ECPrivateKey
            return ttlv.bytes_(
                T.KEY_MATERIAL, key.private_bytes(der, serialization.PrivateFormat.TraditionalOpenSSL, none)
            )
        if fmt in _EC_PRIVATE_TRANSPARENT:
            return ttlv.struct_(T.KEY_MATERIAL, [
                ttlv.enum(T.RECOMMENDED_CURVE, curve_enum(key.curve)),
                _big(T.D, key.private_numbers().private_value),
            ])
    elif isinstance(key, dsa.DSAPrivateKey) and fmt == F.TRANSPARENT_DSA_PRIVATE_KEY.value:
        dn = key.private_numbers()
        params = dn.public_numbers.parameter_numbers
        return ttlv.struct_(T.KEY_MATERIAL, [
            _big(T.P, params.p), _big(T.Q, params.q), _big(T.G, params.g), _big(T.X, dn.x),
        ])
    raise not_supported("the private key cannot be expressed in the requested Key Format Type")


def dump_public(key: PublicKey, fmt: int) -> Item:
    der = serialization.Encoding.DER
    if fmt == F.X_509.value:
        return ttlv.bytes_(
            T.KEY_MATERIAL, key.public_bytes(der, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    if isinstance(key, RFC_PUBLIC) and fmt in (F.RAW.value, *_EC_PUBLIC_TRANSPARENT):
        point = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if fmt == F.RAW.value:
            return ttlv.bytes_(T.KEY_MATERIAL, point)
        return ttlv.struct_(T.KEY_MATERIAL, [
            ttlv.enum(T.RECOMMENDED_CURVE, _RFC_CURVES[rfc_kind(key)][2]),  # type: ignore[index]
            ttlv.bytes_(T.Q_STRING, point),
        ])
    if isinstance(key, rsa.RSAPublicKey):
        if fmt == F.PKCS_1.value:
            return ttlv.bytes_(T.KEY_MATERIAL, key.public_bytes(der, serialization.PublicFormat.PKCS1))
        if fmt == F.TRANSPARENT_RSA_PUBLIC_KEY.value:
            pn = key.public_numbers()
            return ttlv.struct_(T.KEY_MATERIAL, [_big(T.MODULUS, pn.n), _big(T.PUBLIC_EXPONENT, pn.e)])
    elif isinstance(key, ec.EllipticCurvePublicKey) and fmt in _EC_PUBLIC_TRANSPARENT:
        point = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return ttlv.struct_(T.KEY_MATERIAL, [
            ttlv.enum(T.RECOMMENDED_CURVE, curve_enum(key.curve)), ttlv.bytes_(T.Q_STRING, point),
        ])
    elif isinstance(key, dsa.DSAPublicKey) and fmt == F.TRANSPARENT_DSA_PUBLIC_KEY.value:
        pn = key.public_numbers()
        params = pn.parameter_numbers
        return ttlv.struct_(T.KEY_MATERIAL, [
            _big(T.P, params.p), _big(T.Q, params.q), _big(T.G, params.g), _big(T.Y, pn.y),
        ])
    raise not_supported("the public key cannot be expressed in the requested Key Format Type")


def public_of(obj: Item) -> PublicKey:
    """The public key of a Public Key object, or of a Private Key object's key pair."""
    block = block_of(obj)
    material = material_of(block) if block is not None else None
    fmt = block.value_of(T.KEY_FORMAT_TYPE.value) if block is not None else None
    if material is None or not isinstance(fmt, int):
        raise not_supported("the key material is not available")
    algorithm = block.value_of(T.CRYPTOGRAPHIC_ALGORITHM.value)  # type: ignore[union-attr]
    if obj.tag == T.PRIVATE_KEY.value:
        return load_private(fmt, material, algorithm).public_key()
    return load_public(fmt, material, algorithm)


def private_of(obj: Item) -> PrivateKey:
    block = block_of(obj)
    material = material_of(block) if block is not None else None
    fmt = block.value_of(T.KEY_FORMAT_TYPE.value) if block is not None else None
    if material is None or not isinstance(fmt, int):
        raise not_supported("the key material is not available")
    return load_private(fmt, material, block.value_of(T.CRYPTOGRAPHIC_ALGORITHM.value))  # type: ignore[union-attr]


# -- conversion ------------------------------------------------------------------------------------
def _convert_symmetric(fmt: int, material: Item, wanted: int, _algorithm: object = None) -> Item:
    if fmt == F.RAW.value and material.type == Type.BYTE_STRING:
        key: bytes = material.value  # type: ignore[assignment]
    elif fmt == F.TRANSPARENT_SYMMETRIC_KEY.value and material.type == Type.STRUCTURE:
        value = material.value_of(T.KEY.value)
        if not isinstance(value, bytes):
            raise not_supported("transparent symmetric key lacks Key")
        key = value
    else:
        raise not_supported("the symmetric key's stored format cannot be converted")
    if wanted == F.RAW.value:
        return ttlv.bytes_(T.KEY_MATERIAL, key)
    if wanted == F.TRANSPARENT_SYMMETRIC_KEY.value:
        return ttlv.struct_(T.KEY_MATERIAL, [ttlv.bytes_(T.KEY, key)])
    raise not_supported("a symmetric key is available as Raw or Transparent Symmetric Key only")


_CONVERTERS: dict[int, Callable[[int, Item, int, object], Item]] = {
    ObjectType.SYMMETRIC_KEY.value: _convert_symmetric,
    ObjectType.PRIVATE_KEY.value: lambda fmt, m, wanted, alg: dump_private(load_private(fmt, m, alg), wanted),
    ObjectType.PUBLIC_KEY.value: lambda fmt, m, wanted, alg: dump_public(load_public(fmt, m, alg), wanted),
}


def convert(obj: Item, object_type: int, wanted: int) -> Item:
    """``obj`` with its Key Block in the ``wanted`` Key Format Type (``obj`` itself if it already
    is). Raises Key Format Type Not Supported when no conversion exists."""
    if object_type == ObjectType.CERTIFICATE.value:
        # A certificate's value is its DER encoding: only X.509 describes it.
        if wanted == F.X_509.value and obj.value_of(T.CERTIFICATE_TYPE.value) == CertificateType.X_509.value:
            return obj
        raise not_supported("a certificate is available as X.509 only")
    block = block_of(obj)
    if block is None:
        raise not_supported("the object has no Key Block to convert")
    fmt = block.value_of(T.KEY_FORMAT_TYPE.value)
    if fmt == wanted:
        return obj
    converter = _CONVERTERS.get(object_type)
    material = material_of(block)
    if converter is None or material is None or not isinstance(fmt, int):
        raise not_supported("the object is not available in the requested Key Format Type")
    try:
        new_material = converter(fmt, material, wanted, block.value_of(T.CRYPTOGRAPHIC_ALGORITHM.value))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:  # material not as its format says
        raise not_supported(f"the stored key could not be converted ({type(exc).__name__})") from None
    value = block.get(T.KEY_VALUE.value)
    assert value is not None
    new_value = ttlv.struct_(
        T.KEY_VALUE, [new_material if c.tag == T.KEY_MATERIAL.value else c for c in value]
    )
    new_block = ttlv.struct_(T.KEY_BLOCK, [
        ttlv.enum(T.KEY_FORMAT_TYPE, wanted) if c.tag == T.KEY_FORMAT_TYPE.value
        else new_value if c.tag == T.KEY_VALUE.value else c
        for c in block
    ])
    return Item(obj.tag, Type.STRUCTURE, [new_block if c.tag == T.KEY_BLOCK.value else c for c in obj])


# -- Digest ----------------------------------------------------------------------------------------
# Secret Data and Opaque Objects are often passwords or other low-entropy values: a SHA-256 of
# them in the database would allow offline guessing, so they get no Digest. For keys (random
# material, or public) the digest reveals nothing useful about the key.
_DIGESTED = frozenset(
    {ObjectType.SYMMETRIC_KEY.value, ObjectType.PRIVATE_KEY.value, ObjectType.PUBLIC_KEY.value,
     ObjectType.SPLIT_KEY.value, ObjectType.CERTIFICATE.value}
)


def digest(object_type: int, obj: Item) -> Item | None:
    """The Digest attribute value (SHA-256 over the key material as stored, or over the
    certificate's DER), or None for objects that get none."""
    if object_type not in _DIGESTED:
        return None
    fmt: int | None = None
    if object_type == ObjectType.CERTIFICATE.value:
        data = obj.value_of(T.CERTIFICATE_VALUE.value)
    else:
        block = block_of(obj)
        if block is None:
            return None
        fmt = block.value_of(T.KEY_FORMAT_TYPE.value)  # type: ignore[assignment]
        value = block.get(T.KEY_VALUE.value)
        material = material_of(block)
        if material is not None:
            # Byte-string material is digested as is; transparent structures as their TTLV.
            data = material.value if material.type == Type.BYTE_STRING else ttlv.encode(material)
        elif value is not None and value.type == Type.BYTE_STRING:
            data = value.value  # a key registered wrapped: the digest of what is held
        else:
            return None
    if not isinstance(data, bytes):
        return None
    return ttlv.struct_(T.ATTRIBUTE_VALUE, [
        ttlv.enum(T.HASHING_ALGORITHM, HashingAlgorithm.SHA_256),
        ttlv.bytes_(T.DIGEST_VALUE, hashlib.sha256(data).digest()),
        ttlv.enum(T.KEY_FORMAT_TYPE, fmt) if isinstance(fmt, int) else None,
    ])
