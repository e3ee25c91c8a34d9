"""Export rules follow the material: the one place that decides what may become of an object's
bytes, for every input of every operation that turns material into something a caller can read.

- ``require_clear`` / ``require_wrapped`` — Get: a non-Extractable object never leaves; a
  Sensitive one only wrapped (KMIP 1.4 §3.49, §3.51).
- ``wrapping_key`` — the wrapping key of a Get: the WrapKey policy grant (Get is not enough) and
  the Wrap Key usage bit, both required; for a Sensitive wrapped key, the wrapping key must not
  let its own bytes or a Decrypt undo the wrap.
- ``derivation_input`` / ``derived_protection`` — DeriveKey: every input (base *and* derivation
  data) is checked for usage, and the derived object is at least as protected as the most
  protected input, with Always Sensitive / Never Extractable as PKCS#11 carries them.
- ``replacement`` — ReKey / ReKeyKeyPair: the replacement is never less protected than the key it
  replaces.

The "operation by input role" table is in docs/security.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from kmip.core.enums import CryptographicUsageMask, ObjectType, ResultReason

from ..policy.rules import WRAP_KEY
from ..protocol.attributes import Attribute
from ..protocol.errors import KmipError, not_found
from ..protocol.ttlv import Type
from ..store import ObjectRow
from . import keys, objects
from .context import RequestContext

_FLAGS = ("Sensitive", "Extractable", "Always Sensitive", "Never Extractable")


@dataclass(frozen=True)
class Protection:
    sensitive: bool = False
    extractable: bool = True
    always_sensitive: bool = False
    never_extractable: bool = False

    @property
    def restricted(self) -> bool:
        return self.sensitive or not self.extractable


def protection(ctx: RequestContext, row: ObjectRow) -> Protection:
    """The object's export flags as stored (an object without them: extractable, not sensitive)."""
    given = {
        r.name: objects.from_row(r).value.value for r in ctx.services.store.load_attributes(row.uid, list(_FLAGS))
    }
    return Protection(
        sensitive=objects.flag(given.get("Sensitive"), False),
        extractable=objects.flag(given.get("Extractable"), True),
        always_sensitive=objects.flag(given.get("Always Sensitive"), False),
        never_extractable=objects.flag(given.get("Never Extractable"), False),
    )


def _refuse(ctx: RequestContext, sensitive: bool, message: str) -> KmipError:
    precise = ctx.version >= (1, 4)  # the Sensitive / Not Extractable reasons came with KMIP 1.4
    reason = (ResultReason.SENSITIVE if sensitive else ResultReason.NOT_EXTRACTABLE) if precise \
        else ResultReason.PERMISSION_DENIED
    return KmipError(reason, message)


# -- Get --------------------------------------------------------------------------------------------
def require_export(ctx: RequestContext, row: ObjectRow, wrapped: bool) -> Protection:
    """Get of ``row``: in the clear, or (``wrapped``) under a wrapping key."""
    p = protection(ctx, row)
    if not p.extractable:
        raise _refuse(ctx, False, "the object is not extractable")
    if p.sensitive and not wrapped:
        raise _refuse(ctx, True, "the object is sensitive: it can only be returned wrapped")
    return p


def wrapping_key_row(ctx: RequestContext, uid: str, usage: int) -> ObjectRow:
    """A key the caller wraps or unwraps with: visible under the WrapKey grant (unwrapping under
    someone's key is as much an oracle as wrapping), not destroyed, usable for ``usage`` (Wrap Key
    or Unwrap Key), with a Cryptographic Usage Mask that says so."""
    try:
        row = objects.load_visible(ctx, uid, operation=WRAP_KEY)
    except KmipError as exc:
        if exc.reason in (ResultReason.ITEM_NOT_FOUND.value, ResultReason.OBJECT_NOT_FOUND.value):
            if ctx.v2:
                raise KmipError(ResultReason.WRAPPING_OBJECT_NOT_FOUND, "wrapping key not found") from None
            raise not_found("wrapping key") from None
        raise
    if not row.has_material:
        raise keys.by_version(ctx, ResultReason.ITEM_NOT_FOUND, ResultReason.WRAPPING_OBJECT_DESTROYED,
                              "the wrapping key was destroyed")
    keys.require_usable(ctx, row, usage, "wrapping key", mask_required=True)
    return row


def wrapping_key(ctx: RequestContext, uid: str, wrapped: Protection) -> ObjectRow:
    """The wrapping key of a Get, if the caller may wrap with it: visible, the WrapKey policy
    grant, Active, and a Cryptographic Usage Mask with Wrap Key. A wrap under a key the caller
    can read in the clear, or can Decrypt with, is no wrap at all: a Sensitive key is only wrapped
    under a symmetric key that is itself Sensitive or not Extractable and cannot Decrypt."""
    row = wrapping_key_row(ctx, uid, CryptographicUsageMask.WRAP_KEY.value)
    if wrapped.sensitive and row.object_type == ObjectType.SYMMETRIC_KEY.value:
        own = protection(ctx, row)
        if not own.restricted:
            raise _refuse(ctx, True, "a sensitive key is only wrapped under a key that is itself "
                                     "sensitive or not extractable")
        if keys.usage_mask(ctx, row) & CryptographicUsageMask.DECRYPT.value:
            raise _refuse(ctx, True, "a sensitive key is not wrapped under a key that may also Decrypt "
                                     "(the wrap could be undone with Decrypt)")
    return row


# -- DeriveKey --------------------------------------------------------------------------------------
def derivation_input(ctx: RequestContext, row: ObjectRow, role: str) -> Protection:
    """An input of DeriveKey (base key or derivation-data object): usable for Derive Key, and
    its protection, which the derived object inherits."""
    keys.require_usable(ctx, row, CryptographicUsageMask.DERIVE_KEY.value, role,
                        pre_active_ok=ctx.services.policy.derive_from_pre_active)
    return protection(ctx, row)


def derived_protection(
    ctx: RequestContext, inputs: list[Protection], attrs: list[Attribute]
) -> tuple[list[Attribute], objects.History]:
    """The derived object's attributes with the protection of its inputs: Sensitive if any input
    is, not Extractable if any input is not; a template asking for less is refused. The History
    makes Always Sensitive / Never Extractable true only if every input's was."""
    sensitive = any(p.sensitive for p in inputs)
    extractable = all(p.extractable for p in inputs)
    asked = {a.name: a.value.value for a in attrs if a.name in ("Sensitive", "Extractable")}
    if sensitive and asked.get("Sensitive") is False:
        raise _refuse(ctx, True, "a key derived from a sensitive input is sensitive")
    if not extractable and asked.get("Extractable") is True:
        raise _refuse(ctx, False, "a key derived from a non-extractable input is not extractable")
    if sensitive:
        attrs = keys.replace(attrs, "Sensitive", objects.value_item(Type.BOOLEAN, True))
    if not extractable:
        attrs = keys.replace(attrs, "Extractable", objects.value_item(Type.BOOLEAN, False))
    history = objects.History(
        always_sensitive=all(p.always_sensitive for p in inputs),
        never_extractable=all(p.never_extractable for p in inputs),
    )
    return attrs, history


# -- ReKey, ReKeyKeyPair ---------------------------------------------------------------------------
def replacement(ctx: RequestContext, old: ObjectRow, attrs: list[Attribute]) -> list[Attribute]:
    """A replacement key is never less protected than the key it replaces (the old flags are
    inherited; a template may only add protection), whoever asks for it."""
    p = protection(ctx, old)
    asked = {a.name: a.value.value for a in attrs if a.name in ("Sensitive", "Extractable")}
    if p.sensitive and asked.get("Sensitive") is False:
        raise _refuse(ctx, True, "the replacement of a sensitive key is sensitive")
    if not p.extractable and asked.get("Extractable") is True:
        raise _refuse(ctx, False, "the replacement of a non-extractable key is not extractable")
    if p.sensitive:
        attrs = keys.replace(attrs, "Sensitive", objects.value_item(Type.BOOLEAN, True))
    if not p.extractable:
        attrs = keys.replace(attrs, "Extractable", objects.value_item(Type.BOOLEAN, False))
    return attrs
