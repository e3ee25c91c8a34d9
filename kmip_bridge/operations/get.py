"""Get: unseal an object's material through the Key HSM and return it."""

from __future__ import annotations

from kmip.core.enums import Operation
from kmip.core.enums import Tags as T

from ..protocol import gate, ttlv
from ..protocol.ttlv import Item, Type
from . import key_wrap, objects
from .context import RequestContext


def handle(ctx: RequestContext, payload: Item) -> Item:
    uid = objects.target_uid(ctx, payload)
    with ctx.services.store.reading():  # the row and the export attributes: one checkout
        row = objects.load_visible(ctx, uid)
        obj = objects.open_material(ctx, row)
        # Export checks, Key Format Type conversion and Key Wrapping Specification live in key_wrap.
        obj = key_wrap.prepare_for_get(ctx, row, obj, payload)
    if not ctx.v2:
        obj = _without_attributes(obj)
    out = ttlv.struct_(
        T.RESPONSE_PAYLOAD,
        [ttlv.enum(T.OBJECT_TYPE, row.object_type), ttlv.text(T.UNIQUE_IDENTIFIER, uid), obj],
    )
    # An object the client's version cannot express is refused before it counts as served.
    out = gate.fit(out, ctx.version, Operation.GET.value)
    if row.fresh:
        ctx.services.store.mark_served(uid)
    ctx.id_placeholder = uid
    return out


def _without_attributes(obj: Item) -> Item:
    """The object with no attributes inside its (unwrapped) Key Value. KMIP 1.x allows them
    there, but 1.x clients' decoders are known to reject any, and the same attributes are one
    GetAttributes away; a wrapped Key Value (a byte string) is left as it is."""
    block = obj.get(T.KEY_BLOCK.value)
    value = block.get(T.KEY_VALUE.value) if block is not None else None
    if block is None or value is None or value.type != Type.STRUCTURE:
        return obj
    kept = [c for c in value if c.tag not in (T.ATTRIBUTE.value, T.ATTRIBUTES.value)]
    if len(kept) == len(value.value):  # type: ignore[arg-type]
        return obj
    new_value = ttlv.struct_(T.KEY_VALUE, kept)
    new_block = ttlv.struct_(T.KEY_BLOCK, [new_value if c.tag == T.KEY_VALUE.value else c for c in block])
    return Item(obj.tag, Type.STRUCTURE, [new_block if c.tag == T.KEY_BLOCK.value else c for c in obj])
