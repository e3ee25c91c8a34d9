"""Activate, Revoke, Destroy: state transitions of the KMIP object life cycle.

An object with a per-object key (keyhsm.per_object) loses that key on the token when it is
destroyed, after the row's Destroy has committed: a crash in between leaves a destroyed row whose
key still exists, which 'kmip-bridge db check --repair' destroys; never a live row without its key.
Revoke, even for a compromise, keeps the key: a Compromised object may still be used to process
(decrypt, verify) what it protected, and only Destroy makes it irretrievable.
"""

from __future__ import annotations

import logging

from kmip.core.enums import ResultReason, RevocationReasonCode, State
from kmip.core.enums import Tags as T

from ..keyhsm import KeyHsmError, per_object
from ..protocol.attributes import Attribute
from ..protocol.errors import KmipError
from ..protocol.ttlv import Item, Type
from . import objects
from .context import RequestContext

log = logging.getLogger("kmip_bridge.operations")

_COMPROMISE = {RevocationReasonCode.KEY_COMPROMISE.value, RevocationReasonCode.CA_COMPROMISE.value}


def _stamp(name: str, when: int) -> object:
    return objects.to_row(Attribute(name, objects.value_item(Type.DATE_TIME, when)))


def activate(ctx: RequestContext, payload: Item) -> Item:
    uid = objects.target_uid(ctx, payload)
    row = objects.load_visible(ctx, uid)
    if row.state != State.PRE_ACTIVE.value:
        raise ctx.wrong_state("only a Pre-Active object can be activated")
    objects.update(
        ctx, row, state=State.ACTIVE.value, replace=[_stamp("Activation Date", objects.now())]
    )
    ctx.id_placeholder = uid
    return objects.uid_payload(uid)


def revoke(ctx: RequestContext, payload: Item) -> Item:
    uid = objects.target_uid(ctx, payload)
    row = objects.load_visible(ctx, uid)
    reason = payload.get(T.REVOCATION_REASON.value)
    code = reason.value_of(T.REVOCATION_REASON_CODE.value) if reason is not None else None
    if code is None:
        raise KmipError(ResultReason.INVALID_FIELD, "Revoke needs a Revocation Reason")
    if row.state == State.DESTROYED_COMPROMISED.value:
        raise ctx.wrong_state("the object is already destroyed and compromised")
    if row.state == State.DESTROYED.value and code not in _COMPROMISE:
        raise ctx.wrong_state("a destroyed object can only be revoked as compromised")
    t = objects.now()
    stamps = [objects.to_row(Attribute("Revocation Reason", _as_value(reason)))]  # type: ignore[arg-type]
    if code in _COMPROMISE:
        occurred = payload.value_of(T.COMPROMISE_OCCURRENCE_DATE.value, t)
        # KMIP State transition: a Destroyed object found compromised is Destroyed Compromised.
        destroyed = row.state == State.DESTROYED.value
        new_state = State.DESTROYED_COMPROMISED.value if destroyed else State.COMPROMISED.value
        stamps += [_stamp("Compromise Date", t), _stamp("Compromise Occurrence Date", occurred)]  # type: ignore[arg-type]
    else:
        if row.state != State.ACTIVE.value:
            raise ctx.wrong_state("only an Active object can be revoked for this reason")
        new_state = State.DEACTIVATED.value
        stamps.append(_stamp("Deactivation Date", t))
    objects.update(ctx, row, state=new_state, replace=stamps)
    ctx.id_placeholder = uid
    return objects.uid_payload(uid)


def destroy(ctx: RequestContext, payload: Item) -> Item:
    uid = objects.target_uid(ctx, payload)
    row = objects.load_visible(ctx, uid)
    if row.state == State.ACTIVE.value:
        raise ctx.wrong_state("an Active object cannot be destroyed; revoke it first")
    if row.state in (State.DESTROYED.value, State.DESTROYED_COMPROMISED.value):
        raise ctx.wrong_state("the object is already destroyed")
    new_state = (
        State.DESTROYED_COMPROMISED.value
        if row.state == State.COMPROMISED.value
        else State.DESTROYED.value
    )
    # The sealed material goes; attributes stay, as the spec keeps a destroyed object's metadata.
    objects.update(
        ctx,
        row,
        state=new_state,
        clear_material=True,
        replace=[_stamp("Destroy Date", objects.now())],
    )
    if per_object.is_per_object(row.kek_kind) and row.kek_label:
        label = row.kek_label
        ctx.services.store.after_commit(lambda: _destroy_object_key(ctx, uid, label))
    ctx.id_placeholder = uid
    return objects.uid_payload(uid)


def _destroy_object_key(ctx: RequestContext, uid: str, label: str) -> None:
    """The object is destroyed (durably) whatever happens here; a key left behind is an orphan
    for the sweep, so a token failure is logged, not reported as a failed Destroy."""
    try:
        ctx.services.keyhsm.destroy_object_key(label)  # type: ignore[union-attr]
    except KeyHsmError as exc:
        log.warning(
            "per-object key not destroyed; 'kmip-bridge db check --repair' will",
            extra={"uid": uid, "kek": label, "error": str(exc)},
        )


def _as_value(item: Item) -> Item:
    return objects.value_item(Type(item.type), item.value)
