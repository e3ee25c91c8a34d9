"""Managed objects: where operations meet the Key HSM (sealing) and the store (rows).

Material is the TTLV encoding of the object structure (Symmetric Key, Secret Data, ...), sealed
for exactly one object id and object type, so a row copied onto another object cannot be opened.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from kmip.core.enums import ObjectType, Operation, ProtectionStorageMask, ResultReason, State
from kmip.core.enums import Tags as T

from ..keyhsm import Sealed
from ..keyhsm.kek import parse_label
from ..policy.rules import WRAP_KEY
from ..protocol import attributes as wire
from ..protocol import ttlv
from ..protocol.attributes import Attribute
from ..protocol.errors import KmipError, missing, not_found
from ..protocol.ttlv import Item, Type
from ..store import AttrRow, ObjectRow
from . import formats
from .context import RequestContext

OBJECT_TAGS: dict[int, int] = {
    ObjectType.CERTIFICATE.value: T.CERTIFICATE.value,
    ObjectType.SYMMETRIC_KEY.value: T.SYMMETRIC_KEY.value,
    ObjectType.PUBLIC_KEY.value: T.PUBLIC_KEY.value,
    ObjectType.PRIVATE_KEY.value: T.PRIVATE_KEY.value,
    ObjectType.SPLIT_KEY.value: T.SPLIT_KEY.value,
    ObjectType.SECRET_DATA.value: T.SECRET_DATA.value,
    ObjectType.OPAQUE_DATA.value: T.OPAQUE_OBJECT.value,
    ObjectType.PGP_KEY.value: T.PGP_KEY.value,
}

# Attributes only the server sets; a client naming one in a template is refused.
SERVER_ONLY = frozenset(
    {
        "Unique Identifier",
        "State",
        "Initial Date",
        "Last Change Date",
        "Destroy Date",
        "Compromise Date",
        "Revocation Reason",
        "Digest",
        "Original Creation Date",
        "Always Sensitive",
        "Never Extractable",
    }
)
# Attributes synthesised from the objects row rather than stored.
ROW_ATTRIBUTES = ("Unique Identifier", "Short Unique Identifier", "Object Type", "State", "Fresh")
MULTI_VALUED = frozenset(
    {"Name", "Object Group", "Link", "Application Specific Information", "Alternative Name",
     "Cryptographic Parameters"}
)


def now() -> int:
    return int(time.time())


# -- attribute rows ---------------------------------------------------------------------------------
def search_key(value: Item) -> str | None:
    """The indexable form of an attribute value (Locate compares these in SQL)."""
    if value.type == Type.STRUCTURE:
        name = value.get(T.NAME_VALUE.value)
        if name is not None:
            return name.value  # type: ignore[return-value]
        # Other structures (Application Specific Information, Links...) match as a whole.
        return "sha256:" + hashlib.sha256(ttlv.encode(value)).hexdigest()
    if value.type in (Type.TEXT_STRING,):
        return value.value  # type: ignore[return-value]
    if value.type == Type.BYTE_STRING:
        return None
    return str(int(value.value))  # type: ignore[call-overload]


def to_row(attr: Attribute) -> AttrRow:
    return AttrRow(attr.name, ttlv.encode(attr.value), attr.index, search_key(attr.value))


def from_row(row: AttrRow) -> Attribute:
    return Attribute(row.name, ttlv.decode(row.value), row.position)


def value_item(type_: Type, value: object) -> Item:
    return Item(T.ATTRIBUTE_VALUE.value, type_, value)


def row_attributes(row: ObjectRow) -> list[Attribute]:
    return [
        Attribute("Unique Identifier", value_item(Type.TEXT_STRING, row.uid)),
        # KMIP 2.0: the SHA-256 of the Unique Identifier (derived, so never stored).
        Attribute("Short Unique Identifier", value_item(Type.BYTE_STRING, hashlib.sha256(row.uid.encode()).digest())),
        Attribute("Object Type", value_item(Type.ENUMERATION, row.object_type)),
        Attribute("State", value_item(Type.ENUMERATION, row.state)),
        Attribute("Fresh", value_item(Type.BOOLEAN, row.fresh)),
    ]


def client_attributes(attrs: Iterable[Attribute]) -> list[Attribute]:
    """Validates client-supplied attributes and numbers multi-valued ones."""
    out: list[Attribute] = []
    seen: dict[str, int] = {}
    for a in attrs:
        if a.name in SERVER_ONLY:
            raise KmipError(ResultReason.INVALID_FIELD, f"attribute '{a.name}' is set by the server")
        if a.name == "Object Type":
            continue
        problem = wire.type_problem(a)
        if problem is not None:
            raise KmipError(ResultReason.INVALID_FIELD, problem)
        count = seen.get(a.name, 0)
        if count and a.name not in MULTI_VALUED and not wire.is_custom(a.name):
            raise KmipError(ResultReason.INVALID_FIELD, f"attribute '{a.name}' is single-valued")
        seen[a.name] = count + 1
        out.append(Attribute(a.name, a.value, count))
    return out


def request_attributes(ctx: RequestContext, payload: Item) -> list[Attribute]:
    """Attributes from a 1.x Template-Attribute or a 2.x Attributes structure."""
    attrs: list[Attribute] = []
    template = payload.get(T.TEMPLATE_ATTRIBUTE.value)
    if template is not None:
        if template.get(T.NAME.value) is not None:
            raise KmipError(ResultReason.FEATURE_NOT_SUPPORTED, "named Templates are not supported")
        attrs.extend(wire.parse_v1(a) for a in template.all(T.ATTRIBUTE.value))
    attributes = payload.get(T.ATTRIBUTES.value)
    if attributes is not None:
        attrs.extend(wire.parse_v2(a) for a in attributes)
    return attrs


# -- objects ----------------------------------------------------------------------------------------
def target_uid(ctx: RequestContext, payload: Item | None) -> str:
    uid = payload.value_of(T.UNIQUE_IDENTIFIER.value) if payload is not None else None
    if uid is None:
        uid = ctx.id_placeholder
    if not isinstance(uid, str):
        raise missing("no Unique Identifier in the request and no ID placeholder in this batch")
    return uid


def load_visible(ctx: RequestContext, uid: str, operation: int | None = None) -> ObjectRow:
    """The object, if it exists and the caller may see it (otherwise the same 'not found' as for
    an object that does not exist, so ids of other tenants are not revealed), and if the current
    operation (or ``operation``: e.g. WrapKey for a Get's wrapping key) is permitted on it
    (otherwise Permission Denied)."""
    policy = ctx.services.policy
    row = ctx.services.store.load_object(uid, for_update=ctx.lock_target)
    if row is None or not policy.visible(ctx.identity, row.object_type, row.owner, row.policy):
        raise KmipError(ResultReason.OBJECT_NOT_FOUND, "object not found") if ctx.v2 else not_found()
    operation = operation if operation is not None else ctx.operation
    if operation is not None and not policy.allowed(
        ctx.identity, operation, row.object_type, row.owner, row.policy
    ):
        raise KmipError(ResultReason.PERMISSION_DENIED, f"{_op_name(operation)} is not permitted on this object")
    return row


def _op_name(operation: int) -> str:
    if operation == WRAP_KEY:
        return "wrapping with this key (WrapKey)"
    try:
        return "".join(w.title() for w in Operation(operation).name.split("_"))
    except ValueError:
        return "this operation"


def authorize_new(ctx: RequestContext, object_type: int, attrs: list[Attribute], owner: str | None = None) -> str:
    """Checks the caller may create such an object (for ``owner``; None: for itself); returns its
    Operation Policy Name."""
    policy_name = "default"
    for a in attrs:
        if a.name == "Operation Policy Name":
            if not isinstance(a.value.value, str):
                raise KmipError(ResultReason.INVALID_FIELD, "Operation Policy Name must be text")
            policy_name = a.value.value
    if policy_name not in ctx.services.policy.policy_names():
        raise KmipError(ResultReason.INVALID_FIELD, f"unknown Operation Policy Name '{policy_name}'")
    if ctx.operation is not None and not ctx.services.policy.allowed(
        ctx.identity, ctx.operation, object_type, owner, policy_name
    ):
        raise KmipError(
            ResultReason.PERMISSION_DENIED, f"{_op_name(ctx.operation)} of this object type is not permitted"
        )
    return policy_name


def _aad_context(object_type: int) -> str:
    return f"object-type:{object_type}"


def sealed_of(row: ObjectRow) -> Sealed:
    """The sealed envelope a row holds (the Key HSM validates it before use)."""
    return Sealed(
        kek_label=row.kek_label or "",
        kek_kind=row.kek_kind or "",
        nonce=row.nonce or b"",
        ciphertext=row.ciphertext or b"",
        wrapped_dek=row.wrapped_dek or b"",
        wrap_nonce=row.wrap_nonce or b"",
        format=row.envelope_format,
    )


def sealed_columns(sealed: Sealed) -> dict[str, object]:
    """The objects-table columns that store ``sealed``."""
    return {
        "kek_label": sealed.kek_label,
        "kek_kind": sealed.kek_kind,
        "nonce": sealed.nonce,
        "ciphertext": sealed.ciphertext,
        "wrapped_dek": sealed.wrapped_dek,
        "wrap_nonce": sealed.wrap_nonce,
        "envelope_format": sealed.format,
    }


def open_material(ctx: RequestContext, row: ObjectRow) -> Item:
    if not row.has_material:
        reason = ResultReason.OBJECT_DESTROYED if ctx.v2 else ResultReason.ITEM_NOT_FOUND
        raise KmipError(reason, "object was destroyed; its key material no longer exists")
    plain = ctx.services.keyhsm.open(row.uid, sealed_of(row), _aad_context(row.object_type))
    return ttlv.decode(plain)


# Keys whose Sensitive/Extractable flags (and their Always/Never history) the server records.
_PROTECTABLE = {ObjectType.SYMMETRIC_KEY.value, ObjectType.PRIVATE_KEY.value, ObjectType.PUBLIC_KEY.value}


def flag(value: object, default: bool) -> bool:
    """A stored Sensitive/Extractable value as a bool. Values are type-checked as Booleans on
    the way in (protocol/attributes.TYPES); an older row holding anything else reads as the protective
    answer, never as the permissive one."""
    if isinstance(value, bool):
        return value
    return not default if value is not None else default


@dataclass(frozen=True)
class History:
    """What the inputs of a derived object guarantee: whether every one was always Sensitive and
    never Extractable (KMIP Always Sensitive / Never Extractable, as PKCS#11 carries
    CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE to derived keys)."""

    always_sensitive: bool
    never_extractable: bool


def _protection_defaults(attrs: list[Attribute], history: History | None) -> list[Attribute]:
    given = {a.name: a.value.value for a in attrs}
    out = []
    sensitive = flag(given.get("Sensitive"), False)
    extractable = flag(given.get("Extractable"), True)
    if "Sensitive" not in given:
        out.append(Attribute("Sensitive", value_item(Type.BOOLEAN, sensitive)))
    if "Extractable" not in given:
        out.append(Attribute("Extractable", value_item(Type.BOOLEAN, extractable)))
    always = sensitive and (history is None or history.always_sensitive)
    never = not extractable and (history is None or history.never_extractable)
    out.append(Attribute("Always Sensitive", value_item(Type.BOOLEAN, always)))
    out.append(Attribute("Never Extractable", value_item(Type.BOOLEAN, never)))
    return out


@dataclass(frozen=True)
class Origin:
    """Whose a new object is and which KEK seals it, when it comes from another object (a
    replacement, a derived key): the source's owner and tenant KEK, whoever asks."""

    owner: str
    kek_name: str | None


def origin_of(row: ObjectRow) -> Origin:
    parsed = parse_label(row.kek_label or "")
    # The KEK *name* (its newest version seals the new object); a non-canonical label cannot
    # come from this server's own seal, so it falls back to the default KEK.
    return Origin(row.owner, parsed[0] if parsed is not None else None)


def initial_state(attrs: list[Attribute]) -> int:
    """Pre-Active, unless the client set an Activation Date that has already come."""
    for a in attrs:
        if a.name == "Activation Date" and isinstance(a.value.value, int) and a.value.value <= now():
            return State.ACTIVE.value
    return State.PRE_ACTIVE.value


def insert_new(
    ctx: RequestContext,
    object_type: int,
    obj: Item,
    attrs: list[Attribute],
    state: int | None = None,
    uid: str | None = None,
    origin: Origin | None = None,
    history: History | None = None,
) -> str:
    """Seals and stores a new object with its attributes in one transaction. ``uid`` is given by
    operations that must link objects to each other before they exist (key pairs, ReKey);
    ``origin`` by those whose object comes from another (owner and KEK follow the source), and
    ``history`` by those whose material comes from other objects' material (DeriveKey)."""
    owner = origin.owner if origin is not None else ctx.identity.name
    kek_name = origin.kek_name if origin is not None else ctx.kek_for_identity()
    policy_name = authorize_new(ctx, object_type, attrs, owner if origin is not None else None)
    fresh = all(bool(a.value.value) for a in attrs if a.name == "Fresh")  # Fresh is a column
    attrs = [a for a in attrs if a.name != "Fresh"]
    if state is None:
        state = initial_state(attrs)
    uid = uid or str(uuid.uuid4())
    sealed = ctx.services.keyhsm.seal(
        uid, ttlv.encode(obj), _aad_context(object_type), kek_name=kek_name
    )
    t = now()
    stamp = [
        Attribute("Initial Date", value_item(Type.DATE_TIME, t)),
        Attribute("Last Change Date", value_item(Type.DATE_TIME, t)),
    ]
    if not any(a.name == "Original Creation Date" for a in attrs):  # a 1.4 Register may give it
        stamp.append(Attribute("Original Creation Date", value_item(Type.DATE_TIME, t)))
    key_digest = formats.digest(object_type, obj)  # see formats: keys and certificates only
    if key_digest is not None:
        stamp.append(Attribute("Digest", key_digest))
    if object_type in _PROTECTABLE or (history is not None and any(
            a.name in ("Sensitive", "Extractable") for a in attrs)):
        stamp += _protection_defaults(attrs, history)
    # Where the material rests: in software (the database), as ciphertext under an HSM-wrapped DEK.
    stamp.append(Attribute("Protection Storage Mask", value_item(Type.INTEGER, ProtectionStorageMask.SOFTWARE.value)))
    block = obj.get(T.KEY_BLOCK.value)
    if block is not None and block.get(T.KEY_FORMAT_TYPE.value) is not None:
        key_format = block.value_of(T.KEY_FORMAT_TYPE.value)
        stamp.append(Attribute("Key Format Type", value_item(Type.ENUMERATION, key_format)))
    if state == State.ACTIVE.value and not any(a.name == "Activation Date" for a in attrs):
        stamp.append(Attribute("Activation Date", value_item(Type.DATE_TIME, t)))
    row = ObjectRow(
        uid=uid,
        object_type=object_type,
        state=state,
        owner=owner,
        created_at=time.time_ns() // 1000,
        policy=policy_name,
        fresh=fresh,
        **sealed_columns(sealed),  # type: ignore[arg-type]
    )
    rows = [to_row(a) for a in [*attrs, *stamp]]
    store = ctx.services.store
    names = sorted({k for a in attrs if a.name == "Name" and (k := search_key(a.value)) is not None})
    if names and ctx.services.unique_names:
        # policy.unique_names: the Name rule of Add/Modify Attribute at creation too, checked and
        # written under a lock on each name value (in sorted order: no deadlock) until commit.
        with store.unit_of_work():
            for key in names:
                store.serialize("name:" + key)
                require_name_free(ctx, uid, key)
            store.insert_object(row, rows)
    else:
        store.insert_object(row, rows)
    ctx.id_placeholder = uid
    return uid


def require_name_free(ctx: RequestContext, uid: str, key: str) -> None:
    """Name values are unique (BL-M-8-21) among the objects the caller can see, so that the answer
    never reveals a name another tenant chose. ``key`` is the Name's search key."""
    policy = ctx.services.policy
    scope = policy.locate_scope(ctx.identity)
    rows = ctx.services.store.locate(owner=scope.owner, other_types=scope.other_types,
                                     attribute_filters=[("Name", key)])
    if any(r.uid != uid and policy.visible(ctx.identity, r.object_type, r.owner, r.policy) for r in rows):
        raise KmipError(ResultReason.NON_UNIQUE_NAME_ATTRIBUTE if ctx.v2 else ResultReason.ILLEGAL_OPERATION,
                        "that Name is already in use")


def update(ctx: RequestContext, row: ObjectRow, **changes: object) -> None:
    """One-transaction update that also stamps Last Change Date."""
    replace = list(changes.pop("replace", []))  # type: ignore[call-overload]
    replace.append(to_row(Attribute("Last Change Date", value_item(Type.DATE_TIME, now()))))
    ctx.services.store.update_object(row.uid, row.row_version, replace=replace, **changes)  # type: ignore[arg-type]


def key_block_attributes(obj: Item) -> list[Attribute]:
    """Cryptographic Algorithm/Length as stated inside a Key Block."""
    block = obj.get(T.KEY_BLOCK.value)
    out: list[Attribute] = []
    if block is None:
        return out
    alg = block.get(T.CRYPTOGRAPHIC_ALGORITHM.value)
    if alg is not None:
        out.append(Attribute("Cryptographic Algorithm", value_item(Type.ENUMERATION, alg.value)))
    length = block.get(T.CRYPTOGRAPHIC_LENGTH.value)
    if length is not None:
        out.append(Attribute("Cryptographic Length", value_item(Type.INTEGER, length.value)))
    return out


def uid_payload(uid: str, *extra: Item) -> Item:
    return ttlv.struct_(T.RESPONSE_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, uid), *extra])
