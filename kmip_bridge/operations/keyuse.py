"""What every cryptographic operation does before and after touching a key: find it (authorised),
check its object type, life-cycle state, protect/process dates and Cryptographic Usage Mask, pick
the Cryptographic Parameters, unseal its material through the Key HSM, and account Usage Limits.

Key bytes are only ever held in locals of one request; nothing here caches material.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from kmip.core.enums import (
    HashingAlgorithm,
    ObjectType,
    ResultReason,
    State,
    UsageLimitsUnit,
)
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.attributes import Attribute
from ..protocol.errors import KmipError, missing
from ..protocol.ttlv import Item, Type
from ..store import ObjectRow, states
from . import formats, objects
from .context import RequestContext

_H = HashingAlgorithm
HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    _H.MD5.value: hashes.MD5,
    _H.SHA_1.value: hashes.SHA1,
    _H.SHA_224.value: hashes.SHA224,
    _H.SHA_256.value: hashes.SHA256,
    _H.SHA_384.value: hashes.SHA384,
    _H.SHA_512.value: hashes.SHA512,
    _H.SHA_512_224.value: hashes.SHA512_224,
    _H.SHA_512_256.value: hashes.SHA512_256,
    _H.SHA3_224.value: hashes.SHA3_224,
    _H.SHA3_256.value: hashes.SHA3_256,
    _H.SHA3_384.value: hashes.SHA3_384,
    _H.SHA3_512.value: hashes.SHA3_512,
}

Handler = Callable[[RequestContext, Item], Item]
_ATTRS = (
    "Cryptographic Usage Mask",
    "Cryptographic Parameters",
    "Cryptographic Algorithm",
    "Activation Date",
    "Deactivation Date",
    "Process Start Date",
    "Protect Stop Date",
    "Usage Limits",
)


def guarded(handler: Handler) -> Handler:
    """Reports an algorithm the linked OpenSSL lacks (e.g. SHA-3 inside OAEP) as unsupported
    parameters rather than as an internal error."""

    @functools.wraps(handler)
    def run(ctx: RequestContext, payload: Item) -> Item:
        try:
            return handler(ctx, payload)
        except UnsupportedAlgorithm as exc:
            raise unsupported(ctx, "the cryptographic parameters are not supported by this server") from exc

    return run


def hash_for(ctx: RequestContext, algorithm: int | None, default: int | None = None) -> hashes.HashAlgorithm:
    chosen = algorithm if algorithm is not None else default
    cls = HASHES.get(chosen)  # type: ignore[arg-type]
    if cls is None:
        raise unsupported(ctx, "unsupported or missing Hashing Algorithm")
    return cls()


def unsupported(ctx: RequestContext, message: str) -> KmipError:
    # 2.x has a precise reason; 1.x servers say the feature is not supported.
    reason = ResultReason.UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS if ctx.v2 else ResultReason.FEATURE_NOT_SUPPORTED
    return KmipError(reason, message)


def crypto_failure(message: str = "the cryptographic operation failed") -> KmipError:
    return KmipError(ResultReason.CRYPTOGRAPHIC_FAILURE, message)


@dataclass(frozen=True)
class Params:
    """The fields of a Cryptographic Parameters structure this server acts on."""

    block_cipher_mode: int | None = None
    padding_method: int | None = None
    hashing_algorithm: int | None = None
    digital_signature_algorithm: int | None = None
    cryptographic_algorithm: int | None = None
    random_iv: bool = False
    tag_length: int | None = None
    salt_length: int | None = None
    mask_generator_hashing_algorithm: int | None = None
    p_source: bytes | None = None

    @classmethod
    def parse(cls, item: Item | None) -> Params:
        if item is None:
            return cls()
        if item.type != Type.STRUCTURE:
            raise KmipError(ResultReason.INVALID_FIELD, "Cryptographic Parameters must be a structure")
        v = item.value_of
        return cls(
            block_cipher_mode=v(T.BLOCK_CIPHER_MODE.value),  # type: ignore[arg-type]
            padding_method=v(T.PADDING_METHOD.value),  # type: ignore[arg-type]
            hashing_algorithm=v(T.HASHING_ALGORITHM.value),  # type: ignore[arg-type]
            digital_signature_algorithm=v(T.DIGITAL_SIGNATURE_ALGORITHM.value),  # type: ignore[arg-type]
            cryptographic_algorithm=v(T.CRYPTOGRAPHIC_ALGORITHM.value),  # type: ignore[arg-type]
            random_iv=bool(v(T.RANDOM_IV.value, False)),
            tag_length=v(T.TAG_LENGTH.value),  # type: ignore[arg-type]
            salt_length=v(T.SALT_LENGTH.value),  # type: ignore[arg-type]
            mask_generator_hashing_algorithm=v(T.MASK_GENERATOR_HASHING_ALGORITHM.value),  # type: ignore[arg-type]
            p_source=v(T.P_SOURCE.value),  # type: ignore[arg-type]
        )


@dataclass
class KeyUse:
    """A key an operation may use right now, with its attributes and effective parameters."""

    uid: str
    row: ObjectRow
    attrs: dict[str, Item]
    params: Params
    algorithm: int | None = None  # Cryptographic Algorithm of the key
    limits: list[int] = field(default_factory=list)  # [remaining, unit] when Usage Limits apply


def prepare(
    ctx: RequestContext,
    payload: Item,
    *,
    uid: str | None = None,
    types: frozenset[int],
    usage: int,
    protect: bool,
) -> KeyUse:
    """Loads and checks the key. ``protect`` operations (Encrypt, Sign, MAC) need an Active key
    before its Protect Stop Date; the others also accept Deactivated/Compromised keys, from their
    Process Start Date on. Visibility is checked first, so another tenant's id is 'not found'."""
    named = payload.value_of(T.UNIQUE_IDENTIFIER.value) if payload is not None else None
    if uid is not None and named not in (None, uid):
        raise KmipError(ResultReason.INVALID_FIELD, "the Correlation Value belongs to another object")
    uid = uid or objects.target_uid(ctx, payload)
    row = objects.load_visible(ctx, uid)
    attrs: dict[str, Item] = {}
    for a in map(objects.from_row, ctx.services.store.load_attributes(uid, _ATTRS)):
        attrs.setdefault(a.name, a.value)
    if row.object_type not in types:
        reason = ResultReason.INVALID_OBJECT_TYPE if ctx.v2 else ResultReason.ILLEGAL_OPERATION
        raise KmipError(reason, f"this operation cannot use an object of type {ObjectType(row.object_type).name}")
    _check_state(ctx, row, attrs, protect)
    mask = _value(attrs, "Cryptographic Usage Mask")
    # A mask that is not an Integer (only rows older than the attribute type checks) grants nothing.
    if mask is not None and (not isinstance(mask, int) or isinstance(mask, bool) or not mask & usage):
        reason = ResultReason.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK if ctx.v2 else ResultReason.PERMISSION_DENIED
        raise KmipError(reason, "the key's Cryptographic Usage Mask does not allow this operation")
    # The request's parameters replace the key's attribute as a whole (KMIP: "if none are
    # provided with the request, those stored with the object SHALL be used").
    given = payload.get(T.CRYPTOGRAPHIC_PARAMETERS.value) if payload is not None else None
    params = Params.parse(given if given is not None else attrs.get("Cryptographic Parameters"))
    use = KeyUse(uid, row, attrs, params, _value(attrs, "Cryptographic Algorithm"))  # type: ignore[arg-type]
    if protect:
        use.limits = _limits(attrs)
    return use


def _value(attrs: dict[str, Item], name: str) -> object:
    item = attrs.get(name)
    return item.value if item is not None else None


def _check_state(ctx: RequestContext, row: ObjectRow, attrs: dict[str, Item], protect: bool) -> None:
    if not row.has_material:
        objects.open_material(ctx, row)  # raises exactly what Get answers for a destroyed object
    now = objects.now()
    activation, deactivation = _value(attrs, "Activation Date"), _value(attrs, "Deactivation Date")
    # A date that has passed moves the object on (KMIP 3.24/3.27): the one rule, store/states.py
    # (the row is already read so; this re-applies it at this request's 'now').
    state = states.effective_state(row.state, activation, deactivation, now)
    allowed = {State.ACTIVE.value}
    if not protect:
        allowed |= {State.DEACTIVATED.value, State.COMPROMISED.value}
    if state not in allowed:
        raise ctx.wrong_state(f"the key is {State(state).name.replace('_', '-').title()}")
    if protect:
        stop = _value(attrs, "Protect Stop Date")
        if isinstance(stop, int) and stop <= now:
            raise ctx.wrong_state("the key's Protect Stop Date has passed")
    else:
        start = _value(attrs, "Process Start Date")
        if isinstance(start, int) and start > now:
            raise ctx.wrong_state("the key's Process Start Date has not been reached")


def _limits(attrs: dict[str, Item]) -> list[int]:
    item = attrs.get("Usage Limits")
    if item is None or item.type != Type.STRUCTURE:
        return []
    total = item.value_of(T.USAGE_LIMITS_TOTAL.value)
    count = item.value_of(T.USAGE_LIMITS_COUNT.value, total)
    unit = item.value_of(T.USAGE_LIMITS_UNIT.value, UsageLimitsUnit.BYTE.value)
    return [int(count), int(unit)] if isinstance(count, int) else []  # type: ignore[call-overload]


def check_limits(use: KeyUse, data_length: int, first: bool = True) -> int:
    """The amount this part of a use consumes: its own bytes (Byte unit), or 1 for the first
    part of an operation (Object unit). Every part of a multi-part operation is charged as it
    arrives, so parts cannot together exceed the limit that each alone fits. Refused
    (Permission Denied, as the vectors expect in both protocol versions) when it exceeds what
    the Usage Limits leave."""
    if not use.limits:
        return 0
    remaining, unit = use.limits
    amount = data_length if unit == UsageLimitsUnit.BYTE.value else int(first)
    if amount > remaining:
        raise KmipError(ResultReason.PERMISSION_DENIED, "the key's Usage Limits are exhausted")
    return amount


def consume(ctx: RequestContext, use: KeyUse, amount: int) -> None:
    """Records the use (after the operation succeeded); guarded by the row version, so two
    concurrent uses cannot both spend the same remainder."""
    if not use.limits or amount == 0:
        return
    old = use.attrs["Usage Limits"]
    kept = [c for c in old.value if c.tag != T.USAGE_LIMITS_COUNT.value]  # type: ignore[union-attr]
    value = objects.value_item(
        Type.STRUCTURE, [*kept, ttlv.long_integer(T.USAGE_LIMITS_COUNT, use.limits[0] - amount)]
    )
    objects.update(ctx, use.row, replace=[objects.to_row(Attribute("Usage Limits", value))])


# -- material ---------------------------------------------------------------------------------------
def open_key(ctx: RequestContext, use: KeyUse) -> Item:
    """The unsealed object (through the Key HSM envelope); settles the key's algorithm from its
    Key Block. The caller drops it when done."""
    obj = objects.open_material(ctx, use.row)
    block = formats.block_of(obj)
    if block is not None:
        if block.get(T.KEY_WRAPPING_DATA.value) is not None:
            raise KmipError(ResultReason.FEATURE_NOT_SUPPORTED, "the key is stored wrapped and cannot be used here")
        alg = block.value_of(T.CRYPTOGRAPHIC_ALGORITHM.value)
        if isinstance(alg, int):
            use.algorithm = alg
    return obj


def symmetric_bytes(ctx: RequestContext, use: KeyUse) -> bytes:
    return formats.raw_bytes(open_key(ctx, use))


def private_key(ctx: RequestContext, use: KeyUse) -> formats.PrivateKey:
    return formats.private_of(open_key(ctx, use))


def public_key(ctx: RequestContext, use: KeyUse) -> PublicKeyTypes:
    """A Public Key, a Certificate's subject key, or a Private Key's public half."""
    obj = open_key(ctx, use)
    if use.row.object_type == ObjectType.CERTIFICATE.value:
        der = obj.value_of(T.CERTIFICATE_VALUE.value)
        if not isinstance(der, bytes):
            raise KmipError(ResultReason.INVALID_FIELD, "the certificate has no Certificate Value")
        return x509.load_der_x509_certificate(der).public_key()
    return formats.public_of(obj)


def data(payload: Item, tag: T = T.DATA, required: bool = True) -> bytes:
    value = payload.value_of(tag.value)
    if value is None and not required:
        return b""
    if value is None:
        raise missing(f"the request needs {ttlv.tag_name(tag.value).replace('_', ' ').title()}")
    if not isinstance(value, bytes):
        raise KmipError(ResultReason.INVALID_FIELD, f"{ttlv.tag_name(tag.value)} must be a byte string")
    return value
