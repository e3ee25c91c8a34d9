"""Create: a new symmetric key, generated here and sealed before it is stored."""

from __future__ import annotations

import secrets

from kmip.core.enums import (
    CryptographicAlgorithm,
    KeyFormatType,
    ObjectType,
    ResultReason,
    RNGAlgorithm,
    SecretDataType,
)
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.errors import KmipError
from ..protocol.ttlv import Item, Type
from . import objects
from .context import RequestContext

# Algorithm -> the key lengths (bits) we generate for it (None: any multiple of 8 from 128).
_LENGTHS: dict[int, tuple[int, ...] | None] = {
    CryptographicAlgorithm.AES.value: (128, 192, 256),
    # Three-key 3DES: 168 effective bits, 24 key bytes with parity bits (KMIP counts either way).
    CryptographicAlgorithm.TRIPLE_DES.value: (168, 192),
    CryptographicAlgorithm.CHACHA20.value: (256,),
    CryptographicAlgorithm.IDEA.value: (128,),  # stored and handed out; no cipher operations
    CryptographicAlgorithm.HMAC_SHA1.value: None,
    CryptographicAlgorithm.HMAC_SHA224.value: None,
    CryptographicAlgorithm.HMAC_SHA256.value: None,
    CryptographicAlgorithm.HMAC_SHA384.value: None,
    CryptographicAlgorithm.HMAC_SHA512.value: None,
}


def key_bytes(algorithm: int, length: int) -> int:
    if algorithm == CryptographicAlgorithm.TRIPLE_DES.value:
        return 24
    return length // 8


def symmetric_key(algorithm: int, length: int, material: bytes) -> Item:
    return ttlv.struct_(
        T.SYMMETRIC_KEY,
        [
            ttlv.struct_(
                T.KEY_BLOCK,
                [
                    ttlv.enum(T.KEY_FORMAT_TYPE, KeyFormatType.RAW),
                    ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, material)]),
                    ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, algorithm),
                    ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, length),
                ],
            )
        ],
    )


# A lease the server grants on keys it generates unless the client asks otherwise (seconds).
DEFAULT_LEASE_TIME = 3600


def generation_attributes(attrs: list[objects.Attribute]) -> list[objects.Attribute]:
    """What the server records about keys it generates: the RNG it used (the operating system's
    CSPRNG via Python's ``secrets``: no KMIP algorithm name fits, so Unspecified) and a lease."""
    out = [
        objects.Attribute(
            "Random Number Generator",
            ttlv.struct_(T.ATTRIBUTE_VALUE, [ttlv.enum(T.RNG_ALGORITHM, RNGAlgorithm.UNSPECIFIED)]),
        )
    ]
    if not any(a.name == "Lease Time" for a in attrs):
        out.append(objects.Attribute("Lease Time", objects.value_item(Type.INTERVAL, DEFAULT_LEASE_TIME)))
    return out


# Server-generated Secret Data (a random seed): its length in bits, unless the client gives one.
SECRET_DEFAULT_BITS = 256
SECRET_MAX_BITS = 8 * 4096


def _secret_data(ctx: RequestContext, attrs: list[objects.Attribute]) -> Item:
    """Create of Secret Data: random bytes of the requested Cryptographic Length (bits, a
    multiple of 8), typed Seed, in an Opaque Key Block."""
    given = {a.name: a.value.value for a in attrs}
    length = given.get("Cryptographic Length", SECRET_DEFAULT_BITS)
    if not isinstance(length, int) or isinstance(length, bool) or not 8 <= length <= SECRET_MAX_BITS or length % 8:
        raise KmipError(ResultReason.INVALID_FIELD,
                        f"Cryptographic Length of Secret Data must be a multiple of 8 from 8 to {SECRET_MAX_BITS}")
    if "Cryptographic Algorithm" in given:
        raise KmipError(ResultReason.INVALID_FIELD, "Secret Data has no Cryptographic Algorithm")
    block = ttlv.struct_(T.KEY_BLOCK, [
        ttlv.enum(T.KEY_FORMAT_TYPE, KeyFormatType.OPAQUE),
        ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, secrets.token_bytes(length // 8))]),
    ])
    if "Cryptographic Length" not in given:
        attrs.append(objects.Attribute("Cryptographic Length", objects.value_item(Type.INTEGER, length)))
    return ttlv.struct_(T.SECRET_DATA, [ttlv.enum(T.SECRET_DATA_TYPE, SecretDataType.SEED), block])


def handle(ctx: RequestContext, payload: Item) -> Item:
    object_type = payload.value_of(T.OBJECT_TYPE.value)
    if object_type == ObjectType.TEMPLATE.value and not ctx.v2:
        raise KmipError(ResultReason.FEATURE_NOT_SUPPORTED, "Template objects are not supported")
    if object_type == ObjectType.SECRET_DATA.value:
        attrs = objects.client_attributes(objects.request_attributes(ctx, payload))
        obj = _secret_data(ctx, attrs)
        attrs += generation_attributes(attrs)
        uid = objects.insert_new(ctx, ObjectType.SECRET_DATA.value, obj, attrs)
        return ttlv.struct_(
            T.RESPONSE_PAYLOAD,
            [ttlv.enum(T.OBJECT_TYPE, ObjectType.SECRET_DATA), ttlv.text(T.UNIQUE_IDENTIFIER, uid)],
        )
    if object_type != ObjectType.SYMMETRIC_KEY.value:
        raise KmipError(ResultReason.INVALID_FIELD, "Create makes symmetric keys and secret data only")
    attrs = objects.client_attributes(objects.request_attributes(ctx, payload))
    by_name = {a.name: a.value.value for a in attrs}
    algorithm = by_name.get("Cryptographic Algorithm")
    length = by_name.get("Cryptographic Length")
    if algorithm is None or length is None:
        raise KmipError(
            ResultReason.INVALID_FIELD,
            "Create needs Cryptographic Algorithm and Cryptographic Length",
        )
    if algorithm not in _LENGTHS:
        raise KmipError(ResultReason.INVALID_FIELD, "unsupported Cryptographic Algorithm for Create")
    allowed = _LENGTHS[algorithm]  # type: ignore[index]
    if not isinstance(length, int) or (
        length not in allowed if allowed is not None else (length < 128 or length % 8 or length > 4096)
    ):
        choices = ", ".join(map(str, allowed)) if allowed else "a multiple of 8 from 128 to 4096"
        raise KmipError(ResultReason.INVALID_FIELD, f"Cryptographic Length {length} is not {choices}")
    if by_name.get("Quantum Safe") is True and not (
        algorithm == CryptographicAlgorithm.AES.value and length == 256
    ):
        # Of what Create makes, only AES-256 keeps a safe margin against Grover's algorithm.
        raise KmipError(ResultReason.GENERAL_FAILURE, "the requested key would not be quantum safe")
    material = secrets.token_bytes(key_bytes(algorithm, length))  # type: ignore[arg-type]
    attrs += generation_attributes(attrs)
    obj = symmetric_key(algorithm, length, material)  # type: ignore[arg-type]
    uid = objects.insert_new(ctx, ObjectType.SYMMETRIC_KEY.value, obj, attrs)
    return ttlv.struct_(
        T.RESPONSE_PAYLOAD,
        [ttlv.enum(T.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY), ttlv.text(T.UNIQUE_IDENTIFIER, uid)],
    )
