"""Locate: filtering happens in SQL (indexed attribute search keys), never by loading objects."""

from __future__ import annotations

from kmip.core.enums import Operation, ResultReason
from kmip.core.enums import Tags as T

from ..protocol import attributes as wire
from ..protocol import ttlv
from ..protocol.attributes import Attribute
from ..protocol.errors import KmipError
from ..protocol.ttlv import Item, Type
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
    filters: list[tuple[str, str | tuple[int, int]]] = []
    criteria = _criteria(ctx, payload)
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
    offset = offset if isinstance(offset, int) else 0
    limit = maximum if isinstance(maximum, int) else None
    policy = ctx.services.policy
    scope = policy.locate_scope(ctx.identity)
    rows = ctx.services.store.locate(
        owner=scope.owner,
        other_types=scope.other_types,
        object_type=object_type,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        attribute_filters=filters,
        offset=offset if scope.exact else 0,
        limit=limit if scope.exact else None,
    )
    if not scope.exact:
        # Per-object policies can hide candidates, so paging happens after filtering.
        rows = [
            r for r in rows
            if policy.visible(ctx.identity, r.object_type, r.owner, r.policy)
            and policy.allowed(ctx.identity, Operation.LOCATE.value, r.object_type, r.owner, r.policy)
        ]
        rows = rows[offset:] if limit is None else rows[offset : offset + limit]
    uids = [r.uid for r in rows]
    if len(uids) == 1:
        ctx.id_placeholder = uids[0]
    body = [ttlv.text(T.UNIQUE_IDENTIFIER, u) for u in uids]
    return ttlv.struct_(T.RESPONSE_PAYLOAD, body)
