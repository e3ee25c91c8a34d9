"""Optional operations clients send (Obtain Lease, Get Usage Allocation, Poll, Cancel) and the
ones the server does not offer (Archive, Recover, Put, Notify: Operation Not Supported), at KMIP
1.0, 1.4 and 2.1 over raw TTLV (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kmip.core import enums
from kmip.core.enums import Operation, ResultReason
from kmip.core.enums import Tags as T

from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item

from .conftest import Instance, Server
from .rawkmip import Conn, create_aes, date_attr, get_attributes, open_conn, uid_, v1

pytestmark = pytest.mark.e2e
VERSIONS = [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0), (2, 1)]


@pytest.fixture(scope="module")
def conn(server: Server, instance: Instance) -> Iterator[Conn]:
    yield from open_conn(server, instance)


def _active(c: Conn, version: tuple[int, int], *extra: Item) -> str:
    return create_aes(c, version, date_attr("Activation Date", int(time.time()) - 60, version), *extra)


def _limits(total: int, version: tuple[int, int]) -> Item:
    parts = [ttlv.long_integer(T.USAGE_LIMITS_TOTAL, total), ttlv.long_integer(T.USAGE_LIMITS_COUNT, total),
             ttlv.enum(T.USAGE_LIMITS_UNIT, enums.UsageLimitsUnit.OBJECT)]
    if version >= (2, 0):
        return ttlv.struct_(T.USAGE_LIMITS, parts)
    return v1("Usage Limits", ttlv.struct_(T.ATTRIBUTE_VALUE, parts))


def _remaining(c: Conn, uid: str, version: tuple[int, int]) -> int:
    out = get_attributes(c, uid, version, "Usage Limits")
    if version >= (2, 0):
        limits = out.get(T.ATTRIBUTES.value).get(T.USAGE_LIMITS.value)  # type: ignore[union-attr]
    else:
        limits = out.get(T.ATTRIBUTE.value).get(T.ATTRIBUTE_VALUE.value)  # type: ignore[union-attr]
    return limits.value_of(T.USAGE_LIMITS_COUNT.value)  # type: ignore[union-attr,return-value]



@pytest.mark.parametrize("version", VERSIONS)
def test_obtain_lease(conn: Conn, version: tuple[int, int]) -> None:
    uid = _active(conn, version)
    out = conn.ok(Operation.OBTAIN_LEASE, [uid_(uid)], version)
    assert out.value_of(T.UNIQUE_IDENTIFIER.value) == uid
    assert out.value_of(T.LEASE_TIME.value) == 3600
    changed = out.value_of(T.LAST_CHANGE_DATE.value)
    assert isinstance(changed, int) and changed <= time.time() + 1
    # No lease on a key that may not be used (Pre-Active).
    pre = create_aes(conn, version)
    conn.fails(Operation.OBTAIN_LEASE, [uid_(pre)], version,
               ResultReason.PERMISSION_DENIED if version < (2, 0) else ResultReason.WRONG_KEY_LIFECYCLE_STATE)


@pytest.mark.parametrize("version", VERSIONS)
def test_get_usage_allocation(conn: Conn, version: tuple[int, int]) -> None:
    uid = _active(conn, version, _limits(10, version))
    count = ttlv.long_integer(T.USAGE_LIMITS_COUNT, 4)
    out = conn.ok(Operation.GET_USAGE_ALLOCATION, [uid_(uid), count], version)
    assert out.value_of(T.UNIQUE_IDENTIFIER.value) == uid
    assert _remaining(conn, uid, version) == 6
    # More than is left: refused, nothing taken.
    too_many = ttlv.long_integer(T.USAGE_LIMITS_COUNT, 7)
    conn.fails(Operation.GET_USAGE_ALLOCATION, [uid_(uid), too_many], version,
               ResultReason.PERMISSION_DENIED if version < (2, 0) else ResultReason.USAGE_LIMIT_EXCEEDED)
    assert _remaining(conn, uid, version) == 6
    conn.ok(Operation.GET_USAGE_ALLOCATION, [uid_(uid), ttlv.long_integer(T.USAGE_LIMITS_COUNT, 6)], version)
    assert _remaining(conn, uid, version) == 0
    # A key without Usage Limits has nothing to allocate from.
    free = _active(conn, version)
    conn.fails(Operation.GET_USAGE_ALLOCATION, [uid_(free), count], version, ResultReason.ILLEGAL_OPERATION)


@pytest.mark.parametrize("version", VERSIONS)
def test_poll_and_cancel_without_asynchronous_operations(conn: Conn, version: tuple[int, int]) -> None:
    value = ttlv.bytes_(T.ASYNCHRONOUS_CORRELATION_VALUE, b"\x01\x02\x03\x04")
    conn.fails(Operation.POLL, [value], version,
               ResultReason.ITEM_NOT_FOUND if version < (2, 0) else ResultReason.INVALID_ASYNCHRONOUS_CORRELATION_VALUE)
    out = conn.ok(Operation.CANCEL, [value], version)
    assert out.value_of(T.ASYNCHRONOUS_CORRELATION_VALUE.value) == b"\x01\x02\x03\x04"
    assert out.value_of(T.CANCELLATION_RESULT.value) == enums.CancellationResult.UNAVAILABLE.value
    conn.fails(Operation.CANCEL, [], version, ResultReason.MISSING_DATA)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("op", [Operation.ARCHIVE, Operation.RECOVER, Operation.PUT, Operation.NOTIFY,
                                Operation.VALIDATE, Operation.CERTIFY])
def test_operations_not_offered(conn: Conn, version: tuple[int, int], op: Operation) -> None:
    uid = create_aes(conn, version)
    conn.fails(op, [uid_(uid)], version, ResultReason.OPERATION_NOT_SUPPORTED)
    # The object is untouched (control: it is still there, Pre-Active).
    assert get_attributes(conn, uid, version, "State") is not None
