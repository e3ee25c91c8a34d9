"""Locate: filtering happens in SQL (indexed attribute search keys), never by loading objects."""

from __future__ import annotations

from kmip.core.enums import ResultReason
from kmip.core.enums import Tags as T

from ..protocol import attributes as wire
from ..protocol import ttlv
from ..protocol.attributes import Attribute
from ..protocol.errors import KmipError
from ..protocol.ttlv import Item
from . import objects
from .context import RequestContext


def _criteria(ctx: RequestContext, payload: Item) -> list[Attribute]:
    crit = [wire.parse_v1(a) for a in payload.all(T.ATTRIBUTE.value)]
    attributes = payload.get(T.ATTRIBUTES.value)
    if attributes is not None:
        crit += [wire.parse_v2(a) for a in attributes]
    return crit


def handle(ctx: RequestContext, payload: Item) -> Item:
    maximum = payload.value_of(T.MAXIMUM_ITEMS.value)
    offset = payload.value_of(T.OFFSET_ITEMS.value, 0)
    object_type = state = None
    filters: list[tuple[str, str]] = []
    for c in _criteria(ctx, payload):
        if c.name == "Object Type":
            object_type = c.value.value
        elif c.name == "State":
            state = c.value.value
        else:
            key = objects.search_key(c.value)
            if key is None:
                raise KmipError(
                    ResultReason.FEATURE_NOT_SUPPORTED, f"Locate cannot match on '{c.name}'"
                )
            filters.append((c.name, key))
    uids = ctx.services.store.locate(
        owner=ctx.services.policy.owner_filter(ctx.identity),
        object_type=object_type,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        attribute_filters=filters,
        offset=offset if isinstance(offset, int) else 0,
        limit=maximum if isinstance(maximum, int) else None,
    )
    if len(uids) == 1:
        ctx.id_placeholder = uids[0]
    body = [ttlv.text(T.UNIQUE_IDENTIFIER, u) for u in uids]
    return ttlv.struct_(T.RESPONSE_PAYLOAD, body)
