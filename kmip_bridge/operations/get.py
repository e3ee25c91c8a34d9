"""Get: unseal an object's material through the Key HSM and return it."""

from __future__ import annotations

from kmip.core.enums import ResultReason
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.errors import KmipError
from ..protocol.ttlv import Item
from . import objects
from .context import RequestContext


def handle(ctx: RequestContext, payload: Item) -> Item:
    uid = objects.target_uid(ctx, payload)
    row = objects.load_visible(ctx, uid)
    obj = objects.open_material(ctx, row)
    wanted = payload.value_of(T.KEY_FORMAT_TYPE.value) if payload is not None else None
    if wanted is not None:
        block = obj.get(T.KEY_BLOCK.value)
        have = block.value_of(T.KEY_FORMAT_TYPE.value) if block is not None else None
        if have != wanted:
            raise KmipError(
                ResultReason.KEY_FORMAT_TYPE_NOT_SUPPORTED,
                "the object is not available in the requested Key Format Type",
            )
    if payload is not None and payload.get(T.KEY_WRAPPING_SPECIFICATION.value) is not None:
        raise KmipError(ResultReason.FEATURE_NOT_SUPPORTED, "Key Wrapping Specification is not supported")
    ctx.id_placeholder = uid
    return ttlv.struct_(
        T.RESPONSE_PAYLOAD,
        [ttlv.enum(T.OBJECT_TYPE, row.object_type), ttlv.text(T.UNIQUE_IDENTIFIER, uid), obj],
    )
