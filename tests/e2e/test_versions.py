"""Version gating: a response carries only what the request's protocol version defines
(protocol/versions.py) — attributes in GetAttributes / GetAttributeList, operations and object
types in Query, the operations a client may call, header fields — over raw TTLV at each version,
against a real server (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kmip.core import enums
from kmip.core.enums import Operation, QueryFunction, ResultReason
from kmip.core.enums import Tags as T

from kmip_bridge.protocol import ttlv, versions
from kmip_bridge.protocol.ttlv import Item

from .conftest import Instance, Server
from .rawkmip import ALL, V1X, Conn, attribute_names, create_aes, open_conn, uid_, v1

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def conn(server: Server, instance: Instance) -> Iterator[Conn]:
    yield from open_conn(server, instance)


def _all_attributes(c: Conn, uid: str, version: tuple[int, int]) -> list[str]:
    return attribute_names(c.ok(Operation.GET_ATTRIBUTES, [uid_(uid)], version), version)


@pytest.mark.parametrize("version", ALL)
def test_get_attributes_all_holds_only_the_versions_attributes(conn: Conn, version: tuple[int, int]) -> None:
    # A key that has Fresh, Original Creation Date, Sensitive..., and a 1.x Operation Policy Name.
    uid = create_aes(conn, (1, 4), v1("Operation Policy Name", ttlv.text(T.ATTRIBUTE_VALUE, "default")))
    names = _all_attributes(conn, uid, version)
    assert "Unique Identifier" in names and "Cryptographic Algorithm" in names  # control
    stray = [n for n in names if not versions.attribute_in(n, version)]
    assert stray == [], f"KMIP {version} client was sent {stray}"
    # The attributes that draw the line, each on the right side of it.
    expect = {"Fresh": (1, 1), "Original Creation Date": (1, 2), "Sensitive": (1, 4),
              "Short Unique Identifier": (2, 0)}
    for name, since in expect.items():
        assert (name in names) == (version >= since), (name, version, names)
    assert ("Operation Policy Name" in names) == (version < (2, 0))


def test_a_kmip_10_client_never_sees_fresh(conn: Conn) -> None:
    uid = create_aes(conn, (1, 0))
    assert "Fresh" not in _all_attributes(conn, uid, (1, 0))
    assert "Fresh" in _all_attributes(conn, uid, (1, 1))  # the same key, a 1.1 client


@pytest.mark.parametrize("version", [(1, 0), (1, 3), (1, 4), (2, 1)])
def test_get_attribute_list_is_the_versions_own(conn: Conn, version: tuple[int, int]) -> None:
    uid = create_aes(conn, (1, 4))
    out = conn.ok(Operation.GET_ATTRIBUTE_LIST, [uid_(uid)], version)
    if version >= (2, 0):
        from kmip_bridge.protocol import attributes as wire
        names = [wire.parse_names_v2(r) for r in out.all(T.ATTRIBUTE_REFERENCE.value)]
    else:
        names = [n.value for n in out.all(T.ATTRIBUTE_NAME.value)]
    assert "State" in names
    assert all(versions.attribute_in(n, version) for n in names), names  # type: ignore[arg-type]
    assert ("Never Extractable" in names) == (version >= (1, 4))


def test_asking_for_a_later_attribute_by_name_gets_nothing(conn: Conn) -> None:
    uid = create_aes(conn, (1, 4))
    out = conn.ok(Operation.GET_ATTRIBUTES, [uid_(uid), ttlv.text(T.ATTRIBUTE_NAME, "Sensitive"),
                                             ttlv.text(T.ATTRIBUTE_NAME, "State")], (1, 2))
    assert attribute_names(out, (1, 2)) == ["State"]


def _query(c: Conn, version: tuple[int, int], function: QueryFunction) -> Item:
    return c.ok(Operation.QUERY, [ttlv.enum(T.QUERY_FUNCTION, function)], version)


@pytest.mark.parametrize("version", ALL)
def test_query_operations_lists_only_the_versions_operations(conn: Conn, version: tuple[int, int]) -> None:
    ops = {o.value for o in _query(conn, version, QueryFunction.QUERY_OPERATIONS).all(T.OPERATION.value)}
    assert Operation.CREATE.value in ops and Operation.GET.value in ops
    assert all(versions.operation_in(op, version) for op in ops), sorted(ops)  # type: ignore[arg-type]
    assert (Operation.DISCOVER_VERSIONS.value in ops) == (version >= (1, 1))
    for later in (Operation.ENCRYPT, Operation.HASH, Operation.RNG_RETRIEVE):
        assert (later.value in ops) == (version >= (1, 2)), later
    for later in (Operation.LOG, Operation.SET_ATTRIBUTE, Operation.INTEROP):
        assert (later.value in ops) == (version >= (2, 0)), later


@pytest.mark.parametrize("version", [(1, 1), (1, 2), (2, 1)])
def test_query_objects_lists_pgp_key_from_12(conn: Conn, version: tuple[int, int]) -> None:
    types = {o.value for o in _query(conn, version, QueryFunction.QUERY_OBJECTS).all(T.OBJECT_TYPE.value)}
    assert enums.ObjectType.SYMMETRIC_KEY.value in types
    assert (enums.ObjectType.PGP_KEY.value in types) == (version >= (1, 2))


def test_an_operation_the_version_lacks_is_not_supported(conn: Conn) -> None:
    data = [ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, [ttlv.enum(T.HASHING_ALGORITHM, enums.HashingAlgorithm.SHA_256)]),
            ttlv.bytes_(T.DATA, b"abc")]
    conn.fails(Operation.HASH, data, (1, 1), ResultReason.OPERATION_NOT_SUPPORTED)
    assert conn.ok(Operation.HASH, data, (1, 2)).value_of(T.DATA.value)  # control: 1.2 defines Hash
    # The one exception: Discover Versions (1.1) is answered in a 1.0 header too, as 1.0 clients
    # (libmongocrypt, tests/clients) send it to find the server's versions.
    assert conn.ok(Operation.DISCOVER_VERSIONS, [], (1, 0)).all(T.PROTOCOL_VERSION.value)
    conn.ok(Operation.DISCOVER_VERSIONS, [], (1, 1))


def test_adding_an_attribute_the_version_lacks_is_refused(conn: Conn) -> None:
    uid = create_aes(conn, (1, 4))
    desc = v1("Description", ttlv.text(T.ATTRIBUTE_VALUE, "a 1.4 attribute"))
    conn.fails(Operation.ADD_ATTRIBUTE, [uid_(uid), desc], (1, 3), ResultReason.INVALID_FIELD)
    conn.ok(Operation.ADD_ATTRIBUTE, [uid_(uid), desc], (1, 4))  # control


@pytest.mark.parametrize("version,has", [((1, 3), False), ((1, 4), True), ((2, 1), True)])
def test_server_correlation_value_from_14(conn: Conn, version: tuple[int, int], has: bool) -> None:
    response = conn.message([(Operation.DISCOVER_VERSIONS, [])], version)
    header = response.get(T.RESPONSE_HEADER.value)
    assert (header.get(T.SERVER_CORRELATION_VALUE.value) is not None) == has  # type: ignore[union-attr]


def _register_with_attribute_in_key_value(c: Conn, version: tuple[int, int]) -> str:
    material = ttlv.bytes_(T.KEY_MATERIAL, bytes(range(32)))
    inner = v1("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.AES))
    block = ttlv.struct_(T.KEY_BLOCK, [
        ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.RAW),
        ttlv.struct_(T.KEY_VALUE, [material, inner]),
        ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
        ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 256),
    ])
    template = ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [
        v1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, enums.CryptographicUsageMask.ENCRYPT.value))])
    out = c.ok(Operation.REGISTER, [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY), template,
                                    ttlv.struct_(T.SYMMETRIC_KEY, [block])], version)
    return out.value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[return-value]


def _key_value(payload: Item) -> Item:
    return payload.get(T.SYMMETRIC_KEY.value).get(T.KEY_BLOCK.value).get(T.KEY_VALUE.value)  # type: ignore[union-attr]


@pytest.mark.parametrize("version", V1X[2:])
def test_1x_get_puts_no_attributes_inside_key_value(conn: Conn, version: tuple[int, int]) -> None:
    uid = _register_with_attribute_in_key_value(conn, (1, 4))
    value = _key_value(conn.ok(Operation.GET, [uid_(uid)], version))
    assert value.get(T.KEY_MATERIAL.value).value == bytes(range(32))  # type: ignore[union-attr]
    assert value.get(T.ATTRIBUTE.value) is None and value.get(T.ATTRIBUTES.value) is None


def test_the_stored_key_value_does_hold_the_attribute(conn: Conn) -> None:
    """Control for the test above: the object keeps what was registered, a 2.x Get shows it."""
    uid = _register_with_attribute_in_key_value(conn, (1, 4))
    value = _key_value(conn.ok(Operation.GET, [uid_(uid)], (2, 1)))
    assert value.get(T.ATTRIBUTE.value) is not None
