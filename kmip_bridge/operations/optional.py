"""Optional operations clients send: Obtain Lease, Get Usage Allocation, Poll, Cancel.

Archive and Recover (no off-line storage here), Validate, Certify/Re-certify, Import/Export and
the server-to-client Put and Notify are not in the dispatch table: the server answers them
Operation Not Supported, as KMIP asks of a server that does not offer an optional operation.
"""

from __future__ import annotations

from kmip.core.enums import CancellationResult, CryptographicUsageMask, ObjectType, ResultReason, State
from kmip.core.enums import Tags as T

from ..protocol import ttlv
from ..protocol.errors import KmipError, missing
from ..protocol.ttlv import Item
from . import keyuse, objects
from .context import RequestContext

# Lease granted when the object has no Lease Time of its own. The server enforces no leases (a
# client holding the key material is trusted until it asks again), so this is advice to clients.
DEFAULT_LEASE_SECONDS = 3600

_PROTECTING = (CryptographicUsageMask.ENCRYPT.value | CryptographicUsageMask.SIGN.value
               | CryptographicUsageMask.MAC_GENERATE.value | CryptographicUsageMask.WRAP_KEY.value)
_ALLOCATABLE = frozenset({ObjectType.SYMMETRIC_KEY.value, ObjectType.PRIVATE_KEY.value})


def obtain_lease(ctx: RequestContext, payload: Item) -> Item:
    """A lease on an Active cryptographic object: its Lease Time and its Last Change Date (so
    that the client can tell whether its cached copy is current)."""
    uid = objects.target_uid(ctx, payload)
    row = objects.load_visible(ctx, uid)
    if row.state != State.ACTIVE.value:
        raise ctx.wrong_state("a lease is only given on an Active object")
    have = {r.name: objects.from_row(r).value for r in
            ctx.services.store.load_attributes(uid, ["Lease Time", "Last Change Date"])}
    lease = have.get("Lease Time")
    changed = have.get("Last Change Date")
    ctx.id_placeholder = uid
    return objects.uid_payload(
        uid,
        ttlv.interval(T.LEASE_TIME, int(lease.value) if lease is not None else DEFAULT_LEASE_SECONDS),  # type: ignore[call-overload]
        ttlv.date_time(T.LAST_CHANGE_DATE, int(changed.value) if changed is not None else row.created_at // 10**6),  # type: ignore[call-overload]
    )


def get_usage_allocation(ctx: RequestContext, payload: Item) -> Item:
    """Takes ``Usage Limits Count`` from what the key's Usage Limits leave, for a client that
    applies protection itself. Only keys that protect, while they may (Active, before the Protect
    Stop Date), and only keys with Usage Limits."""
    count = payload.value_of(T.USAGE_LIMITS_COUNT.value)
    if not isinstance(count, int) or isinstance(count, bool):
        raise missing("Get Usage Allocation needs a Usage Limits Count")
    if count <= 0:
        raise KmipError(ResultReason.INVALID_FIELD, "Usage Limits Count must be positive")
    use = keyuse.prepare(ctx, payload, types=_ALLOCATABLE, usage=_PROTECTING, protect=True)
    if not use.limits:
        raise KmipError(ResultReason.ILLEGAL_OPERATION, "the object has no Usage Limits to allocate from")
    remaining = use.limits[0]
    if count > remaining:
        # 1.x clients are told Permission Denied (versions.reason_for).
        raise KmipError(ResultReason.USAGE_LIMIT_EXCEEDED, f"only {remaining} of the Usage Limits remain")
    keyuse.consume(ctx, use, count)
    ctx.id_placeholder = use.uid
    return objects.uid_payload(use.uid)


def _correlation(payload: Item) -> bytes:
    value = payload.value_of(T.ASYNCHRONOUS_CORRELATION_VALUE.value)
    if not isinstance(value, bytes):
        raise missing("the request needs an Asynchronous Correlation Value")
    return value


def poll(ctx: RequestContext, payload: Item) -> Item:
    """The server never answers Operation Pending, so no Asynchronous Correlation Value it could
    be polled for exists."""
    _correlation(payload)
    reason = ResultReason.INVALID_ASYNCHRONOUS_CORRELATION_VALUE if ctx.v2 else ResultReason.ITEM_NOT_FOUND
    raise KmipError(reason, "no asynchronous operation has that correlation value (the server runs none)")


def cancel(ctx: RequestContext, payload: Item) -> Item:
    value = _correlation(payload)
    return ttlv.struct_(T.RESPONSE_PAYLOAD, [
        ttlv.bytes_(T.ASYNCHRONOUS_CORRELATION_VALUE, value),
        ttlv.enum(T.CANCELLATION_RESULT, CancellationResult.UNAVAILABLE),
    ])
