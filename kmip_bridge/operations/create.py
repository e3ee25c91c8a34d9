"""Create: a new symmetric key, generated here and sealed before it is stored."""

from __future__ import annotations

import secrets

from kmip.core.enums import CryptographicAlgorithm, KeyFormatType, ObjectType, ResultReason
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.errors import KmipError
from ..protocol.ttlv import Item
from . import objects
from .context import RequestContext

# Algorithm -> the key lengths (bits) we generate for it.
_LENGTHS = {
    CryptographicAlgorithm.AES.value: (128, 192, 256),
    CryptographicAlgorithm.HMAC_SHA256.value: (256,),
    CryptographicAlgorithm.HMAC_SHA512.value: (512,),
}


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


def handle(ctx: RequestContext, payload: Item) -> Item:
    object_type = payload.value_of(T.OBJECT_TYPE.value)
    if object_type != ObjectType.SYMMETRIC_KEY.value:
        raise KmipError(ResultReason.INVALID_FIELD, "Create makes symmetric keys only")
    attrs = objects.client_attributes(objects.request_attributes(ctx, payload))
    by_name = {a.name: a.value.value for a in attrs}
    algorithm = by_name.get("Cryptographic Algorithm")
    length = by_name.get("Cryptographic Length")
    if algorithm is None or length is None:
        raise KmipError(
            ResultReason.INVALID_FIELD,
            "Create needs Cryptographic Algorithm and Cryptographic Length",
        )
    allowed = _LENGTHS.get(algorithm)  # type: ignore[arg-type]
    if allowed is None:
        raise KmipError(ResultReason.INVALID_FIELD, "unsupported Cryptographic Algorithm for Create")
    if length not in allowed:
        raise KmipError(
            ResultReason.INVALID_FIELD,
            f"Cryptographic Length {length} is not one of {', '.join(map(str, allowed))}",
        )
    material = secrets.token_bytes(length // 8)  # type: ignore[operator]
    obj = symmetric_key(algorithm, length, material)  # type: ignore[arg-type]
    uid = objects.insert_new(ctx, ObjectType.SYMMETRIC_KEY.value, obj, attrs)
    return ttlv.struct_(
        T.RESPONSE_PAYLOAD,
        [ttlv.enum(T.OBJECT_TYPE, ObjectType.SYMMETRIC_KEY), ttlv.text(T.UNIQUE_IDENTIFIER, uid)],
    )
