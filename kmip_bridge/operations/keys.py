"""Helpers shared by the operations that make keys in pairs or from other keys (CreateKeyPair,
ReKey, ReKeyKeyPair, DeriveKey) and by wrapped Get: attribute templates, Link attributes, the
state a new key starts in, usage-mask checks, and what a replacement key inherits.
"""

from __future__ import annotations

from collections.abc import Iterable

from kmip.core.enums import ResultReason, State
from kmip.core.enums import Tags as T

from ..protocol import attributes as wire
from ..protocol import ttlv
from ..protocol.attributes import Attribute
from ..protocol.errors import KmipError
from ..protocol.ttlv import Item, Type
from ..store import AttrRow, ObjectRow
from . import objects
from .context import RequestContext

DESTROYED = frozenset({State.DESTROYED.value, State.DESTROYED_COMPROMISED.value})


def by_version(ctx: RequestContext, v1: ResultReason, v2: ResultReason, message: str) -> KmipError:
    """KMIP 2.x added precise result reasons; 1.x clients get the older, broader one."""
    return KmipError(v2 if ctx.v2 else v1, message)


# -- templates -------------------------------------------------------------------------------------
_V1_TEMPLATES = frozenset(
    {T.TEMPLATE_ATTRIBUTE.value, T.COMMON_TEMPLATE_ATTRIBUTE.value,
     T.PRIVATE_KEY_TEMPLATE_ATTRIBUTE.value, T.PUBLIC_KEY_TEMPLATE_ATTRIBUTE.value}
)


def template_attributes(item: Item | None) -> list[Attribute]:
    """The attributes of a 1.x (Common/Private/Public Key) Template-Attribute or of a 2.x
    (Common/Private/Public Key) Attributes structure."""
    if item is None:
        return []
    if item.type != Type.STRUCTURE:
        raise KmipError(ResultReason.INVALID_FIELD, "attribute templates must be structures")
    if item.tag in _V1_TEMPLATES:
        if item.get(T.NAME.value) is not None:
            raise KmipError(ResultReason.FEATURE_NOT_SUPPORTED, "named Templates are not supported")
        return [wire.parse_v1(a) for a in item.all(T.ATTRIBUTE.value)]
    return [wire.parse_v2(a) for a in item]


def pair_templates(payload: Item) -> tuple[list[Attribute], list[Attribute], list[Attribute]]:
    """(common, private, public) attributes of a CreateKeyPair / ReKeyKeyPair request."""

    def one(v1: T, v2: T) -> list[Attribute]:
        return template_attributes(payload.get(v1.value)) + template_attributes(payload.get(v2.value))

    return (
        one(T.COMMON_TEMPLATE_ATTRIBUTE, T.COMMON_ATTRIBUTES),
        one(T.PRIVATE_KEY_TEMPLATE_ATTRIBUTE, T.PRIVATE_KEY_ATTRIBUTES),
        one(T.PUBLIC_KEY_TEMPLATE_ATTRIBUTE, T.PUBLIC_KEY_ATTRIBUTES),
    )


def override(base: Iterable[Attribute], specific: list[Attribute]) -> list[Attribute]:
    """``base`` with every attribute that ``specific`` names replaced by ``specific``'s values (the
    private/public templates take precedence over the common one)."""
    named = {a.name for a in specific}
    return renumber([a for a in base if a.name not in named] + specific)


def renumber(attrs: list[Attribute]) -> list[Attribute]:
    """Attribute Index 0.. per name, in order."""
    seen: dict[str, int] = {}
    out = []
    for a in attrs:
        out.append(Attribute(a.name, a.value, seen.get(a.name, 0)))
        seen[a.name] = seen.get(a.name, 0) + 1
    return out


def value(attrs: Iterable[Attribute], name: str) -> object:
    for a in attrs:
        if a.name == name:
            return a.value.value
    return None


def replace(attrs: list[Attribute], name: str, item: Item) -> list[Attribute]:
    return [a for a in attrs if a.name != name] + [Attribute(name, item)]


# -- links -----------------------------------------------------------------------------------------
def link_value(link_type: int, uid: str) -> Item:
    return ttlv.struct_(
        T.ATTRIBUTE_VALUE,
        [ttlv.enum(T.LINK_TYPE, link_type), ttlv.text(T.LINKED_OBJECT_IDENTIFIER, uid)],
    )


def with_link(attrs: list[Attribute], link_type: int, uid: str) -> list[Attribute]:
    index = max((a.index for a in attrs if a.name == "Link"), default=-1) + 1
    return [*attrs, Attribute("Link", link_value(link_type, uid), index)]


def link_row(ctx: RequestContext, uid: str, link_type: int, target: str) -> AttrRow:
    """A new Link instance for an existing object (after the ones it has)."""
    existing = ctx.services.store.load_attributes(uid, ["Link"])
    index = max((r.position for r in existing), default=-1) + 1
    return objects.to_row(Attribute("Link", link_value(link_type, target), index))


def linked(attrs: Iterable[Attribute], link_type: int) -> str | None:
    for a in attrs:
        if a.name == "Link" and a.value.type == Type.STRUCTURE and a.value.value_of(T.LINK_TYPE.value) == link_type:
            target = a.value.value_of(T.LINKED_OBJECT_IDENTIFIER.value)
            return target if isinstance(target, str) else None
    return None


# -- state and usage -------------------------------------------------------------------------------
def initial_state(attrs: Iterable[Attribute], now: int) -> int:
    """The state a new key starts in, from its dates (an Activation Date already passed makes it
    Active; a Deactivation Date already passed, Deactivated)."""
    attrs = list(attrs)
    activation = value(attrs, "Activation Date")
    if not isinstance(activation, int) or activation > now:
        return State.PRE_ACTIVE.value
    deactivation = value(attrs, "Deactivation Date")
    if isinstance(deactivation, int) and deactivation <= now:
        return State.DEACTIVATED.value
    return State.ACTIVE.value


def usage_mask(ctx: RequestContext, row: ObjectRow) -> int | None:
    """The object's Cryptographic Usage Mask, or None if it has none. A stored value that is not
    an Integer (rows from before attribute types were checked) grants nothing."""
    masks = ctx.services.store.load_attributes(row.uid, ["Cryptographic Usage Mask"])
    if not masks:
        return None
    mask = objects.from_row(masks[0]).value.value
    return mask if isinstance(mask, int) and not isinstance(mask, bool) else 0


def require_usable(
    ctx: RequestContext, row: ObjectRow, usage_bit: int, role: str, pre_active_ok: bool = False,
    mask_required: bool = False,
) -> None:
    """A key used by the server on the caller's behalf (to wrap, to derive from) must be Active
    (or, where the caller allows it, Pre-Active) and, when it declares a Cryptographic Usage
    Mask (``mask_required``: in any case), allow that use."""
    allowed = (State.ACTIVE.value, State.PRE_ACTIVE.value) if pre_active_ok else (State.ACTIVE.value,)
    if row.state not in allowed:
        raise ctx.wrong_state(f"the {role} is not Active")
    mask = usage_mask(ctx, row)
    if (mask is None and mask_required) or (mask is not None and not mask & usage_bit):
        raise by_version(
            ctx, ResultReason.PERMISSION_DENIED, ResultReason.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK,
            f"the {role}'s Cryptographic Usage Mask does not allow this use",
        )


# -- replacement keys (ReKey, ReKeyKeyPair) --------------------------------------------------------
# Attributes a replacement key does not take from the key it replaces: the server sets them anew
# (identity, state, dates of its own life, digest of its own material, its own links).
_NOT_INHERITED = frozenset(
    {"Unique Identifier", "Object Type", "State", "Initial Date", "Last Change Date",
     "Original Creation Date", "Destroy Date", "Compromise Date", "Compromise Occurrence Date",
     "Revocation Reason", "Archive Date", "Digest", "Link", "Fresh", "Always Sensitive",
     "Never Extractable", "Key Value Present", "Key Value Location", "Random Number Generator",
     "Activation Date", "Process Start Date", "Protect Stop Date", "Deactivation Date"}
)
_SHIFTED_DATES = ("Process Start Date", "Protect Stop Date", "Deactivation Date")


def replacement_attributes(
    old: list[Attribute], template: list[Attribute], offset: object, now: int
) -> list[Attribute]:
    """The attributes of a key that replaces one with attributes ``old`` (KMIP Re-key attribute
    requirements): everything but the server-set ones is copied — Names included, since the
    replacement takes them over — then the request's ``template`` overrides. Without an Offset the
    Activation, Process Start, Protect Stop and Deactivation Dates are copied; with one, the
    replacement activates at now + Offset and the other dates keep their distance to it."""
    out = [a for a in old if a.name not in _NOT_INHERITED]
    out = [_reset_usage_limits(a) if a.name == "Usage Limits" else a for a in out]
    dates = {a.name: a.value.value for a in old if a.value.type == Type.DATE_TIME}
    if offset is None:
        for name in ("Activation Date", *_SHIFTED_DATES):
            if isinstance(dates.get(name), int):
                out.append(Attribute(name, objects.value_item(Type.DATE_TIME, dates[name])))
    else:
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise KmipError(ResultReason.INVALID_FIELD, "Offset must be an Interval")
        activation = now + offset
        out.append(Attribute("Activation Date", objects.value_item(Type.DATE_TIME, activation)))
        old_activation = dates.get("Activation Date")
        if isinstance(old_activation, int):
            for name in _SHIFTED_DATES:
                if isinstance(dates.get(name), int):
                    shifted = dates[name] - old_activation + activation  # type: ignore[operator]
                    out.append(Attribute(name, objects.value_item(Type.DATE_TIME, shifted)))
    return override(out, template)


def _reset_usage_limits(attr: Attribute) -> Attribute:
    """Usage Limits: the Total carries over, the Count starts again at the Total."""
    if attr.value.type != Type.STRUCTURE:
        return attr
    total = attr.value.value_of(T.USAGE_LIMITS_TOTAL.value)
    children = [
        Item(c.tag, c.type, total) if c.tag == T.USAGE_LIMITS_COUNT.value and total is not None else c
        for c in attr.value
    ]
    return Attribute(attr.name, Item(attr.value.tag, Type.STRUCTURE, children), attr.index)


def retire_row_changes(ctx: RequestContext, old: ObjectRow, new_uid: str, link_type: int) -> dict[str, object]:
    """The change to a replaced key: its Names move to the replacement, and it links to it."""
    return {"add": [link_row(ctx, old.uid, link_type, new_uid)], "delete": [("Name", None)]}
