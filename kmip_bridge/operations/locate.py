"""Locate: filtering happens in SQL (indexed attribute search keys), never by loading objects."""

from __future__ import annotations

from kmip.core.enums import ObjectGroupMember, Operation, ResultReason, State, StorageStatusMask
from kmip.core.enums import Tags as T

from ..protocol import attributes as wire
from ..protocol import ttlv
from ..protocol.attributes import Attribute
from ..protocol.errors import KmipError
from ..protocol.ttlv import Item, Type
from . import objects
from .context import RequestContext

_DESTROYED = (State.DESTROYED.value, State.DESTROYED_COMPROMISED.value)

# The type KMIP defines for each attribute a Locate may name. A criterion of another type cannot
# match anything and would reach SQL as a comparison of the wrong kind (a Name as a date range, a
# usage mask past 64 bits): refused as Invalid Field before any query runs.
_E, _I, _S, _D, _B, _X = Type.ENUMERATION, Type.INTEGER, Type.TEXT_STRING, Type.DATE_TIME, Type.BOOLEAN, Type.STRUCTURE
_TYPES: dict[str, Type] = {
    "Object Type": _E, "State": _E, "Cryptographic Algorithm": _E, "Certificate Type": _E,
    "Object Group Member": _E, "Key Format Type": _E,
    "Cryptographic Length": _I, "Cryptographic Usage Mask": _I,
    "Unique Identifier": _S, "Operation Policy Name": _S, "Object Group": _S, "Contact Information": _S,
    "Description": _S, "Comment": _S,
    "Name": _X, "Link": _X, "Application Specific Information": _X, "Cryptographic Parameters": _X,
    "Cryptographic Domain Parameters": _X, "Digest": _X, "Usage Limits": _X, "Revocation Reason": _X,
    "Alternative Name": _X, "Key Value Location": _X, "Certificate Identifier": _X,
    "Fresh": _B, "Sensitive": _B, "Extractable": _B, "Always Sensitive": _B, "Never Extractable": _B,
    "Lease Time": Type.INTERVAL,
    **{n: _D for n in ("Initial Date", "Activation Date", "Process Start Date", "Protect Stop Date",
                       "Deactivation Date", "Destroy Date", "Compromise Occurrence Date", "Compromise Date",
                       "Archive Date", "Last Change Date", "Original Creation Date")},
}
_INT64 = range(-(2**63), 2**63)


def _check(c: Attribute) -> None:
    expected = _TYPES.get(c.name)
    if expected is not None and c.value.type != expected:
        raise KmipError(ResultReason.INVALID_FIELD,
                        f"Locate: '{c.name}' is a {expected.name.replace('_', ' ').title()}, "
                        f"not a {c.value.type.name.replace('_', ' ').title()}")
    if c.value.type in (Type.INTEGER, Type.LONG_INTEGER, Type.BIG_INTEGER, Type.ENUMERATION, Type.DATE_TIME,
                        Type.INTERVAL) and c.value.value not in _INT64:
        raise KmipError(ResultReason.INVALID_FIELD, f"Locate: the value of '{c.name}' is out of range")


def _count(payload: Item, tag: T) -> int | None:
    value = payload.value_of(tag.value)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value not in range(2**31):
        raise KmipError(ResultReason.INVALID_FIELD, f"{ttlv.tag_name(tag.value).replace('_', ' ').title()} "
                                                    "must be a non-negative Integer")
    return value
_LIVE = (State.PRE_ACTIVE.value, State.ACTIVE.value, State.DEACTIVATED.value, State.COMPROMISED.value)


def _excluded_states(payload: Item, state: object) -> tuple[int, ...] | None:
    """States the Storage Status Mask leaves out (None: nothing can match). Destroyed objects keep
    their metadata but are not in on-line storage: as KMIP 2.x says, an omitted mask searches
    on-line objects only, and Destroyed Storage (0x4) asks for destroyed ones. A State criterion
    names the state it wants, so it is not narrowed further."""
    if state is not None:
        return ()
    mask = payload.value_of(T.STORAGE_STATUS_MASK.value)
    if not isinstance(mask, int):
        return _DESTROYED
    online = bool(mask & StorageStatusMask.ONLINE_STORAGE.value)
    destroyed = bool(mask & StorageStatusMask.DESTROYED_STORAGE.value)
    if online and destroyed:
        return ()
    if online:
        return _DESTROYED
    return _LIVE if destroyed else None  # nothing is archived here


def _criteria(ctx: RequestContext, payload: Item) -> list[Attribute]:
    crit = [wire.parse_v1(a) for a in payload.all(T.ATTRIBUTE.value)]
    # Some appliances (FortiGate) wrap 1.x criteria in a Template-Attribute, which Locate does not
    # define: read as criteria, never ignored (ignoring them would match every object).
    for template in payload.all(T.TEMPLATE_ATTRIBUTE.value):
        if template.type != Type.STRUCTURE or template.get(T.NAME.value) is not None:
            raise KmipError(ResultReason.INVALID_FIELD, "Locate takes a Template-Attribute of attributes only")
        crit += [wire.parse_v1(a) for a in template.all(T.ATTRIBUTE.value)]
    attributes = payload.get(T.ATTRIBUTES.value)
    if attributes is not None:
        if attributes.type != Type.STRUCTURE:
            raise KmipError(ResultReason.INVALID_FIELD, "Attributes must be a structure")
        crit += [wire.parse_v2(a) for a in attributes.value]  # type: ignore[union-attr]
    for c in crit:
        _check(c)
    return crit


def _group_member(ctx: RequestContext, payload: Item, criteria: list[Attribute]) -> int | None:
    """Object Group Member (KMIP 1.1+ Locate field; also taken as a criterion): Group Member Fresh
    finds objects whose Fresh attribute is still true (never returned by a Get); Group Member
    Default finds the group's default object, which this server's policy defines as the newest
    object matching the other criteria (one identifier)."""
    given = [payload.get(T.OBJECT_GROUP_MEMBER.value)] + [c.value for c in criteria if c.name == "Object Group Member"]
    values = {g.value for g in given if g is not None}
    if not values:
        return None
    if ctx.version < (1, 1):
        raise KmipError(ResultReason.INVALID_FIELD, "Object Group Member is a KMIP 1.1 field")
    if any(g is not None and g.type != Type.ENUMERATION for g in given) or len(values) > 1 \
            or not values <= {m.value for m in ObjectGroupMember}:
        raise KmipError(ResultReason.INVALID_FIELD, "Object Group Member is one of Group Member Fresh or Default")
    return values.pop()  # type: ignore[return-value]


def handle(ctx: RequestContext, payload: Item) -> Item:
    maximum = _count(payload, T.MAXIMUM_ITEMS)
    offset = _count(payload, T.OFFSET_ITEMS) or 0
    object_type = state = uid = policy_name = None
    filters: list[tuple[str, str | tuple[int, int]]] = []
    bit_filters: list[tuple[str, int]] = []
    criteria = _criteria(ctx, payload)
    member = _group_member(ctx, payload, criteria)
    fresh = True if member == ObjectGroupMember.GROUP_MEMBER_FRESH.value else None
    contradiction = False  # e.g. Fresh false with Group Member Fresh: nothing can match
    dates: dict[str, list[int]] = {}
    ranged: set[str] = set()
    for c in criteria:
        if c.value.type == Type.DATE_TIME:
            dates.setdefault(c.name, []).append(c.value.value)  # type: ignore[arg-type]
    for c in criteria:
        if c.name == "Object Type":
            object_type = c.value.value
        elif c.name == "State":
            state = c.value.value
        elif c.name == "Unique Identifier" and isinstance(c.value.value, str):
            uid = c.value.value
        elif c.name == "Object Group Member":
            continue  # read above
        elif c.name == "Fresh":  # a column, not an attribute row (objects.insert_new)
            contradiction = contradiction or (fresh is not None and fresh is not c.value.value)
            fresh = bool(c.value.value)
        elif c.name == "Operation Policy Name" and isinstance(c.value.value, str):
            # The policy every object has (named by its creator, else "default").
            policy_name = c.value.value
        elif c.name == "Cryptographic Usage Mask" and isinstance(c.value.value, int):
            # KMIP Locate: a candidate matches when its mask has every bit the request sets.
            bit_filters.append((c.name, c.value.value))
        elif c.name in ranged:
            continue  # the other end of a range already added
        elif len(dates.get(c.name, ())) == 2:
            # Two instances of a date attribute are a range (KMIP Locate), inclusive.
            lo, hi = sorted(dates[c.name])
            ranged.add(c.name)
            filters.append((c.name, (lo, hi)))
        else:
            key = objects.search_key(c.value)
            if key is None:
                raise KmipError(
                    ResultReason.FEATURE_NOT_SUPPORTED, f"Locate cannot match on '{c.name}'"
                )
            filters.append((c.name, key))
    # At most max_located_items identifiers per answer, whatever Maximum Items asks (0 or none:
    # the cap); a client pages past it with Offset Items, told the total by Located Items.
    cap = ctx.services.max_located_items
    limit = min(maximum, cap) if isinstance(maximum, int) and maximum > 0 else cap
    if member == ObjectGroupMember.GROUP_MEMBER_DEFAULT.value:
        offset, limit = 0, 1  # the one default object (newest first: the store's order)
    # Located Items (KMIP 1.3+: "MAY be returned even if Offset Items is not present") counts
    # every match. It answers a client that pages (Maximum or Offset Items in the request), and
    # only that one: the OASIS test vectors expect none for a plain Locate.
    paging = payload.get(T.MAXIMUM_ITEMS.value) is not None or payload.get(T.OFFSET_ITEMS.value) is not None
    counted = ctx.version >= (1, 3) and paging
    excluded = _excluded_states(payload, state)
    if excluded is None or contradiction:
        return ttlv.struct_(T.RESPONSE_PAYLOAD, [ttlv.integer(T.LOCATED_ITEMS, 0) if counted else None])
    policy = ctx.services.policy
    scope = policy.locate_scope(ctx.identity)
    store = ctx.services.store
    criteria = {
        "owner": scope.owner, "other_types": scope.other_types, "object_type": object_type, "state": state,
        "attribute_filters": filters, "exclude_states": excluded, "uid": uid, "policy": policy_name,
        "bit_filters": bit_filters, "fresh": fresh,
    }
    if scope.exact:
        # The store's order is stable (newest first, then by id), so pages do not overlap. The
        # database counts the matches: loading them all to count cost seconds at 10^6 objects.
        rows = store.locate(**criteria, offset=offset, limit=limit)  # type: ignore[arg-type]
        default = member == ObjectGroupMember.GROUP_MEMBER_DEFAULT.value  # counts its one object (below)
        total = store.count_located(**criteria) if counted and not default else len(rows)
    else:
        # Per-object policies can hide candidates, so paging happens after filtering.
        rows = [
            r for r in store.locate(**criteria)  # type: ignore[arg-type]
            if policy.visible(ctx.identity, r.object_type, r.owner, r.policy)
            and policy.allowed(ctx.identity, Operation.LOCATE.value, r.object_type, r.owner, r.policy)
        ]
        total = len(rows)
        rows = rows[offset : offset + limit]
    if member == ObjectGroupMember.GROUP_MEMBER_DEFAULT.value:
        total = len(rows)
    uids = [r.uid for r in rows]
    if len(uids) == 1:
        ctx.id_placeholder = uids[0]
    body = [ttlv.integer(T.LOCATED_ITEMS, total) if counted else None]
    body += [ttlv.text(T.UNIQUE_IDENTIFIER, u) for u in uids]
    return ttlv.struct_(T.RESPONSE_PAYLOAD, body)
