"""Life cycle by dates: State is a function of the stored state and the Activation/Deactivation
Dates (store/states.py), the same in GetAttributes, Locate by State and the checks operations
make — at KMIP 1.4 and 2.1 over raw TTLV, against a real server (SQLite and PostgreSQL). Dates a
few seconds ahead are waited for by polling, never by a timed sleep."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from kmip.core import enums
from kmip.core.enums import Operation, ResultReason, State
from kmip.core.enums import Tags as T

from kmip_bridge.protocol import ttlv

from .conftest import Instance, Server
from .rawkmip import (
    Conn,
    create_aes,
    date_attr,
    locate_by_state,
    name_attr,
    open_conn,
    state_of,
    uid_,
    until,
    v1,
)

pytestmark = pytest.mark.e2e
VERSIONS = [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4), (2, 0), (2, 1)]


@pytest.fixture(scope="module")
def conn(server: Server, instance: Instance) -> Iterator[Conn]:
    yield from open_conn(server, instance)


def _named(c: Conn, version: tuple[int, int], *extra: object) -> tuple[str, str]:
    name = f"dates-{uuid.uuid4().hex[:12]}"
    return create_aes(c, version, name_attr(name, version), *extra), name  # type: ignore[arg-type]


def _encrypt(c: Conn, uid: str, version: tuple[int, int]) -> object:
    """Encrypt (KMIP 1.2+); before 1.2, Get Usage Allocation, which also needs a key that may
    protect now (and, with no Usage Limits on the key, is refused as Illegal Operation after that
    state check passes)."""
    if version < (1, 2):
        return c.call(Operation.GET_USAGE_ALLOCATION, [uid_(uid), ttlv.long_integer(T.USAGE_LIMITS_COUNT, 1)],
                      version)
    params = ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, [
        ttlv.enum(T.BLOCK_CIPHER_MODE, enums.BlockCipherMode.CBC),
        ttlv.enum(T.PADDING_METHOD, enums.PaddingMethod.PKCS5)])
    return c.call(Operation.ENCRYPT, [uid_(uid), params, ttlv.bytes_(T.DATA, b"sixteen byte msg")], version)


def _succeeded(bi: object) -> bool:
    """The key passed the state checks: Encrypt succeeded, or (1.0/1.1) Get Usage Allocation got
    past them to the Usage Limits check."""
    if bi.value_of(T.OPERATION.value) == Operation.GET_USAGE_ALLOCATION.value:  # type: ignore[attr-defined]
        return bi.value_of(T.RESULT_REASON.value) == ResultReason.ILLEGAL_OPERATION.value  # type: ignore[attr-defined]
    return bi.value_of(T.RESULT_STATUS.value) == enums.ResultStatus.SUCCESS.value  # type: ignore[attr-defined]


def _found(c: Conn, state: State, name: str, version: tuple[int, int]) -> bool:
    return len(locate_by_state(c, state, version, name_attr(name, version))) == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_future_activation_date_makes_the_key_active_when_it_passes(conn: Conn, version: tuple[int, int]) -> None:
    when = int(time.time()) + 4
    uid, name = _named(conn, version, date_attr("Activation Date", when, version))
    # Before the date: Pre-Active for every reader (checked only while the clock says "before",
    # so a slow machine skips nothing it should check and asserts nothing it cannot know).
    first = state_of(conn, uid, version)
    pre = _found(conn, State.PRE_ACTIVE, name, version), _found(conn, State.ACTIVE, name, version)
    refused = not _succeeded(_encrypt(conn, uid, version))
    if time.time() < when:
        assert first == State.PRE_ACTIVE.value and pre == (True, False) and refused
    until(lambda: state_of(conn, uid, version) == State.ACTIVE.value)
    # Once it passed, every reader agrees: GetAttributes, Locate, and Encrypt's state check.
    assert _found(conn, State.ACTIVE, name, version)
    assert not _found(conn, State.PRE_ACTIVE, name, version)
    assert _succeeded(_encrypt(conn, uid, version))
    # And Activate sees an Active key (not Pre-Active any more).
    conn.fails(Operation.ACTIVATE, [uid_(uid)], version,
               ResultReason.PERMISSION_DENIED if version < (2, 0) else ResultReason.WRONG_KEY_LIFECYCLE_STATE)


@pytest.mark.parametrize("version", VERSIONS)
def test_create_with_a_past_deactivation_date_is_deactivated(conn: Conn, version: tuple[int, int]) -> None:
    past = int(time.time()) - 60
    uid, name = _named(conn, version, date_attr("Activation Date", past - 60, version),
                       date_attr("Deactivation Date", past, version))
    assert state_of(conn, uid, version) == State.DEACTIVATED.value
    assert _found(conn, State.DEACTIVATED, name, version)
    assert not _found(conn, State.ACTIVE, name, version)
    assert not _succeeded(_encrypt(conn, uid, version))  # protect with a deactivated key: refused
    # Control: the same create with a future Deactivation Date is Active and encrypts.
    uid2, name2 = _named(conn, version, date_attr("Activation Date", past, version),
                         date_attr("Deactivation Date", past + 3600 * 24, version))
    assert state_of(conn, uid2, version) == State.ACTIVE.value
    assert _found(conn, State.ACTIVE, name2, version)
    assert _succeeded(_encrypt(conn, uid2, version))


def _modify_date(c: Conn, uid: str, name: str, when: int, version: tuple[int, int]) -> None:
    if version >= (2, 0):
        new = ttlv.struct_(T.NEW_ATTRIBUTE, [date_attr(name, when, version)])
        c.ok(Operation.MODIFY_ATTRIBUTE, [uid_(uid), new], version)
    else:
        c.ok(Operation.MODIFY_ATTRIBUTE, [uid_(uid), v1(name, ttlv.date_time(T.ATTRIBUTE_VALUE, when))], version)


@pytest.mark.parametrize("version", VERSIONS)
def test_modify_activation_date_into_the_past_activates(conn: Conn, version: tuple[int, int]) -> None:
    uid, name = _named(conn, version, date_attr("Activation Date", int(time.time()) + 3600, version))
    assert state_of(conn, uid, version) == State.PRE_ACTIVE.value
    _modify_date(conn, uid, "Activation Date", int(time.time()) - 1, version)
    assert state_of(conn, uid, version) == State.ACTIVE.value
    assert _found(conn, State.ACTIVE, name, version)
    assert _succeeded(_encrypt(conn, uid, version))


@pytest.mark.parametrize("version", VERSIONS)
def test_modify_deactivation_date_into_the_past_deactivates(conn: Conn, version: tuple[int, int]) -> None:
    now = int(time.time())
    uid, name = _named(conn, version, date_attr("Activation Date", now - 60, version),
                       date_attr("Deactivation Date", now + 3600, version))
    assert state_of(conn, uid, version) == State.ACTIVE.value
    assert _succeeded(_encrypt(conn, uid, version))
    _modify_date(conn, uid, "Deactivation Date", int(time.time()) - 1, version)
    assert state_of(conn, uid, version) == State.DEACTIVATED.value
    assert _found(conn, State.DEACTIVATED, name, version)
    assert not _succeeded(_encrypt(conn, uid, version))
    # A Deactivated key can be destroyed (an Active one cannot): Destroy sees the same state.
    conn.ok(Operation.DESTROY, [uid_(uid)], version)
    assert state_of(conn, uid, version) == State.DESTROYED.value


def _revoke(c: Conn, uid: str, code: enums.RevocationReasonCode, version: tuple[int, int]) -> object:
    reason = ttlv.struct_(T.REVOCATION_REASON, [ttlv.enum(T.REVOCATION_REASON_CODE, code)])
    return c.call(Operation.REVOKE, [uid_(uid), reason], version)


@pytest.mark.parametrize("version", VERSIONS)
def test_revoke_key_compromise_of_a_destroyed_object(conn: Conn, version: tuple[int, int]) -> None:
    uid, _ = _named(conn, version)
    conn.ok(Operation.DESTROY, [uid_(uid)], version)
    # Any other reason stays refused for a destroyed object...
    assert not _succeeded(_revoke(conn, uid, enums.RevocationReasonCode.CESSATION_OF_OPERATION, version))
    assert state_of(conn, uid, version) == State.DESTROYED.value
    # ...a compromise moves it to Destroyed Compromised, and stamps the Compromise Date.
    assert _succeeded(_revoke(conn, uid, enums.RevocationReasonCode.KEY_COMPROMISE, version))
    assert state_of(conn, uid, version) == State.DESTROYED_COMPROMISED.value
    assert not _succeeded(_revoke(conn, uid, enums.RevocationReasonCode.KEY_COMPROMISE, version))
