"""What exists in which KMIP protocol version: the one table every response is built against.

A client speaking version V must only receive attributes, operations, object types, query
functions and result reasons that V defines (a KMIP 1.0 client seeing Fresh, or a 1.1 client
seeing Encrypt in a Query answer, may reject the whole message). Each entry gives the first
version that defines the item and, for items KMIP 2.0 removed, the last one.

Sources: the Attributes (§3), Operation (§9.1.3.2.27), Object Type and Result Reason enumerations
of the KMIP 1.0-1.4 specifications and KMIP 2.0/2.1 §4, §11.
"""

from __future__ import annotations

from kmip.core.enums import ObjectType, Operation, QueryFunction, ResultReason

from .attributes import tag_for

Version = tuple[int, int]
V10, V11, V12, V13, V14, V20, V21 = (1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0), (2, 1)
LAST_1X = V14

# Request/Response Header: Client and Server Correlation Value (KMIP 1.4 §7.1/7.2).
CORRELATION_VALUES_SINCE = V14

# -- attributes (by name, as inside the server) ----------------------------------------------------
_ATTRIBUTES_BY_VERSION: dict[Version, tuple[str, ...]] = {
    V10: (
        "Unique Identifier", "Name", "Object Type", "Cryptographic Algorithm", "Cryptographic Length",
        "Cryptographic Parameters", "Cryptographic Domain Parameters", "Certificate Type",
        "Certificate Identifier", "Certificate Subject", "Certificate Issuer", "Digest",
        "Operation Policy Name", "Cryptographic Usage Mask", "Lease Time", "Usage Limits", "State",
        "Initial Date", "Activation Date", "Process Start Date", "Protect Stop Date",
        "Deactivation Date", "Destroy Date", "Compromise Occurrence Date", "Compromise Date",
        "Revocation Reason", "Archive Date", "Object Group", "Link", "Application Specific Information",
        "Contact Information", "Last Change Date",
    ),
    V11: (
        "Certificate Length", "X.509 Certificate Identifier", "X.509 Certificate Subject",
        "X.509 Certificate Issuer", "Digital Signature Algorithm", "Fresh",
    ),
    V12: ("Alternative Name", "Key Value Present", "Key Value Location", "Original Creation Date"),
    V13: ("Random Number Generator",),
    V14: (
        "PKCS12 Friendly Name", "Description", "Comment", "Sensitive", "Always Sensitive",
        "Extractable", "Never Extractable",
    ),
    V20: (
        "Certificate Subject CN", "Certificate Subject O", "Certificate Subject OU",
        "Certificate Subject Email", "Certificate Subject C", "Certificate Subject ST",
        "Certificate Subject L", "Certificate Subject UID", "Certificate Subject Serial Number",
        "Certificate Subject Title", "Certificate Subject DC", "Certificate Subject DN Qualifier",
        "Certificate Issuer CN", "Certificate Issuer O", "Certificate Issuer OU",
        "Certificate Issuer Email", "Certificate Issuer C", "Certificate Issuer ST",
        "Certificate Issuer L", "Certificate Issuer UID", "Certificate Issuer Serial Number",
        "Certificate Issuer Title", "Certificate Issuer DC", "Certificate Issuer DN Qualifier",
        "Key Format Type", "NIST Key Type", "Opaque Data Type", "Protection Level",
        "Protection Period", "Protection Storage Mask", "Quantum Safe", "Short Unique Identifier",
    ),
    V21: (
        "Rotate Automatic", "Rotate Date", "Rotate Generation", "Rotate Interval", "Rotate Latest",
        "Rotate Name", "Rotate Offset",
    ),
}
# KMIP 2.0 removed the deprecated 1.x certificate attributes and Operation Policy Name.
_REMOVED_IN_20 = frozenset(
    {"Certificate Identifier", "Certificate Subject", "Certificate Issuer", "Operation Policy Name"}
)

ATTRIBUTE_SINCE: dict[str, Version] = {
    name: v for v, names in _ATTRIBUTES_BY_VERSION.items() for name in names
}
# The same by tag, for names spelt differently on the way in (the wire layer derives some from
# PyKMIP's tag names: "Nist Key Type", "Pkcs12 Friendly Name").
_SINCE_BY_TAG: dict[int, Version] = {
    tag: v for name, v in ATTRIBUTE_SINCE.items() if (tag := tag_for(name)) is not None
}


def attribute_in(name: str, version: Version) -> bool:
    """Whether ``version`` defines the attribute. Custom (x-/y-) attributes exist everywhere
    (1.x Custom Attribute, 2.x Vendor Attribute); names the table does not know do not."""
    if name.startswith(("x-", "y-")):
        return True
    since = ATTRIBUTE_SINCE.get(name)
    if since is None:
        tag = tag_for(name)
        since = _SINCE_BY_TAG.get(tag) if tag is not None else None
    if since is None or since > version:
        return False
    return not (version >= V20 and name in _REMOVED_IN_20)


def attributes_of(version: Version) -> list[str]:
    """Every standard attribute ``version`` defines."""
    return [n for n in ATTRIBUTE_SINCE if attribute_in(n, version)]


# -- operations ----------------------------------------------------------------------------------------
Op = Operation
OPERATION_SINCE: dict[int, Version] = {
    **{op.value: V10 for op in (
        Op.CREATE, Op.CREATE_KEY_PAIR, Op.REGISTER, Op.REKEY, Op.DERIVE_KEY, Op.CERTIFY, Op.RECERTIFY,
        Op.LOCATE, Op.CHECK, Op.GET, Op.GET_ATTRIBUTES, Op.GET_ATTRIBUTE_LIST, Op.ADD_ATTRIBUTE,
        Op.MODIFY_ATTRIBUTE, Op.DELETE_ATTRIBUTE, Op.OBTAIN_LEASE, Op.GET_USAGE_ALLOCATION, Op.ACTIVATE,
        Op.REVOKE, Op.DESTROY, Op.ARCHIVE, Op.RECOVER, Op.VALIDATE, Op.QUERY, Op.CANCEL, Op.POLL, Op.NOTIFY,
        Op.PUT)},
    **{op.value: V11 for op in (Op.REKEY_KEY_PAIR, Op.DISCOVER_VERSIONS)},
    **{op.value: V12 for op in (
        Op.ENCRYPT, Op.DECRYPT, Op.SIGN, Op.SIGNATURE_VERIFY, Op.MAC, Op.MAC_VERIFY, Op.RNG_RETRIEVE,
        Op.RNG_SEED, Op.HASH, Op.CREATE_SPLIT_KEY, Op.JOIN_SPLIT_KEY)},
    **{op.value: V14 for op in (Op.IMPORT, Op.EXPORT)},
    **{op.value: V20 for op in (
        Op.LOG, Op.LOGIN, Op.LOGOUT, Op.DELEGATED_LOGIN, Op.ADJUST_ATTRIBUTE, Op.SET_ATTRIBUTE,
        Op.SET_ENDPOINT_ROLE, Op.PKCS_11, Op.INTEROP, Op.REPROVISION)},
    # KMIP 2.1: Set Defaults, Set/Get Constraints, Query Asynchronous Requests, Process, Ping.
    **{code: V21 for code in range(0x36, 0x3C)},
}


def operation_in(operation: int, version: Version) -> bool:
    since = OPERATION_SINCE.get(operation)
    return since is not None and since <= version


# -- object types --------------------------------------------------------------------------------------
OBJECT_TYPE_SINCE: dict[int, Version] = {
    ObjectType.CERTIFICATE.value: V10,
    ObjectType.SYMMETRIC_KEY.value: V10,
    ObjectType.PUBLIC_KEY.value: V10,
    ObjectType.PRIVATE_KEY.value: V10,
    ObjectType.SPLIT_KEY.value: V10,
    ObjectType.TEMPLATE.value: V10,  # deprecated in 1.3, removed in 2.0
    ObjectType.SECRET_DATA.value: V10,
    ObjectType.OPAQUE_DATA.value: V10,
    ObjectType.PGP_KEY.value: V12,
    ObjectType.CERTIFICATE_REQUEST.value: V20,
}


def object_type_in(object_type: int, version: Version) -> bool:
    since = OBJECT_TYPE_SINCE.get(object_type)
    if since is None or since > version:
        return False
    return not (object_type == ObjectType.TEMPLATE.value and version >= V20)


# -- query functions -----------------------------------------------------------------------------------
Q = QueryFunction
QUERY_FUNCTION_SINCE: dict[int, Version] = {
    Q.QUERY_OPERATIONS.value: V10,
    Q.QUERY_OBJECTS.value: V10,
    Q.QUERY_SERVER_INFORMATION.value: V10,
    Q.QUERY_APPLICATION_NAMESPACES.value: V10,
    Q.QUERY_EXTENSION_LIST.value: V11,
    Q.QUERY_EXTENSION_MAP.value: V11,
    Q.QUERY_ATTESTATION_TYPES.value: V12,
    Q.QUERY_RNGS.value: V13,
    Q.QUERY_VALIDATIONS.value: V13,
    Q.QUERY_PROFILES.value: V13,
    Q.QUERY_CAPABILITIES.value: V13,
    Q.QUERY_CLIENT_REGISTRATION_METHODS.value: V13,
    Q.QUERY_DEFAULTS_INFORMATION.value: V20,
    Q.QUERY_STORAGE_PROTECTION_MASKS.value: V20,
}


def query_function_in(function: int, version: Version) -> bool:
    since = QUERY_FUNCTION_SINCE.get(function)
    return since is not None and since <= version


# -- result reasons ------------------------------------------------------------------------------------
R = ResultReason
_REASON_SINCE: dict[int, Version] = {
    R.ENCODING_OPTION_ERROR.value: V11,
    R.KEY_VALUE_NOT_PRESENT.value: V12,
    R.ATTESTATION_REQUIRED.value: V12,
    R.ATTESTATION_FAILED.value: V12,
    R.SENSITIVE.value: V14,
    R.NOT_EXTRACTABLE.value: V14,
    R.OBJECT_ALREADY_EXISTS.value: V14,
}
_FIRST_20_REASON, _FIRST_21_REASON = 0x19, 0x4A  # Invalid Ticket; Unknown Object Group

# What a client of an older version is told instead of a reason its version lacks: the nearest
# reason it defines (the 1.x answers the 1.4 mandatory vectors show where 2.x has its own).
_FALLBACK: dict[int, int] = {
    R.OBJECT_NOT_FOUND.value: R.ITEM_NOT_FOUND.value,
    R.OBJECT_DESTROYED.value: R.ITEM_NOT_FOUND.value,
    R.ATTRIBUTE_NOT_FOUND.value: R.ITEM_NOT_FOUND.value,
    R.ATTRIBUTE_INSTANCE_NOT_FOUND.value: R.ITEM_NOT_FOUND.value,
    R.WRAPPING_OBJECT_NOT_FOUND.value: R.ITEM_NOT_FOUND.value,
    R.WRONG_KEY_LIFECYCLE_STATE.value: R.PERMISSION_DENIED.value,
    R.NOT_AUTHORISED.value: R.PERMISSION_DENIED.value,
    R.USAGE_LIMIT_EXCEEDED.value: R.PERMISSION_DENIED.value,
    R.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK.value: R.PERMISSION_DENIED.value,
    R.READ_ONLY_ATTRIBUTE.value: R.PERMISSION_DENIED.value,
    R.ATTRIBUTE_READ_ONLY.value: R.PERMISSION_DENIED.value,
    R.SENSITIVE.value: R.PERMISSION_DENIED.value,
    R.NOT_EXTRACTABLE.value: R.PERMISSION_DENIED.value,
    R.ATTRIBUTE_SINGLE_VALUED.value: R.ILLEGAL_OPERATION.value,
    R.MULTI_VALUED_ATTRIBUTE.value: R.ILLEGAL_OPERATION.value,
    R.NON_UNIQUE_NAME_ATTRIBUTE.value: R.ILLEGAL_OPERATION.value,
    R.ILLEGAL_OBJECT_TYPE.value: R.ILLEGAL_OPERATION.value,
    R.OBJECT_ALREADY_EXISTS.value: R.ILLEGAL_OPERATION.value,
    R.SERVER_LIMIT_EXCEEDED.value: R.ILLEGAL_OPERATION.value,
    R.BAD_CRYPTOGRAPHIC_PARAMETERS.value: R.INVALID_FIELD.value,
    R.UNSUPPORTED_CRYPTOGRAPHIC_PARAMETERS.value: R.FEATURE_NOT_SUPPORTED.value,
    R.KEY_WRAP_TYPE_NOT_SUPPORTED.value: R.FEATURE_NOT_SUPPORTED.value,
    R.UNSUPPORTED_PROTOCOL_VERSION.value: R.INVALID_MESSAGE.value,
    R.CODEC_ERROR.value: R.INVALID_MESSAGE.value,
    R.UNKNOWN_TAG.value: R.INVALID_MESSAGE.value,
    R.INTERNAL_SERVER_ERROR.value: R.GENERAL_FAILURE.value,
    R.CRYPTOGRAPHIC_FAILURE.value: R.CRYPTOGRAPHIC_FAILURE.value,
    R.KEY_VALUE_NOT_PRESENT.value: R.ITEM_NOT_FOUND.value,
    R.ENCODING_OPTION_ERROR.value: R.INVALID_FIELD.value,
    0x4A: R.ITEM_NOT_FOUND.value,  # Unknown Object Group (2.1)
    0x4B: R.INVALID_FIELD.value,  # Constraint Violation (2.1)
}


def reason_since(reason: int) -> Version:
    if reason in _REASON_SINCE:
        return _REASON_SINCE[reason]
    if reason >= _FIRST_21_REASON and reason < R.GENERAL_FAILURE.value:
        return V21
    if reason >= _FIRST_20_REASON and reason < R.GENERAL_FAILURE.value:
        return V20
    return V10


def reason_for(reason: int, version: Version) -> int:
    """The reason to send a ``version`` client: ``reason`` itself, or the nearest one its version
    defines (Invalid Field for 2.x reasons about a malformed request)."""
    seen = set()
    while reason_since(reason) > version and reason not in seen:
        seen.add(reason)
        reason = _FALLBACK.get(reason, R.INVALID_FIELD.value)
    return reason
