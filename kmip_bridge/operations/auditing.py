"""What one batch item leaves behind: a record in the hash-chained audit file (when enabled) and a
log line ("request": INFO without the audit file, DEBUG with it, so that the default set-up does
not pay for both). Both carry who, from where, which operation on which object and how it ended;
never a payload, so never key material."""

from __future__ import annotations

import logging
import time
from typing import Any

from kmip.core.enums import Operation, ResultReason, ResultStatus
from kmip.core.enums import Tags as T

from .. import logs
from ..audit import AuditError
from ..protocol.messages import BatchItem, Result
from ..protocol.ttlv import Item, Type
from .context import RequestContext, Services

log = logging.getLogger("kmip_bridge.audit")

_UID = T.UNIQUE_IDENTIFIER.value
# Operations that act on one existing object, named by the request or by the ID placeholder.
_TARGETED = {
    Operation.GET.value,
    Operation.GET_ATTRIBUTES.value,
    Operation.GET_ATTRIBUTE_LIST.value,
    Operation.ACTIVATE.value,
    Operation.REVOKE.value,
    Operation.DESTROY.value,
    Operation.ADD_ATTRIBUTE.value,
    Operation.MODIFY_ATTRIBUTE.value,
    Operation.SET_ATTRIBUTE.value,
    Operation.DELETE_ATTRIBUTE.value,
    Operation.CHECK.value,
}


def op_name(op: int | None) -> str:
    try:
        return Operation(op).name if op is not None else "-"
    except ValueError:
        return f"0x{op:08X}"


def _uid_in(payload: Item | None) -> str | None:
    if payload is None or payload.type != Type.STRUCTURE:
        return None
    uid = payload.value_of(_UID)
    return uid if isinstance(uid, str) else None


def object_of(ctx: RequestContext, item: BatchItem, result: Result) -> str | None:
    """The object the item acted on: named in the response (Create, Register, Get...), else in
    the request, else the ID placeholder for an operation on one object. Locate's hits are not
    listed (the first of many would mislead)."""
    if item.operation == Operation.LOCATE.value:
        return None
    uid = _uid_in(result.payload) or _uid_in(item.payload)
    if uid is None and item.operation in _TARGETED:
        uid = ctx.id_placeholder
    return uid


def write(services: Services, fields: dict[str, Any], started: float | None = None, log_line: bool = True) -> None:
    audit = services.audit
    if audit is not None:
        try:
            audit.write(fields)
        except AuditError as exc:
            log.error("audit record lost", extra={"error": str(exc), "operation": fields.get("operation")})
    level = logging.INFO if audit is None else logging.DEBUG
    if not log_line or not log.isEnabledFor(level):
        return
    extra = dict(fields)
    if started is not None:
        extra["ms"] = round((time.perf_counter() - started) * 1000, 3)
    log.log(level, "request", extra=extra)


def record(ctx: RequestContext, item: BatchItem, result: Result, started: float | None = None) -> None:
    """One batch item's outcome (called again with OPERATION_UNDONE when an Undo batch rolls back)."""
    write(
        ctx.services,
        {
            "identity": ctx.identity.name,
            "groups": sorted(ctx.identity.groups),
            "peer": ctx.peer,
            "operation": op_name(item.operation),
            "object": object_of(ctx, item, result),
            "status": ResultStatus(result.status).name,
            "reason": ResultReason(result.reason).name if result.reason is not None else None,
            # The request message's id in the server log (and 2.x Server Correlation Value).
            "request_id": logs.request_id(),
        },
        started,
    )


def refused(services: Services, identity: str | None, peer: str, reason: str) -> None:
    """A request message refused before its batch items ran (certificate or identity refused)."""
    write(
        services,
        {
            "identity": identity,
            "groups": [],
            "peer": peer,
            "operation": "-",
            "object": None,
            "status": ResultStatus.OPERATION_FAILED.name,
            "reason": ResultReason.PERMISSION_DENIED.name,
            "detail": reason[:200],
        },
        log_line=False,  # the caller logs the refusal
    )
