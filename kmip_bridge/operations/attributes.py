"""GetAttributes and GetAttributeList."""

from __future__ import annotations

from kmip.core.enums import Tags as T

from ..protocol import attributes as wire
from ..protocol import ttlv
from ..protocol.attributes import Attribute
from ..protocol.ttlv import Item, Type
from . import objects
from .context import RequestContext


def all_attributes(ctx: RequestContext, uid: str, names: list[str] | None = None) -> list[Attribute]:
    row = objects.load_visible(ctx, uid)
    attrs = objects.row_attributes(row)
    if names:
        attrs = [a for a in attrs if a.name in names]
        stored = [n for n in names if n not in objects.ROW_ATTRIBUTES]
        if stored:
            attrs += [objects.from_row(r) for r in ctx.services.store.load_attributes(uid, stored)]
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
        body = [wire.to_v1(a) for a in attrs]
    return objects.uid_payload(uid, *body)


def get_attribute_list(ctx: RequestContext, payload: Item) -> Item:
    uid = objects.target_uid(ctx, payload)
    names: list[str] = []
    for a in all_attributes(ctx, uid):
        if a.name not in names:
            names.append(a.name)
    ctx.id_placeholder = uid
    if ctx.v2:
        refs = []
        for name in names:
            tag = wire.tag_for(name)
            if tag is None:
                refs.append(
                    ttlv.struct_(T.ATTRIBUTE_REFERENCE, [ttlv.text(T.ATTRIBUTE_NAME, name)])
                )
            else:
                refs.append(Item(T.ATTRIBUTE_REFERENCE.value, Type.ENUMERATION, tag))
        return objects.uid_payload(uid, *refs)
    return objects.uid_payload(uid, *(ttlv.text(T.ATTRIBUTE_NAME, n) for n in names))
