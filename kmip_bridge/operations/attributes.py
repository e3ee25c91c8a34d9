"""GetAttributes and GetAttributeList."""

from __future__ import annotations

from kmip.core.enums import Tags as T

from ..protocol import attributes as wire
from ..protocol import ttlv, versions
from ..protocol.attributes import Attribute
from ..protocol.ttlv import Item
from . import objects
from .context import RequestContext


def all_attributes(ctx: RequestContext, uid: str, names: list[str] | None = None) -> list[Attribute]:
    """The object's attributes that the request's protocol version defines (a KMIP 1.0 client
    is never shown Fresh, a 1.x client never Short Unique Identifier): versions.py decides."""
    return [a for a in _all_attributes(ctx, uid, names) if versions.attribute_in(a.name, ctx.version)]


def _all_attributes(ctx: RequestContext, uid: str, names: list[str] | None = None) -> list[Attribute]:
    row = objects.load_visible(ctx, uid)
    attrs = objects.row_attributes(row)
    if names:
        attrs = [a for a in attrs if a.name in names]
        stored = [n for n in names if n not in objects.ROW_ATTRIBUTES]
        if stored:
            attrs += [objects.from_row(r) for r in ctx.services.store.load_attributes(uid, stored)]
        # Answer in the order asked (the OASIS vectors list them so); instances keep their order.
        order = {n: i for i, n in enumerate(names)}
        attrs.sort(key=lambda a: (order.get(a.name, len(order)), a.index))
    else:
        attrs += [objects.from_row(r) for r in ctx.services.store.load_attributes(uid)]
    return attrs


def _requested_names(ctx: RequestContext, payload: Item | None) -> list[str]:
    if payload is None:
        return []
    names = [n.value for n in payload.all(T.ATTRIBUTE_NAME.value)]
    names += [wire.parse_names_v2(r) for r in payload.all(T.ATTRIBUTE_REFERENCE.value)]
    return names  # type: ignore[return-value]


def get_attributes(ctx: RequestContext, payload: Item) -> Item:
    uid = objects.target_uid(ctx, payload)
    attrs = all_attributes(ctx, uid, _requested_names(ctx, payload) or None)
    ctx.id_placeholder = uid
    if ctx.v2:
        body = [ttlv.struct_(T.ATTRIBUTES, [wire.to_v2(a) for a in attrs])]
    else:
        body = [_v1_attribute(ctx, a) for a in attrs]
    return objects.uid_payload(uid, *body)


def _v1_attribute(ctx: RequestContext, attr: Attribute) -> Item:
    """Index 0 may be omitted (KMIP 1.x §2.1.1), and the KMIP 1.4 vectors omit it; KMIP 1.0-1.3
    answers name it for each instance of a multi-instance attribute, as PyKMIP (1.2 by default)
    reads it there."""
    item = wire.to_v1(attr)
    multi = attr.name in objects.MULTI_VALUED or wire.is_custom(attr.name)
    if attr.index or not multi or ctx.version >= (1, 4):
        return item
    name, *rest = item.value  # type: ignore[misc]
    return ttlv.struct_(T.ATTRIBUTE, [name, ttlv.integer(T.ATTRIBUTE_INDEX, 0), *rest])


# Custom attributes first, then these in this order, then the rest alphabetically (as the OASIS
# vectors' server lists them).
_LEADING = ("Unique Identifier", "Object Type", "Cryptographic Algorithm", "Cryptographic Length")


def get_attribute_list(ctx: RequestContext, payload: Item) -> Item:
    uid = objects.target_uid(ctx, payload)
    present = {a.name for a in all_attributes(ctx, uid)}
    custom = sorted(n for n in present if wire.is_custom(n))
    rest = sorted(present - set(_LEADING) - set(custom))
    names = custom + [n for n in _LEADING if n in present] + rest
    ctx.id_placeholder = uid
    if ctx.v2:
        return objects.uid_payload(uid, *(wire.reference_v2(n) for n in names))
    return objects.uid_payload(uid, *(ttlv.text(T.ATTRIBUTE_NAME, n) for n in names))
