"""Create Split Key / Join Split Key (KMIP 1.2+): XOR, polynomial sharing over GF(2^8), GF(2^16)
and a prime field; any threshold of parts gives the key back, fewer do not — at 1.2, 1.4 and 2.1 over
raw TTLV (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kmip.core import enums
from kmip.core.enums import Operation, ResultReason, SplitKeyMethod
from kmip.core.enums import Tags as T

from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item, Type

from .conftest import Instance, Server
from .rawkmip import Conn, create_aes, get_attributes, open_conn, uid_, v1

pytestmark = pytest.mark.e2e
VERSIONS = [(1, 2), (1, 3), (1, 4), (2, 0), (2, 1)]
PRIME = 2**521 - 1  # a Mersenne prime larger than any 256-bit key


@pytest.fixture(scope="module")
def conn(server: Server, instance: Instance) -> Iterator[Conn]:
    yield from open_conn(server, instance)


def _material(c: Conn, uid: str, version: tuple[int, int], tag: T = T.SYMMETRIC_KEY) -> bytes:
    obj = c.ok(Operation.GET, [uid_(uid)], version).get(tag.value)
    return obj.get(T.KEY_BLOCK.value).get(T.KEY_VALUE.value).value_of(T.KEY_MATERIAL.value)  # type: ignore[union-attr,return-value]


def _empty_attrs(version: tuple[int, int]) -> Item:
    return ttlv.struct_(T.ATTRIBUTES if version >= (2, 0) else T.TEMPLATE_ATTRIBUTE, [])


def _split(c: Conn, uid: str, version: tuple[int, int], method: SplitKeyMethod, n: int, m: int,
           prime: int | None = None) -> Item:
    fields = [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY), uid_(uid),
              ttlv.integer(T.SPLIT_KEY_PARTS, n), ttlv.integer(T.SPLIT_KEY_THRESHOLD, m),
              ttlv.enum(T.SPLIT_KEY_METHOD, method)]
    if prime is not None:
        fields.append(Item(T.PRIME_FIELD_SIZE.value, Type.BIG_INTEGER, prime))
    fields.append(_empty_attrs(version))
    return c.call(Operation.CREATE_SPLIT_KEY, fields, version)


def _parts(bi: Item) -> list[str]:
    assert bi.value_of(T.RESULT_STATUS.value) == enums.ResultStatus.SUCCESS.value, bi.value_of(T.RESULT_MESSAGE.value)
    return [u.value for u in bi.get(T.RESPONSE_PAYLOAD.value).all(T.UNIQUE_IDENTIFIER.value)]  # type: ignore[union-attr,misc]


def _join(c: Conn, parts: list[str], version: tuple[int, int],
          kind: enums.ObjectType = enums.ObjectType.SYMMETRIC_KEY) -> Item:
    return c.call(Operation.JOIN_SPLIT_KEY, [ttlv.enum(T.OBJECT_TYPE, kind), *(uid_(p) for p in parts),
                                             _empty_attrs(version)], version)


def _joined(c: Conn, parts: list[str], version: tuple[int, int]) -> bytes:
    bi = _join(c, parts, version)
    assert bi.value_of(T.RESULT_STATUS.value) == enums.ResultStatus.SUCCESS.value, bi.value_of(T.RESULT_MESSAGE.value)
    return _material(c, bi.get(T.RESPONSE_PAYLOAD.value).value_of(T.UNIQUE_IDENTIFIER.value), version)  # type: ignore[union-attr,arg-type]


def _too_few(c: Conn, parts: list[str], version: tuple[int, int]) -> None:
    bi = _join(c, parts, version)
    assert bi.value_of(T.RESULT_STATUS.value) == enums.ResultStatus.OPERATION_FAILED.value
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.CRYPTOGRAPHIC_FAILURE.value


@pytest.mark.parametrize("version", VERSIONS)
def test_xor_split_needs_every_part(conn: Conn, version: tuple[int, int]) -> None:
    key = create_aes(conn, version)
    original = _material(conn, key, version)
    parts = _parts(_split(conn, key, version, SplitKeyMethod.XOR, 3, 3))
    assert len(parts) == 3 and len(set(parts)) == 3
    shares = [_material(conn, p, version, T.SPLIT_KEY) for p in parts]
    assert original not in shares  # no part is the key
    part = conn.ok(Operation.GET, [uid_(parts[1])], version).get(T.SPLIT_KEY.value)
    assert part.value_of(T.KEY_PART_IDENTIFIER.value) == 2  # type: ignore[union-attr]
    assert part.value_of(T.SPLIT_KEY_METHOD.value) == SplitKeyMethod.XOR.value  # type: ignore[union-attr]
    assert _joined(conn, parts, version) == original
    _too_few(conn, parts[:2], version)


@pytest.mark.parametrize("version", VERSIONS)
def test_polynomial_sharing_gf256_any_threshold(conn: Conn, version: tuple[int, int]) -> None:
    key = create_aes(conn, version)
    original = _material(conn, key, version)
    parts = _parts(_split(conn, key, version, SplitKeyMethod.POLYNOMIAL_SHARING_GF_2_8, 5, 3))
    assert _joined(conn, [parts[0], parts[2], parts[4]], version) == original
    assert _joined(conn, [parts[3], parts[1], parts[4]], version) == original
    _too_few(conn, [parts[0], parts[1]], version)


@pytest.mark.parametrize("version", VERSIONS)
def test_polynomial_sharing_gf65536_any_threshold(conn: Conn, version: tuple[int, int]) -> None:
    key = create_aes(conn, version)
    original = _material(conn, key, version)
    parts = _parts(_split(conn, key, version, SplitKeyMethod.POLYNOMIAL_SHARING_GF_2_16, 4, 3))
    part = conn.ok(Operation.GET, [uid_(parts[0])], version).get(T.SPLIT_KEY.value)
    assert part.value_of(T.SPLIT_KEY_METHOD.value) == SplitKeyMethod.POLYNOMIAL_SHARING_GF_2_16.value  # type: ignore[union-attr]
    assert _joined(conn, [parts[3], parts[0], parts[2]], version) == original
    assert _joined(conn, parts, version) == original  # more than the threshold: still the key
    _too_few(conn, [parts[1], parts[2]], version)
    # A GF(2^16) part does not join with GF(2^8) parts of the same key.
    other = _parts(_split(conn, key, version, SplitKeyMethod.POLYNOMIAL_SHARING_GF_2_8, 4, 3))
    bi = _join(conn, [parts[0], other[1], other[2]], version)
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.INVALID_FIELD.value


@pytest.mark.parametrize("version", VERSIONS)
def test_polynomial_sharing_prime_field(conn: Conn, version: tuple[int, int]) -> None:
    key = create_aes(conn, version)
    original = _material(conn, key, version)
    parts = _parts(_split(conn, key, version, SplitKeyMethod.POLYNOMIAL_SHARING_PRIME_FIELD, 4, 2, PRIME))
    assert _joined(conn, [parts[1], parts[3]], version) == original
    _too_few(conn, [parts[2]], version)
    # Not a prime: refused.
    bad = _split(conn, key, version, SplitKeyMethod.POLYNOMIAL_SHARING_PRIME_FIELD, 4, 2, PRIME + 2)
    assert bad.value_of(T.RESULT_REASON.value) == ResultReason.INVALID_FIELD.value


@pytest.mark.parametrize("version", [(1, 4), (2, 1)])
def test_parts_link_to_their_parent_and_join_into_secret_data(conn: Conn, version: tuple[int, int]) -> None:
    key = create_aes(conn, version)
    parts = _parts(_split(conn, key, version, SplitKeyMethod.XOR, 2, 2))
    out = get_attributes(conn, parts[0], version, "Link")
    link = out.get(T.ATTRIBUTES.value).get(T.LINK.value) if version >= (2, 0) else \
        out.get(T.ATTRIBUTE.value).get(T.ATTRIBUTE_VALUE.value)  # type: ignore[union-attr]
    assert link.value_of(T.LINK_TYPE.value) == enums.LinkType.PARENT_LINK.value  # type: ignore[union-attr]
    assert link.value_of(T.LINKED_OBJECT_IDENTIFIER.value) == key  # type: ignore[union-attr]
    bi = _join(conn, parts, version, enums.ObjectType.SECRET_DATA)
    secret_uid = bi.get(T.RESPONSE_PAYLOAD.value).value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[union-attr]
    assert _material(conn, secret_uid, version, T.SECRET_DATA) == _material(conn, key, version)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [(1, 4), (2, 1)])
def test_bad_requests(conn: Conn, version: tuple[int, int]) -> None:
    key = create_aes(conn, version)
    bi = _split(conn, key, version, SplitKeyMethod.XOR, 3, 2)  # XOR needs every part
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.INVALID_FIELD.value
    # GF(2^16) shares 16-bit words: a new 24-bit secret is not a whole number of them.
    bi = conn.call(Operation.CREATE_SPLIT_KEY, [
        ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA), ttlv.integer(T.SPLIT_KEY_PARTS, 3),
        ttlv.integer(T.SPLIT_KEY_THRESHOLD, 2),
        ttlv.enum(T.SPLIT_KEY_METHOD, SplitKeyMethod.POLYNOMIAL_SHARING_GF_2_16),
        ttlv.struct_(T.ATTRIBUTES, [ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 24)]) if version >= (2, 0) else
        ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [v1("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, 24))])], version)
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.INVALID_FIELD.value
    bi = _join(conn, [key], version)  # not a split key part
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.INVALID_FIELD.value
    parts = _parts(_split(conn, key, version, SplitKeyMethod.XOR, 2, 2))
    other = _parts(_split(conn, key, version, SplitKeyMethod.POLYNOMIAL_SHARING_GF_2_8, 2, 2))
    bi = _join(conn, [parts[0], other[1]], version)  # parts of different splits
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.INVALID_FIELD.value


def test_split_keys_do_not_exist_before_12(conn: Conn) -> None:
    key = create_aes(conn, (1, 1))
    bi = _split(conn, key, (1, 1), SplitKeyMethod.XOR, 2, 2)
    assert bi.value_of(T.RESULT_REASON.value) == ResultReason.OPERATION_NOT_SUPPORTED.value


@pytest.mark.parametrize("version", [(1, 4), (2, 1)])
def test_a_non_extractable_key_stays_unreadable_through_its_parts(conn: Conn, version: tuple[int, int]) -> None:
    """Export rules follow the material: splitting a non-extractable key must not hand its bytes
    out part by part, nor through a join; an extractable key's parts stay readable (control)."""
    flag = (ttlv.boolean(T.EXTRACTABLE, False) if version >= (2, 0)
            else v1("Extractable", ttlv.boolean(T.ATTRIBUTE_VALUE, False)))
    locked = create_aes(conn, version, flag)
    parts = _parts(_split(conn, locked, version, SplitKeyMethod.XOR, 2, 2))
    for part in parts:
        bi = conn.call(Operation.GET, [uid_(part)], version)
        assert bi.value_of(T.RESULT_STATUS.value) == enums.ResultStatus.OPERATION_FAILED.value, "a part leaked"
    joined = _join(conn, parts, version)
    assert joined.value_of(T.RESULT_STATUS.value) == enums.ResultStatus.SUCCESS.value
    joined_uid = joined.get(T.RESPONSE_PAYLOAD.value).value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[union-attr]
    bi = conn.call(Operation.GET, [uid_(joined_uid)], version)  # type: ignore[arg-type]
    assert bi.value_of(T.RESULT_STATUS.value) == enums.ResultStatus.OPERATION_FAILED.value, "the join leaked"

    # Control: the same split of an extractable key gives readable parts that join to the key.
    free = create_aes(conn, version)
    free_parts = _parts(_split(conn, free, version, SplitKeyMethod.XOR, 2, 2))
    assert all(_material(conn, p, version, T.SPLIT_KEY) for p in free_parts)
    assert _joined(conn, free_parts, version) == _material(conn, free, version)
