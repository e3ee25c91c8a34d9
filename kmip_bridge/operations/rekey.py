"""ReKey: a replacement for a symmetric key — new random material, the old key's attributes
(KMIP Re-key attribute requirements, see keys.replacement_attributes), and Replacement /
Replaced Object links between the two, all in one transaction. The replacement keeps the old
key's owner and tenant KEK whoever calls, and is never less protected than it."""

from __future__ import annotations

import secrets
import uuid

from kmip.core.enums import CryptographicAlgorithm, LinkType, ObjectType, ResultReason
from kmip.core.enums import Tags as T

from ..protocol.errors import invalid_field
from ..protocol.ttlv import Item
from . import create, export, keys, objects
from .context import RequestContext

_DES_BYTES = {56: 8, 64: 8, 112: 16, 128: 16, 168: 24, 192: 24}  # (3)DES lengths count parity bits or not
_MAX_BITS = 8192


def material_bytes(algorithm: int, length: int) -> int:
    """How many random bytes make a key of this algorithm and Cryptographic Length."""
    if algorithm in (CryptographicAlgorithm.DES.value, CryptographicAlgorithm.TRIPLE_DES.value):
        n = _DES_BYTES.get(length)
        if n is not None:
            return n
    if length <= 0 or length % 8 or length > _MAX_BITS:
        raise invalid_field(f"cannot generate a key of Cryptographic Length {length}")
    return length // 8


def handle(ctx: RequestContext, payload: Item) -> Item:
    uid = objects.target_uid(ctx, payload)
    row = objects.load_visible(ctx, uid)
    if row.object_type != ObjectType.SYMMETRIC_KEY.value:
        raise keys.by_version(ctx, ResultReason.ILLEGAL_OPERATION, ResultReason.INVALID_OBJECT_TYPE,
                              "ReKey replaces symmetric keys; use ReKeyKeyPair for key pairs")
    if row.state in keys.DESTROYED:
        raise ctx.wrong_state("a destroyed key cannot be re-keyed")
    now = objects.now()
    old = [objects.from_row(r) for r in ctx.services.store.load_attributes(uid)]
    template = objects.client_attributes(objects.request_attributes(ctx, payload))
    attrs = keys.replacement_attributes(old, template, payload.value_of(T.OFFSET.value), now)
    attrs = export.replacement(ctx, row, attrs)
    algorithm = keys.value(attrs, "Cryptographic Algorithm")
    length = keys.value(attrs, "Cryptographic Length")
    if not isinstance(algorithm, int) or not isinstance(length, int):
        raise invalid_field("the key has no Cryptographic Algorithm and Length to re-key with")
    obj = create.symmetric_key(algorithm, length, secrets.token_bytes(material_bytes(algorithm, length)))
    new_uid = str(uuid.uuid4())
    attrs = keys.with_link(attrs, LinkType.REPLACED_OBJECT_LINK.value, uid)
    attrs += create.generation_attributes(attrs)  # its own RNG record; the inherited Lease Time stays
    with ctx.services.store.unit_of_work():
        # The old key gives up its Names first, so the replacement can take them over.
        objects.update(ctx, row, **keys.retire_row_changes(ctx, row, new_uid, LinkType.REPLACEMENT_OBJECT_LINK.value))
        # The replacement stays the old key's owner's, under its tenant KEK, whoever re-keys.
        objects.insert_new(ctx, ObjectType.SYMMETRIC_KEY.value, obj, attrs,
                           state=keys.initial_state(attrs, now), uid=new_uid, origin=objects.origin_of(row))
    return objects.uid_payload(new_uid)  # insert_new set the ID placeholder to the new key
