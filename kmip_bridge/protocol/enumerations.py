"""Which tags and which enumeration values exist in which KMIP protocol version.

The sibling of versions.py (attributes, operations, object types, result reasons) for everything
else a response carries: a KMIP 1.0 client must not receive a Cryptographic Algorithm, Key Format
Type, Link Type, Recommended Curve... value its version does not define, nor a tag from a later
version (gate.py applies this to every response payload).

Sources: KMIP 1.0-1.4 §9.1.3.1 (tags) and §9.1.3.2 (enumerations), KMIP 2.0/2.1 §11 (the 1.2-2.1
tables value by value; 1.0 and 1.1 as PyKMIP's kmip/core/enums.py marks each value's version).
Tags were assigned in blocks: each version's new tags follow the previous version's last one.
"""

from __future__ import annotations

from functools import lru_cache

from kmip.core import enums
from kmip.core.enums import Tags as T

from .versions import (
    OBJECT_TYPE_SINCE,
    OPERATION_SINCE,
    QUERY_FUNCTION_SINCE,
    V10,
    V11,
    V12,
    V13,
    V14,
    V20,
    V21,
    Version,
    reason_since,
)

# -- tags ----------------------------------------------------------------------------------------------
# The last tag of each version's block (KMIP 1.0 §9.1.3.1 ... 2.0 §11.1). 2.1's additions start
# after 0x420165; 2.1 is the newest version, so any standard (0x42xxxx) tag belongs to it.
_LAST_TAG: tuple[tuple[int, Version], ...] = (
    (0x4200A1, V10), (0x4200B7, V11), (0x4200D3, V12), (0x4200F7, V13), (0x420124, V14), (0x420165, V20),
)
# Tags KMIP 2.0 designated "(Reserved)": templates, the 1.x attribute structure's index, Custom
# Attribute and the deprecated 1.x certificate fields.
TAGS_REMOVED_IN_20 = frozenset({
    T.ATTRIBUTE_INDEX.value, T.CERTIFICATE_IDENTIFIER.value, T.CERTIFICATE_ISSUER.value,
    T.CERTIFICATE_ISSUER_ALTERNATIVE_NAME.value, T.CERTIFICATE_ISSUER_DISTINGUISHED_NAME.value,
    T.CERTIFICATE_SUBJECT.value, T.CERTIFICATE_SUBJECT_ALTERNATIVE_NAME.value,
    T.CERTIFICATE_SUBJECT_DISTINGUISHED_NAME.value, T.COMMON_TEMPLATE_ATTRIBUTE.value,
    T.CUSTOM_ATTRIBUTE.value, T.ISSUER.value, T.OPERATION_POLICY_NAME.value,
    T.PRIVATE_KEY_TEMPLATE_ATTRIBUTE.value, T.PUBLIC_KEY_TEMPLATE_ATTRIBUTE.value, T.SERIAL_NUMBER.value,
    T.TEMPLATE.value, T.TEMPLATE_ATTRIBUTE.value, 0x42013E, 0x42013F,
})


def tag_since(tag: int) -> Version | None:
    """The version that first defines ``tag``; None for non-standard (extension) tags."""
    if tag >> 16 != 0x42 or tag == 0x420000:
        return None
    for last, version in _LAST_TAG:
        if tag <= last:
            return version
    return V21


@lru_cache(maxsize=8192)  # every response walks every tag: one lookup each
def tag_in(tag: int, version: Version) -> bool:
    since = tag_since(tag)
    if since is None or since > version:
        return False
    return not (version >= V20 and tag in TAGS_REMOVED_IN_20)


# -- enumeration values ----------------------------------------------------------------------------------
def _ranges(*spans: tuple[Version, int, int]) -> dict[int, Version]:
    """{value: since} from (since, first, last) spans."""
    return {v: since for since, first, last in spans for v in range(first, last + 1)}


# For each enumeration (by the tag that carries it): the version that first defines each value.
ENUM_SINCE: dict[int, dict[int, Version]] = {
    T.OBJECT_TYPE.value: OBJECT_TYPE_SINCE,
    T.OPERATION.value: OPERATION_SINCE,
    T.QUERY_FUNCTION.value: QUERY_FUNCTION_SINCE,
    T.CRYPTOGRAPHIC_ALGORITHM.value: _ranges((V10, 0x01, 0x19), (V12, 0x1A, 0x1A), (V13, 0x1B, 0x1B),
                                             (V14, 0x1C, 0x28), (V20, 0x29, 0x38)),
    T.STATE.value: _ranges((V10, 1, 6)),  # Destroyed Compromised (6) is a 1.0 state
    T.KEY_FORMAT_TYPE.value: _ranges((V10, 0x01, 0x13), (V13, 0x14, 0x15), (V14, 0x16, 0x16), (V20, 0x17, 0x17)),
    T.NAME_TYPE.value: _ranges((V10, 1, 2)),  # Uninterpreted Text String, URI
    T.RECOMMENDED_CURVE.value: _ranges((V10, 0x01, 0x0F), (V12, 0x10, 0x44), (V20, 0x45, 0x46)),
    T.HASHING_ALGORITHM.value: _ranges((V10, 0x01, 0x0B), (V12, 0x0C, 0x0D), (V14, 0x0E, 0x11)),
    T.PADDING_METHOD.value: _ranges((V10, 0x01, 0x0A)),
    T.BLOCK_CIPHER_MODE.value: _ranges((V10, 0x01, 0x11), (V14, 0x12, 0x12)),
    T.KEY_ROLE_TYPE.value: _ranges((V10, 0x01, 0x15), (V14, 0x16, 0x18)),
    T.DIGITAL_SIGNATURE_ALGORITHM.value: _ranges((V11, 0x01, 0x10), (V14, 0x11, 0x13)),
    T.MASK_GENERATOR.value: _ranges((V14, 1, 1)),
    T.MASK_GENERATOR_HASHING_ALGORITHM.value: _ranges((V14, 0x01, 0x0B), (V14, 0x0C, 0x11)),
    T.LINK_TYPE.value: _ranges((V10, 0x101, 0x107), (V12, 0x108, 0x10B), (V14, 0x10C, 0x10D), (V20, 0x10E, 0x10E)),
    T.REVOCATION_REASON_CODE.value: _ranges((V10, 1, 7)),
    T.CERTIFICATE_TYPE.value: _ranges((V10, 1, 2)),
    T.SECRET_DATA_TYPE.value: _ranges((V10, 1, 2)),
    T.SPLIT_KEY_METHOD.value: _ranges((V10, 1, 3), (V12, 4, 4)),
    T.KEY_COMPRESSION_TYPE.value: _ranges((V10, 1, 4)),
    T.WRAPPING_METHOD.value: _ranges((V10, 1, 5)),
    T.ENCODING_OPTION.value: _ranges((V11, 1, 2)),
    T.KEY_VALUE_LOCATION_TYPE.value: _ranges((V12, 1, 2)),
    T.ALTERNATIVE_NAME_TYPE.value: _ranges((V12, 1, 7)),
    T.VALIDITY_INDICATOR.value: _ranges((V10, 1, 3)),
    T.CANCELLATION_RESULT.value: _ranges((V10, 1, 5)),
    T.OBJECT_GROUP_MEMBER.value: _ranges((V11, 1, 2)),
    T.USAGE_LIMITS_UNIT.value: _ranges((V10, 1, 2)),
    T.CERTIFICATE_REQUEST_TYPE.value: _ranges((V10, 1, 4)),
    T.DERIVATION_METHOD.value: _ranges((V10, 1, 7), (V14, 8, 8), (V20, 9, 10)),
    T.ATTESTATION_TYPE.value: _ranges((V12, 1, 3)),
    T.RESULT_STATUS.value: _ranges((V10, 0, 3)),
    T.BATCH_ERROR_CONTINUATION_OPTION.value: _ranges((V10, 1, 3)),
    T.PUT_FUNCTION.value: _ranges((V10, 1, 2)),
    T.CREDENTIAL_TYPE.value: _ranges((V10, 1, 1), (V11, 2, 2), (V12, 3, 3), (V20, 4, 6)),
    T.KEY_WRAP_TYPE.value: _ranges((V10, 1, 2)),
    T.RNG_ALGORITHM.value: _ranges((V13, 1, 6)),
    T.DRBG_ALGORITHM.value: _ranges((V13, 1, 5)),
    T.FIPS186_VARIATION.value: _ranges((V13, 1, 7)),
    T.RNG_MODE.value: _ranges((V13, 1, 3)),
    T.UNWRAP_MODE.value: _ranges((V13, 1, 3)),
    T.DESTROY_ACTION.value: _ranges((V13, 1, 7)),
    T.SHREDDING_ALGORITHM.value: _ranges((V13, 1, 3)),
    T.VALIDATION_AUTHORITY_TYPE.value: _ranges((V13, 1, 3)),
    T.VALIDATION_TYPE.value: _ranges((V13, 1, 5)),
    T.CLIENT_REGISTRATION_METHOD.value: _ranges((V13, 1, 5)),
    # Profile Name: the 1.3 list (profiles of 1.0-1.3), the 1.4 additions, 2.0's new numbering.
    T.PROFILE_NAME.value: _ranges((V13, 0x01, 0x78), (V14, 0x79, 0x9C), (V20, 0x104, 0x12C)),
    # 2.0 enumerations
    T.UNIQUE_IDENTIFIER.value: _ranges((V20, 0x01, 0x11)),  # the enumerated form only (2.x)
    T.INTEROP_FUNCTION.value: _ranges((V20, 1, 3)),
    T.NIST_KEY_TYPE.value: _ranges((V20, 1, 0x13)),
    T.PROTECTION_LEVEL.value: _ranges((V20, 1, 2)),
    T.ADJUSTMENT_TYPE.value: _ranges((V20, 1, 3)),
    T.ASYNCHRONOUS_INDICATOR.value: _ranges((V20, 1, 3)),
    T.TICKET_TYPE.value: _ranges((V20, 1, 1)),
    T.ENDPOINT_ROLE.value: _ranges((V20, 1, 2)),
    T.DATA.value: _ranges((V20, 1, 7)),
    T.OPAQUE_DATA_TYPE.value: {},  # 1.0-2.1 define no value: only extensions (0x8xxxxxxx)
}
ENUM_SINCE[T.RESULT_REASON.value] = {}  # by function: reason_since()

# Values KMIP 2.0 designated "(Reserved)".
ENUM_REMOVED_IN_20: dict[int, frozenset[int]] = {
    T.OBJECT_TYPE.value: frozenset({enums.ObjectType.TEMPLATE.value}),
    T.KEY_FORMAT_TYPE.value: frozenset(range(0x0E, 0x14)),  # Transparent ECDSA/ECDH/ECMQV keys
    T.CERTIFICATE_REQUEST_TYPE.value: frozenset({enums.CertificateRequestType.PGP.value}),
    T.PROFILE_NAME.value: frozenset(range(0x01, 0x9D)),  # the per-1.x-version profile names
}

# Integers whose bits are each a defined value (KMIP 1.x §9.1.3.3, 2.x §11): bit -> since.
MASK_SINCE: dict[int, dict[int, Version]] = {
    T.CRYPTOGRAPHIC_USAGE_MASK.value: {
        **{1 << n: V10 for n in range(20)},  # Sign .. Translate Unwrap
        **{1 << n: V20 for n in range(20, 24)},  # Authenticate, Unrestricted, FPE Encrypt/Decrypt
    },
    T.STORAGE_STATUS_MASK.value: {1: V10, 2: V10, 4: V20},
    T.PROTECTION_STORAGE_MASK.value: {1 << n: V20 for n in range(14)},
}
MASK_REMOVED_IN_20: dict[int, int] = {
    # Generate/Validate Cryptogram, Translate Encrypt/Decrypt/Wrap/Unwrap: "(Reserved)" in 2.0.
    T.CRYPTOGRAPHIC_USAGE_MASK.value: sum(1 << n for n in range(14, 20)),
}
# Enumerations whose values are tags (2.x Attribute Reference, the Tag of Extension Information...).
TAG_VALUED = frozenset({T.ATTRIBUTE_REFERENCE.value, T.TAG.value, T.EXTENSION_PARENT_STRUCTURE_TAG.value})


def enumeration_known(tag: int) -> bool:
    """Whether the tables say which values of this enumeration exist where."""
    return tag in ENUM_SINCE or tag in TAG_VALUED


@lru_cache(maxsize=65536)
def value_in(tag: int, value: int, version: Version) -> bool:
    """Whether ``version`` defines enumeration value ``value`` of the enumeration ``tag`` carries.
    Values in the extension range (0x8xxxxxxx) are the server's or a vendor's own: never sent to
    a client that did not register them, so they pass. Enumerations the table lacks pass too."""
    if tag in TAG_VALUED:
        return tag_in(value, version)
    if value & 0x80000000:
        return True
    if tag == T.RESULT_REASON.value:
        return reason_since(value) <= version
    table = ENUM_SINCE.get(tag)
    if table is None:
        return True
    since = table.get(value)
    if since is None or since > version:
        return False
    return not (version >= V20 and value in ENUM_REMOVED_IN_20.get(tag, ()))


@lru_cache(maxsize=8192)
def mask_in(tag: int, value: int, version: Version) -> bool:
    """Whether every bit set in the mask ``value`` is one ``version`` defines (0 always is)."""
    table = MASK_SINCE.get(tag)
    if table is None:
        return True
    if version >= V20 and value & MASK_REMOVED_IN_20.get(tag, 0):
        return False
    bit = 1
    while bit <= value:
        if value & bit and (table.get(bit) is None or table[bit] > version):
            return False
        bit <<= 1
    return True
