"""Query functions beyond Operations/Objects/Server Information, each answered only in the
protocol versions that define it, over raw TTLV (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kmip.core import enums
from kmip.core.enums import Operation, QueryFunction
from kmip.core.enums import Tags as T

from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item

from .conftest import Instance, Server
from .rawkmip import ALL, Conn, open_conn

pytestmark = pytest.mark.e2e
Q = QueryFunction


@pytest.fixture(scope="module")
def conn(server: Server, instance: Instance) -> Iterator[Conn]:
    yield from open_conn(server, instance)


def _query(c: Conn, version: tuple[int, int], *functions: QueryFunction) -> Item:
    return c.ok(Operation.QUERY, [ttlv.enum(T.QUERY_FUNCTION, f) for f in functions], version)


@pytest.mark.parametrize("version", ALL)
def test_capabilities_from_13(conn: Conn, version: tuple[int, int]) -> None:
    out = _query(conn, version, Q.QUERY_CAPABILITIES)
    info = out.get(T.CAPABILITY_INFORMATION.value)
    if version < (1, 3):
        assert info is None and len(out.value) == 0  # type: ignore[arg-type]
        return
    assert info is not None
    # Batch Undo / Continue Capability are KMIP 1.4 fields: absent from a 1.3 answer.
    expected = True if version >= (1, 4) else None
    assert info.value_of(T.BATCH_UNDO_CAPABILITY.value) is expected
    assert info.value_of(T.BATCH_CONTINUE_CAPABILITY.value) is expected
    assert info.value_of(T.ASYNCHRONOUS_CAPABILITY.value) is False  # no asynchronous operations
    assert info.value_of(T.STREAMING_CAPABILITY.value) is True
    assert info.value_of(T.DESTROY_ACTION.value) == enums.DestroyAction.KEY_MATERIAL_DELETED.value


@pytest.mark.parametrize("version", ALL)
def test_rngs_from_13(conn: Conn, version: tuple[int, int]) -> None:
    out = _query(conn, version, Q.QUERY_RNGS)
    params = out.all(T.RNG_PARAMETERS.value)
    assert len(params) == (1 if version >= (1, 3) else 0)
    if params:
        assert params[0].value_of(T.RNG_ALGORITHM.value) == enums.RNGAlgorithm.UNSPECIFIED.value


def _profiles(out: Item) -> set[int]:
    return {p.value_of(T.PROFILE_NAME.value) for p in out.all(T.PROFILE_INFORMATION.value)}  # type: ignore[misc]


def test_profiles_only_those_verified_at_that_version(conn: Conn) -> None:
    p14 = _profiles(_query(conn, (1, 4), Q.QUERY_PROFILES))
    assert enums.ProfileName.SYMMETRIC_KEY_LIFECYCLE_SERVER_KMIPv14.value in p14
    # Tape Library fails a mandatory vector; the server speaks no HTTPS/JSON/XML: not claimed.
    assert enums.ProfileName.TAPE_LIBRARY_SERVER_KMIPv14.value not in p14
    assert enums.ProfileName.BASELINE_SERVER_TLSv12_KMIPv14.value not in p14  # no 1.4 Baseline vectors here
    assert enums.ProfileName.HTTPS_SERVER_KMIPv14.value not in p14
    assert all(0x79 <= p <= 0x9C for p in p14)  # 1.4 names only
    out21 = _query(conn, (2, 1), Q.QUERY_PROFILES)
    p21 = _profiles(out21)
    assert enums.ProfileName.BASELINE_SERVER.value in p21
    assert enums.ProfileName.TAPE_LIBRARY_SERVER.value not in p21
    assert enums.ProfileName.PKCS11_SERVER.value not in p21
    version = out21.get(T.PROFILE_INFORMATION.value).get(T.PROFILE_VERSION.value)  # type: ignore[union-attr]
    assert (version.value_of(T.PROFILE_VERSION_MAJOR.value), version.value_of(T.PROFILE_VERSION_MINOR.value)) == (2, 1)
    # Versions whose vectors are not run here claim nothing; 1.2 has no Query Profiles at all.
    for v in ((1, 2), (1, 3), (2, 0)):
        assert _profiles(_query(conn, v, Q.QUERY_PROFILES)) == set()


@pytest.mark.parametrize("version", [(1, 2), (1, 3), (1, 4), (2, 1)])
def test_registration_methods_from_13(conn: Conn, version: tuple[int, int]) -> None:
    out = _query(conn, version, Q.QUERY_CLIENT_REGISTRATION_METHODS)
    methods = {m.value for m in out.all(T.CLIENT_REGISTRATION_METHOD.value)}
    if version < (1, 3):
        assert methods == set()
    else:
        assert enums.ClientRegistrationMethod.SERVER_PREGENERATED.value in methods


@pytest.mark.parametrize("version", ALL)
def test_none_is_an_answer(conn: Conn, version: tuple[int, int]) -> None:
    """Validations, Attestation Types, Extension List/Map, Application Namespaces: the server has
    none; the query succeeds with an empty payload, in every version."""
    out = _query(conn, version, Q.QUERY_VALIDATIONS, Q.QUERY_ATTESTATION_TYPES, Q.QUERY_EXTENSION_LIST,
                 Q.QUERY_EXTENSION_MAP, Q.QUERY_APPLICATION_NAMESPACES)
    assert len(out.value) == 0  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [(1, 4), (2, 0), (2, 1)])
def test_storage_protection_masks_from_20(conn: Conn, version: tuple[int, int]) -> None:
    out = _query(conn, version, Q.QUERY_STORAGE_PROTECTION_MASKS)
    masks = out.get(T.PROTECTION_STORAGE_MASKS.value)
    assert (masks is not None) == (version >= (2, 0))
    if masks is not None:
        assert masks.value_of(T.PROTECTION_STORAGE_MASK.value) == enums.ProtectionStorageMask.SOFTWARE.value


def test_functions_answer_in_the_payloads_order(conn: Conn) -> None:
    # Asked in reverse, answered in the order the Query response payload defines.
    out = _query(conn, (2, 1), Q.QUERY_CAPABILITIES, Q.QUERY_RNGS, Q.QUERY_SERVER_INFORMATION, Q.QUERY_OPERATIONS)
    tags = [c.tag for c in out]
    order = [T.OPERATION.value, T.VENDOR_IDENTIFICATION.value, T.SERVER_INFORMATION.value,
             T.RNG_PARAMETERS.value, T.CAPABILITY_INFORMATION.value]
    assert [t for t in dict.fromkeys(tags)] == order
