"""Get: unseal an object's material through the Key HSM and return it."""

from __future__ import annotations

from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.ttlv import Item
from . import key_wrap, objects
from .context import RequestContext


def handle(ctx: RequestContext, payload: Item) -> Item:
    uid = objects.target_uid(ctx, payload)
    with ctx.services.store.reading():  # the row and the export attributes: one checkout
        row = objects.load_visible(ctx, uid)
        obj = objects.open_material(ctx, row)
        # Export checks, Key Format Type conversion and Key Wrapping Specification live in key_wrap.
        obj = key_wrap.prepare_for_get(ctx, row, obj, payload)
    if row.fresh:
        ctx.services.store.mark_served(uid)
    ctx.id_placeholder = uid
    return ttlv.struct_(
        T.RESPONSE_PAYLOAD,
        [ttlv.enum(T.OBJECT_TYPE, row.object_type), ttlv.text(T.UNIQUE_IDENTIFIER, uid), obj],
    )
