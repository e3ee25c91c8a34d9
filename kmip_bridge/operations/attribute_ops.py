"""AddAttribute, ModifyAttribute, SetAttribute, DeleteAttribute and Check (KMIP 1.x and 2.x forms).

1.x requests carry ``Attribute`` structures (name, optional index, value) and the response echoes
the attribute with the index the server assigned; 2.x requests carry tagged attributes inside New
Attribute / Current Attribute (or an Attribute Reference) and the response holds only the Unique
Identifier. Every change is one transaction guarded by the object's row_version
(``objects.update``), which also stamps Last Change Date.

The object is loaded (and authorized) before anything about the request is judged against it, so
a caller who may not see an object gets Item Not Found whatever it asks.
"""

from __future__ import annotations

from kmip.core.enums import ResultReason, State
from kmip.core.enums import Tags as T

from ..protocol import attributes as wire
from ..protocol import ttlv, versions
from ..protocol.attributes import Attribute
from ..protocol.errors import KmipError, invalid_field, missing
from ..protocol.ttlv import Item, Type
from ..store import AttrRow, ObjectRow
from . import objects
from .context import RequestContext

_PRE_ACTIVE = frozenset({State.PRE_ACTIVE.value})
_LIVE = frozenset({State.PRE_ACTIVE.value, State.ACTIVE.value})

# Standard attributes a client may add or modify: their TTLV type, and the states in which they
# may change (None: any). Every other standard attribute is read-only for clients (set by the
# server, derived from the material, or — Operation Policy Name, Cryptographic Usage Mask —
# governing what the client may do with the object).
_WRITABLE: dict[str, tuple[Type, frozenset[int] | None]] = {
    "Name": (Type.STRUCTURE, None),
    "Cryptographic Parameters": (Type.STRUCTURE, None),
    "Usage Limits": (Type.STRUCTURE, None),
    "Activation Date": (Type.DATE_TIME, _PRE_ACTIVE),
    "Process Start Date": (Type.DATE_TIME, _LIVE),
    "Protect Stop Date": (Type.DATE_TIME, _LIVE),
    "Deactivation Date": (Type.DATE_TIME, _LIVE),
    "Object Group": (Type.TEXT_STRING, None),
    "Link": (Type.STRUCTURE, None),
    "Application Specific Information": (Type.STRUCTURE, None),
    "Contact Information": (Type.TEXT_STRING, None),
    "Alternative Name": (Type.STRUCTURE, None),
    "Description": (Type.TEXT_STRING, None),
    "Comment": (Type.TEXT_STRING, None),
    "Sensitive": (Type.BOOLEAN, None),
    "Extractable": (Type.BOOLEAN, None),
}
# Of those, the ones a client may also delete (dates and the protection flags stay once set).
_DELETABLE = frozenset(
    {"Name", "Cryptographic Parameters", "Usage Limits", "Object Group", "Link",
     "Application Specific Information", "Contact Information", "Alternative Name", "Description",
     "Comment"}
)
_CHECKED = ("Usage Limits", "Cryptographic Usage Mask", "Lease Time")


class CheckFailed(KmipError):
    """A failed Check: 1.x returns the request fields that failed in the response payload."""

    def __init__(self, reason: ResultReason, message: str, payload: Item | None = None) -> None:
        super().__init__(reason, message)
        self.payload = payload


# -- errors whose reason differs between 1.x and 2.x -------------------------------------------------
def _by_version(ctx: RequestContext, v1: ResultReason, v2: ResultReason, message: str) -> KmipError:
    return KmipError(v2 if ctx.v2 else v1, message)


def _read_only(ctx: RequestContext, name: str, what: str = "changed") -> KmipError:
    # 1.x has no dedicated reason; its vectors (SKLC-M-3-14) answer Permission Denied.
    return _by_version(
        ctx, ResultReason.PERMISSION_DENIED, ResultReason.ATTRIBUTE_READ_ONLY,
        f"attribute '{name}' cannot be {what} by a client",
    )


def _not_set(ctx: RequestContext, name: str, v1: ResultReason) -> KmipError:
    return _by_version(ctx, v1, ResultReason.ATTRIBUTE_NOT_FOUND, f"the object has no '{name}' attribute")


def _no_instance(ctx: RequestContext, name: str) -> KmipError:
    return _by_version(
        ctx, ResultReason.ITEM_NOT_FOUND, ResultReason.ATTRIBUTE_INSTANCE_NOT_FOUND,
        f"the object has no such instance of '{name}'",
    )


# -- helpers -----------------------------------------------------------------------------------------
def _target(ctx: RequestContext, payload: Item) -> tuple[str, ObjectRow]:
    uid = objects.target_uid(ctx, payload)
    return uid, objects.load_visible(ctx, uid)


def _current_attribute(payload: Item) -> Attribute | None:
    """The attribute inside a 2.x Current Attribute structure, if there is one."""
    return _one_attribute(payload, T.CURRENT_ATTRIBUTE) if payload.get(T.CURRENT_ATTRIBUTE.value) is not None else None


def _new_attribute(payload: Item) -> Attribute:
    """The attribute inside a 2.x New Attribute structure."""
    if payload.get(T.NEW_ATTRIBUTE.value) is None:
        raise missing("the request has no New Attribute")
    return _one_attribute(payload, T.NEW_ATTRIBUTE)


def _one_attribute(payload: Item, tag: T) -> Attribute:
    wrapper = payload.get(tag.value)
    if wrapper is None or wrapper.type != Type.STRUCTURE or len(wrapper.value) != 1:  # type: ignore[arg-type]
        raise invalid_field(f"{tag.name.replace('_', ' ').title()} must hold exactly one attribute")
    return wire.parse_v2(wrapper.value[0])  # type: ignore[index]


def _v1_attribute(payload: Item) -> tuple[Attribute, Item]:
    item = payload.get(T.ATTRIBUTE.value)
    if item is None:
        raise missing("the request has no Attribute")
    return wire.parse_v1(item), item


def _instances(ctx: RequestContext, uid: str, name: str) -> list[AttrRow]:
    return sorted(ctx.services.store.load_attributes(uid, [name]), key=lambda r: r.position)


def _same_value(attr: Attribute, row: AttrRow) -> bool:
    return ttlv.encode(attr.value) == row.value


def _multi(name: str) -> bool:
    return name in objects.MULTI_VALUED or wire.is_custom(name)


def _check_writable(ctx: RequestContext, row: ObjectRow, attr: Attribute, existing: list[AttrRow]) -> None:
    """Refuses a value the client may not give this attribute of this object now."""
    if wire.is_custom(attr.name):
        return  # x-/y- attributes: any type, any number of instances
    if not versions.attribute_in(attr.name, ctx.version):
        raise _by_version(
            ctx, ResultReason.INVALID_FIELD, ResultReason.UNSUPPORTED_ATTRIBUTE,
            f"'{attr.name}' is not an attribute of KMIP {ctx.version[0]}.{ctx.version[1]}",
        )
    rule = _WRITABLE.get(attr.name)
    if rule is None:
        if wire.tag_for(attr.name) is not None:
            raise _read_only(ctx, attr.name)
        raise _by_version(
            ctx, ResultReason.INVALID_FIELD, ResultReason.UNSUPPORTED_ATTRIBUTE,
            f"'{attr.name}' is not an attribute this server knows (custom ones start with x- or y-)",
        )
    _type, states = rule
    bad_name = attr.name == "Name" and (attr.value.type != Type.STRUCTURE or not isinstance(
        attr.value.value_of(T.NAME_VALUE.value), str))
    problem = wire.type_problem(attr) or (f"attribute '{attr.name}' has no Name Value" if bad_name else None)
    if problem is not None:
        raise _by_version(ctx, ResultReason.INVALID_FIELD, ResultReason.INVALID_ATTRIBUTE_VALUE, problem)
    if states is not None and row.state not in states:
        when = "Pre-Active" if states == _PRE_ACTIVE else "Pre-Active or Active"
        raise ctx.wrong_state(f"'{attr.name}' can only be changed while the object is {when}")
    # Protection only ratchets up: once Sensitive, always; once not Extractable, never again.
    current = objects.from_row(existing[0]).value.value if existing else None
    if attr.name == "Sensitive" and objects.flag(current, False) and attr.value.value is False:
        raise _read_only(ctx, attr.name, "set back to false")
    if attr.name == "Extractable" and not objects.flag(current, True) and attr.value.value is True:
        raise _read_only(ctx, attr.name, "set back to true")


def _check_name_free(ctx: RequestContext, uid: str, attr: Attribute, own: list[AttrRow]) -> None:
    """Name values are unique among the objects the caller can see (objects.require_name_free)."""
    if attr.name != "Name":
        return
    key = objects.search_key(attr.value)
    if key is None:
        return
    if any(r.search == key for r in own):
        raise _by_version(
            ctx, ResultReason.ILLEGAL_OPERATION, ResultReason.NON_UNIQUE_NAME_ATTRIBUTE,
            "that Name is already in use",
        )
    objects.require_name_free(ctx, uid, key)


def _write_named(ctx: RequestContext, uid: str, row: ObjectRow, attr: Attribute, own: list[AttrRow],
                 **changes: object) -> None:
    """Writes a change that may set ``attr``. A Name is written and checked free in one
    transaction that holds a lock on that name value until commit: the row_version guards one
    object, but two requests (on any node) giving the same Name to two objects would otherwise
    both pass the check. The object's row is written (locked) before the name is locked, always
    in that order, so that two such transactions cannot deadlock; a taken name rolls it back."""
    key = objects.search_key(attr.value) if attr.name == "Name" else None
    if key is None:
        objects.update(ctx, row, **changes)
        return
    store = ctx.services.store
    with store.unit_of_work():
        objects.update(ctx, row, **changes)
        store.serialize("name:" + key)
        _check_name_free(ctx, uid, attr, own)


def _answer(ctx: RequestContext, uid: str, attr: Attribute, index_given: bool = False) -> Item:
    """1.x echoes the attribute (Attribute Index omitted when 0, unless the request named the
    index: then it is echoed as given); 2.x only the id."""
    ctx.id_placeholder = uid
    if ctx.v2:
        return objects.uid_payload(uid)
    item = wire.to_v1(attr)
    if index_given and not attr.index:
        name, *rest = item.value  # type: ignore[misc]
        item = ttlv.struct_(T.ATTRIBUTE, [name, ttlv.integer(T.ATTRIBUTE_INDEX, 0), *rest])
    return objects.uid_payload(uid, item)


# -- operations --------------------------------------------------------------------------------------
def add_attribute(ctx: RequestContext, payload: Item) -> Item:
    uid, row = _target(ctx, payload)
    if ctx.v2:
        attr = _new_attribute(payload)
    else:
        attr, item = _v1_attribute(payload)
        if item.get(T.ATTRIBUTE_INDEX.value) is not None:
            raise invalid_field("Add Attribute takes no Attribute Index: the server assigns it")
    existing = _instances(ctx, uid, attr.name)
    _check_writable(ctx, row, attr, existing)
    same = [r for r in existing if _same_value(attr, r)]
    if same and _multi(attr.name) and attr.name != "Name":
        # A client that lost the reply sends the same Add Attribute again (KMIP says nothing of
        # duplicate values): an instance with exactly this value is the one it added, so it is
        # answered with that instance and nothing is written. Single-valued attributes keep their
        # error below, and so does a Name (BL-M-8-21: a Name in use is refused).
        return _answer(ctx, uid, Attribute(attr.name, attr.value, same[0].position))
    if existing and not _multi(attr.name):
        raise _by_version(
            ctx, ResultReason.ILLEGAL_OPERATION, ResultReason.ATTRIBUTE_SINGLE_VALUED,
            f"attribute '{attr.name}' is single-valued and already set",
        )
    # Indexes never change once given (KMIP 1.x §2.1.1), so a new instance goes after the highest.
    added = Attribute(attr.name, attr.value, existing[-1].position + 1 if existing else 0)
    _write_named(ctx, uid, row, attr, existing, add=[objects.to_row(added)])
    return _answer(ctx, uid, added)


def modify_attribute(ctx: RequestContext, payload: Item) -> Item:
    uid, row = _target(ctx, payload)
    index_given = False
    if ctx.v2:
        new = _new_attribute(payload)
        current = _current_attribute(payload)
        if current is not None and current.name != new.name:
            raise invalid_field("Current Attribute and New Attribute name different attributes")
        existing = _instances(ctx, uid, new.name)
        _check_writable(ctx, row, new, existing)
        if not existing:
            raise _not_set(ctx, new.name, ResultReason.INVALID_FIELD)
        if current is None:
            target = existing[0]
        else:
            found = [r for r in existing if _same_value(current, r)]
            if not found:
                raise _no_instance(ctx, new.name)
            target = found[0]
    else:
        new, item = _v1_attribute(payload)
        index_given = item.get(T.ATTRIBUTE_INDEX.value) is not None
        existing = _instances(ctx, uid, new.name)
        _check_writable(ctx, row, new, existing)
        if not existing:
            # "A specified attribute does not exist (it needs to first be added)": Invalid Field.
            raise _not_set(ctx, new.name, ResultReason.INVALID_FIELD)
        found = [r for r in existing if r.position == new.index]
        if not found:
            raise _no_instance(ctx, new.name)
        target = found[0]
    changed = Attribute(new.name, new.value, target.position)
    _write_named(ctx, uid, row, new, [r for r in existing if r is not target],
                 delete=[(new.name, target.position)], add=[objects.to_row(changed)])
    return _answer(ctx, uid, changed, index_given)


def set_attribute(ctx: RequestContext, payload: Item) -> Item:
    if not ctx.v2:
        raise KmipError(ResultReason.OPERATION_NOT_SUPPORTED, "Set Attribute is a KMIP 2.x operation")
    uid, row = _target(ctx, payload)
    new = _new_attribute(payload)
    existing = _instances(ctx, uid, new.name)
    _check_writable(ctx, row, new, existing)
    if new.name in objects.MULTI_VALUED:
        raise KmipError(
            ResultReason.MULTI_VALUED_ATTRIBUTE,
            f"attribute '{new.name}' is multi-valued: use Add Attribute or Modify Attribute",
        )
    # Sets the one value whether or not the attribute was there (custom ones lose extra instances).
    objects.update(ctx, row, replace=[objects.to_row(Attribute(new.name, new.value, 0))])
    ctx.id_placeholder = uid
    return objects.uid_payload(uid)


def delete_attribute(ctx: RequestContext, payload: Item) -> Item:
    uid, row = _target(ctx, payload)
    current: Attribute | None = None
    index = 0
    if ctx.v2:
        current = _current_attribute(payload)
        reference = payload.get(T.ATTRIBUTE_REFERENCE.value)
        if current is not None:
            name = current.name
        elif reference is not None:
            name = wire.parse_names_v2(reference)
        else:
            raise missing("Delete Attribute needs a Current Attribute or an Attribute Reference")
    else:
        given = payload.value_of(T.ATTRIBUTE_NAME.value)
        if not isinstance(given, str):
            raise missing("Delete Attribute needs an Attribute Name")
        name = given
        position = payload.value_of(T.ATTRIBUTE_INDEX.value, 0)
        if not isinstance(position, int):
            raise invalid_field("Attribute Index must be an integer")
        index = position
    if not wire.is_custom(name) and name not in _DELETABLE and wire.tag_for(name) is not None:
        raise _read_only(ctx, name, "deleted")
    existing = _instances(ctx, uid, name)
    if not existing:
        raise _not_set(ctx, name, ResultReason.ITEM_NOT_FOUND)
    if ctx.v2:
        if current is None:
            # An Attribute Reference deletes the attribute: every instance of it.
            objects.update(ctx, row, delete=[(name, None)])
        else:
            found = [r for r in existing if _same_value(current, r)]
            if not found:
                raise _no_instance(ctx, name)
            objects.update(ctx, row, delete=[(name, found[0].position)])
        ctx.id_placeholder = uid
        return objects.uid_payload(uid)
    found = [r for r in existing if r.position == index]
    if not found:
        raise _no_instance(ctx, name)
    objects.update(ctx, row, delete=[(name, index)])
    # 1.x answers with the attribute it deleted (SKFF-M-9-14).
    return _answer(ctx, uid, objects.from_row(found[0]),
                   index_given=payload.get(T.ATTRIBUTE_INDEX.value) is not None)


def check(ctx: RequestContext, payload: Item) -> Item:
    """Whether the object may be used as the request says; on failure the ID placeholder is
    emptied and the failing fields are named (1.x: returned in the payload; 2.x: by reason)."""
    uid, _row = _target(ctx, payload)
    ctx.id_placeholder = None
    have = {r.name: objects.from_row(r).value for r in ctx.services.store.load_attributes(uid, list(_CHECKED))}
    failed: list[tuple[Item, ResultReason]] = []

    count = payload.get(T.USAGE_LIMITS_COUNT.value)
    limits = have.get("Usage Limits")
    if count is not None and limits is not None and limits.type == Type.STRUCTURE:
        left = limits.value_of(T.USAGE_LIMITS_COUNT.value, limits.value_of(T.USAGE_LIMITS_TOTAL.value))
        if isinstance(left, int) and int(count.value) > left:  # type: ignore[call-overload]
            failed.append((count, ResultReason.USAGE_LIMIT_EXCEEDED))

    mask = payload.get(T.CRYPTOGRAPHIC_USAGE_MASK.value)
    if mask is not None:
        allowed = have.get("Cryptographic Usage Mask")
        # No mask on the object grants no usage (BL-M-3-21 refuses a bit the mask lacks).
        granted = int(allowed.value) if allowed is not None else 0  # type: ignore[call-overload]
        if int(mask.value) & ~granted:  # type: ignore[call-overload]
            failed.append((mask, ResultReason.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK))

    lease = payload.get(T.LEASE_TIME.value)
    server_lease = have.get("Lease Time")
    if lease is not None and server_lease is not None and int(lease.value) > int(server_lease.value):  # type: ignore[call-overload]
        failed.append((lease, ResultReason.PERMISSION_DENIED))

    if failed:
        fields = ", ".join(ttlv.tag_name(item.tag).replace("_", " ").title() for item, _ in failed)
        message = f"Check failed: {fields}"
        if ctx.v2:
            raise CheckFailed(failed[0][1], message)
        # 1.x: "the operation returns the set of attributes specified in the request that
        # caused the server policy denial", without the Unique Identifier.
        raise CheckFailed(
            ResultReason.PERMISSION_DENIED, message, ttlv.struct_(T.RESPONSE_PAYLOAD, [i for i, _ in failed])
        )
    ctx.id_placeholder = uid
    return objects.uid_payload(uid)
