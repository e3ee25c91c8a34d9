"""AddAttribute, ModifyAttribute, SetAttribute, DeleteAttribute and Check over raw TTLV, in the
KMIP 1.4 and 2.1 message forms, against a real server (SQLite and PostgreSQL).

Expected answers follow the OASIS mandatory vectors (SKFF-M-9..12, AX-M-1/2, SKLC-M-3, AKLC-M-3
for 1.4 and 2.1; BL-M-2/3/5/7/8/10, TL-M-3 for 2.1)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kmip.core import enums
from kmip.core.enums import BatchErrorContinuationOption, Operation, ResultReason, ResultStatus
from kmip.core.enums import Tags as T

from kmip_bridge.client import RawClient, client_context, request
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item, Type

from .conftest import Instance, Server

pytestmark = pytest.mark.e2e

V14 = (1, 4)
V21 = (2, 1)
OWNER, OTHER = "alice", "bob"


class Conn:
    def __init__(self, server: Server, instance: Instance, name: str) -> None:
        folder = instance.dir / "clients" / name
        ctx = client_context(instance.dir / "pki" / "ca.pem", folder / "cert.pem", folder / "key.pem")
        self.raw = RawClient("127.0.0.1", server.port, ctx)

    def batch(self, items: list[tuple[Operation, list[Item]]], version: tuple[int, int],
              option: BatchErrorContinuationOption | None = None) -> list[Item]:
        msg = request(
            [(op.value, ttlv.struct_(T.REQUEST_PAYLOAD, fields)) for op, fields in items],
            version=version, batch_error_option=option.value if option else None,
        )
        return self.raw.call(msg).all(T.BATCH_ITEM.value)

    def call(self, op: Operation, fields: list[Item], version: tuple[int, int]) -> Item:
        return self.batch([(op, fields)], version)[0]

    def ok(self, op: Operation, fields: list[Item], version: tuple[int, int]) -> Item:
        bi = self.call(op, fields, version)
        assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.SUCCESS.value, bi.value_of(T.RESULT_MESSAGE.value)
        return bi.get(T.RESPONSE_PAYLOAD.value)  # type: ignore[return-value]

    def fails(self, op: Operation, fields: list[Item], version: tuple[int, int], reason: ResultReason) -> Item:
        bi = self.call(op, fields, version)
        _failed(bi, reason)
        return bi


def _failed(bi: Item, reason: ResultReason) -> None:
    assert bi.value_of(T.RESULT_STATUS.value) == ResultStatus.OPERATION_FAILED.value, bi
    got = bi.value_of(T.RESULT_REASON.value)
    assert got == reason.value, (ResultReason(got).name, bi.value_of(T.RESULT_MESSAGE.value))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def conns(server: Server, instance: Instance) -> Iterator[dict[str, Conn]]:
    for name in (OWNER, OTHER):
        if not (instance.dir / "clients" / name / "cert.pem").exists():
            instance.client(name)
    cs = {n: Conn(server, instance, n) for n in (OWNER, OTHER)}
    yield cs
    for c in cs.values():
        c.raw.close()


@pytest.fixture()
def alice(conns: dict[str, Conn]) -> Conn:
    return conns[OWNER]


@pytest.fixture()
def bob(conns: dict[str, Conn]) -> Conn:
    return conns[OTHER]


# -- request pieces -----------------------------------------------------------------------------------
def uid_(uid: str) -> Item:
    return ttlv.text(T.UNIQUE_IDENTIFIER, uid)


def v1(name: str, value: Item, index: int | None = None) -> Item:
    """A 1.x Attribute structure; ``value`` is tagged Attribute Value."""
    parts = [ttlv.text(T.ATTRIBUTE_NAME, name)]
    if index is not None:
        parts.append(ttlv.integer(T.ATTRIBUTE_INDEX, index))
    return ttlv.struct_(T.ATTRIBUTE, [*parts, value])


def text_value(s: str) -> Item:
    return ttlv.text(T.ATTRIBUTE_VALUE, s)


def name_struct(tag: T | int, value: str) -> Item:
    return ttlv.struct_(tag, [ttlv.text(T.NAME_VALUE, value),
                              ttlv.enum(T.NAME_TYPE, enums.NameType.UNINTERPRETED_TEXT_STRING)])


def vendor(name: str, value: str, tag: T = T.ATTRIBUTE) -> Item:
    """A 2.x vendor attribute (or, with tag Attribute Reference and no value, its reference)."""
    parts = [ttlv.text(T.VENDOR_IDENTIFICATION, "x"), ttlv.text(T.ATTRIBUTE_NAME, name)]
    if tag == T.ATTRIBUTE:
        parts.append(ttlv.text(T.ATTRIBUTE_VALUE, value))
    return ttlv.struct_(tag, parts)


def new(attr: Item) -> Item:
    return ttlv.struct_(T.NEW_ATTRIBUTE, [attr])


def current(attr: Item) -> Item:
    return ttlv.struct_(T.CURRENT_ATTRIBUTE, [attr])


def ref(tag: T) -> Item:
    return Item(T.ATTRIBUTE_REFERENCE.value, Type.ENUMERATION, tag.value)


def create_v14(c: Conn, *extra: Item) -> str:
    attrs = [v1("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.AES)),
             v1("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, 256)), *extra]
    out = c.ok(Operation.CREATE, [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
                                  ttlv.struct_(T.TEMPLATE_ATTRIBUTE, attrs)], V14)
    return out.value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[return-value]


def create_v21(c: Conn, mask: int = enums.CryptographicUsageMask.DECRYPT.value, *extra: Item) -> str:
    attrs = [ttlv.enum(T.CRYPTOGRAPHIC_ALGORITHM, enums.CryptographicAlgorithm.AES),
             ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 256), ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, mask), *extra]
    out = c.ok(Operation.CREATE, [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
                                  ttlv.struct_(T.ATTRIBUTES, attrs)], V21)
    return out.value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[return-value]


def get_v14(c: Conn, uid: str, *names: str) -> list[tuple[str, int, object]]:
    """(name, index, value) of each attribute GetAttributes returns in 1.4."""
    out = c.ok(Operation.GET_ATTRIBUTES, [uid_(uid), *(ttlv.text(T.ATTRIBUTE_NAME, n) for n in names)], V14)
    return [(a.value_of(T.ATTRIBUTE_NAME.value), a.value_of(T.ATTRIBUTE_INDEX.value, 0),  # type: ignore[misc]
             a.get(T.ATTRIBUTE_VALUE.value).value) for a in out.all(T.ATTRIBUTE.value)]  # type: ignore[union-attr]


def get_v21(c: Conn, uid: str, *refs: Item) -> list[Item]:
    out = c.ok(Operation.GET_ATTRIBUTES, [uid_(uid), *refs], V21)
    return list(out.get(T.ATTRIBUTES.value))  # type: ignore[arg-type]


def names_of(items: list[Item]) -> list[str]:
    return [i.get(T.NAME_VALUE.value).value for i in items if i.tag == T.NAME.value]  # type: ignore[union-attr,misc]


# -- KMIP 1.4 -----------------------------------------------------------------------------------------
def test_v14_add_modify_delete_with_indexes(alice: Conn) -> None:
    uid = create_v14(alice)
    before = dict((n, v) for n, _, v in get_v14(alice, uid, "Last Change Date"))["Last Change Date"]
    time.sleep(1.1)  # Last Change Date has one-second resolution

    # SKFF-M-9-14: the added attribute is echoed, Attribute Index omitted for index 0.
    out = alice.ok(Operation.ADD_ATTRIBUTE, [uid_(uid), v1("x-attribute1", text_value("Value1"))], V14)
    assert out.value_of(T.UNIQUE_IDENTIFIER.value) == uid
    echoed = out.get(T.ATTRIBUTE.value)
    assert echoed.value_of(T.ATTRIBUTE_NAME.value) == "x-attribute1"  # type: ignore[union-attr]
    assert echoed.get(T.ATTRIBUTE_INDEX.value) is None  # type: ignore[union-attr]
    assert echoed.value_of(T.ATTRIBUTE_VALUE.value) == "Value1"  # type: ignore[union-attr]
    # Custom attributes take any type and any number of instances; the server numbers them.
    out = alice.ok(Operation.ADD_ATTRIBUTE, [uid_(uid), v1("x-attribute1", ttlv.integer(T.ATTRIBUTE_VALUE, 7))], V14)
    assert out.get(T.ATTRIBUTE.value).value_of(T.ATTRIBUTE_INDEX.value) == 1  # type: ignore[union-attr]
    after = dict((n, v) for n, _, v in get_v14(alice, uid, "Last Change Date"))["Last Change Date"]
    assert after > before  # type: ignore[operator]

    out = alice.ok(Operation.MODIFY_ATTRIBUTE, [uid_(uid), v1("x-attribute1", text_value("Modified"), 1)], V14)
    assert out.get(T.ATTRIBUTE.value).value_of(T.ATTRIBUTE_INDEX.value) == 1  # type: ignore[union-attr]
    assert get_v14(alice, uid, "x-attribute1") == [("x-attribute1", 0, "Value1"), ("x-attribute1", 1, "Modified")]

    # The deleted attribute is echoed; the remaining instance keeps its index.
    out = alice.ok(Operation.DELETE_ATTRIBUTE, [uid_(uid), ttlv.text(T.ATTRIBUTE_NAME, "x-attribute1")], V14)
    assert out.get(T.ATTRIBUTE.value).value_of(T.ATTRIBUTE_VALUE.value) == "Value1"  # type: ignore[union-attr]
    assert get_v14(alice, uid, "x-attribute1") == [("x-attribute1", 1, "Modified")]
    out = alice.ok(Operation.DELETE_ATTRIBUTE, [uid_(uid), ttlv.text(T.ATTRIBUTE_NAME, "x-attribute1"),
                                                ttlv.integer(T.ATTRIBUTE_INDEX, 1)], V14)
    assert out.get(T.ATTRIBUTE.value).value_of(T.ATTRIBUTE_INDEX.value) == 1  # type: ignore[union-attr]
    assert get_v14(alice, uid, "x-attribute1") == []
    listed = alice.ok(Operation.GET_ATTRIBUTE_LIST, [uid_(uid)], V14)
    assert "x-attribute1" not in [n.value for n in listed.all(T.ATTRIBUTE_NAME.value)]


def test_v14_names_links_and_id_placeholder(alice: Conn) -> None:
    other = create_v14(alice)
    # AX-M-1-14 / TL-M-3-14: the ID placeholder of the batch names the object.
    template = ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [
        v1("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.AES)),
        v1("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, 128))])
    out = alice.batch([
        (Operation.CREATE, [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY), template]),
        (Operation.ADD_ATTRIBUTE, [v1("Link", ttlv.struct_(T.ATTRIBUTE_VALUE, [
            ttlv.enum(T.LINK_TYPE, enums.LinkType.NEXT_LINK), ttlv.text(T.LINKED_OBJECT_IDENTIFIER, other)]))]),
        (Operation.ADD_ATTRIBUTE, [v1("Name", name_struct(T.ATTRIBUTE_VALUE, f"n1-{other}"))]),
        (Operation.ADD_ATTRIBUTE, [v1("Name", name_struct(T.ATTRIBUTE_VALUE, f"n2-{other}"))]),
    ], V14)
    assert [b.value_of(T.RESULT_STATUS.value) for b in out] == [ResultStatus.SUCCESS.value] * 4
    uid = out[0].get(T.RESPONSE_PAYLOAD.value).value_of(T.UNIQUE_IDENTIFIER.value)  # type: ignore[union-attr]
    assert out[3].get(T.RESPONSE_PAYLOAD.value).get(T.ATTRIBUTE.value).value_of(  # type: ignore[union-attr]
        T.ATTRIBUTE_INDEX.value) == 1
    got = get_v14(alice, uid, "Link", "State", "Name")  # type: ignore[arg-type]
    assert [(n, i) for n, i, _ in got] == [("Link", 0), ("State", 0), ("Name", 0), ("Name", 1)]  # order asked

    # Modify the second Name by index; its value must stay unique among the caller's objects.
    alice.ok(Operation.MODIFY_ATTRIBUTE, [uid_(uid), v1("Name", name_struct(T.ATTRIBUTE_VALUE, f"n3-{other}"), 1)], V14)
    alice.fails(Operation.MODIFY_ATTRIBUTE, [uid_(uid), v1("Name", name_struct(T.ATTRIBUTE_VALUE, f"n1-{other}"), 1)],
                V14, ResultReason.ILLEGAL_OPERATION)
    alice.fails(Operation.ADD_ATTRIBUTE, [uid_(other), v1("Name", name_struct(T.ATTRIBUTE_VALUE, f"n3-{other}"))],
                V14, ResultReason.ILLEGAL_OPERATION)
    loc = alice.ok(Operation.LOCATE, [v1("Name", name_struct(T.ATTRIBUTE_VALUE, f"n3-{other}"))], V14)
    assert [u.value for u in loc.all(T.UNIQUE_IDENTIFIER.value)] == [uid]


def test_v14_refusals(alice: Conn) -> None:
    uid = create_v14(alice)
    contact = v1("Contact Information", text_value("ops@example.com"))
    alice.ok(Operation.ADD_ATTRIBUTE, [uid_(uid), contact], V14)
    cases: list[tuple[Operation, list[Item], ResultReason]] = [
        # The server assigns indexes (KMIP 1.4 §11.15).
        (Operation.ADD_ATTRIBUTE, [v1("x-a", text_value("v"), 0)], ResultReason.INVALID_FIELD),
        # Server-only and read-only attributes.
        (Operation.ADD_ATTRIBUTE, [v1("State", ttlv.enum(T.ATTRIBUTE_VALUE, enums.State.ACTIVE))],
         ResultReason.PERMISSION_DENIED),
        (Operation.MODIFY_ATTRIBUTE, [v1("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, 128))],
         ResultReason.PERMISSION_DENIED),
        (Operation.MODIFY_ATTRIBUTE, [v1("Last Change Date", ttlv.date_time(T.ATTRIBUTE_VALUE, 0))],
         ResultReason.PERMISSION_DENIED),
        (Operation.DELETE_ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, "Cryptographic Algorithm")],
         ResultReason.PERMISSION_DENIED),
        # A single-valued attribute cannot be added twice.
        (Operation.ADD_ATTRIBUTE, [contact], ResultReason.ILLEGAL_OPERATION),
        # Modify needs an existing attribute (Invalid Field) and instance (Item Not Found).
        (Operation.MODIFY_ATTRIBUTE, [v1("x-missing", text_value("v"))], ResultReason.INVALID_FIELD),
        (Operation.MODIFY_ATTRIBUTE, [v1("Contact Information", text_value("v"), 3)], ResultReason.ITEM_NOT_FOUND),
        (Operation.DELETE_ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, "x-missing")], ResultReason.ITEM_NOT_FOUND),
        (Operation.DELETE_ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, "Contact Information"),
                                      ttlv.integer(T.ATTRIBUTE_INDEX, 2)], ResultReason.ITEM_NOT_FOUND),
        (Operation.ADD_ATTRIBUTE, [v1("Description", ttlv.integer(T.ATTRIBUTE_VALUE, 5))], ResultReason.INVALID_FIELD),
        (Operation.ADD_ATTRIBUTE, [v1("Frobnication", text_value("v"))], ResultReason.INVALID_FIELD),
        # Set Attribute does not exist in 1.x.
        (Operation.SET_ATTRIBUTE, [], ResultReason.OPERATION_NOT_SUPPORTED),
    ]
    for op, fields, reason in cases:
        alice.fails(op, [uid_(uid), *fields], V14, reason)
    assert get_v14(alice, uid, "Contact Information") == [("Contact Information", 0, "ops@example.com")]

    # SKLC-M-3-14: Activation Date may change only while Pre-Active.
    later = ttlv.date_time(T.ATTRIBUTE_VALUE, 2_000_000_000)
    alice.ok(Operation.ADD_ATTRIBUTE, [uid_(uid), v1("Activation Date", later)], V14)
    alice.ok(Operation.ACTIVATE, [uid_(uid)], V14)
    alice.fails(Operation.MODIFY_ATTRIBUTE, [uid_(uid), v1("Activation Date", ttlv.date_time(T.ATTRIBUTE_VALUE, int(
        time.time())))], V14, ResultReason.PERMISSION_DENIED)
    # Protection flags only ratchet up (the server records Sensitive=false on every new key).
    alice.ok(Operation.MODIFY_ATTRIBUTE, [uid_(uid), v1("Sensitive", ttlv.boolean(T.ATTRIBUTE_VALUE, True))], V14)
    alice.fails(Operation.MODIFY_ATTRIBUTE, [uid_(uid), v1("Sensitive", ttlv.boolean(T.ATTRIBUTE_VALUE, False))],
                V14, ResultReason.PERMISSION_DENIED)


# -- KMIP 2.1 -----------------------------------------------------------------------------------------
def test_v21_add_modify_delete_vendor_attributes(alice: Conn) -> None:
    uid = create_v21(alice)
    # SKFF-M-9-21: vendor attributes; the 2.x response holds only the Unique Identifier.
    out = alice.ok(Operation.ADD_ATTRIBUTE, [uid_(uid), new(vendor("attribute1", "Value1"))], V21)
    assert [i.tag for i in out] == [T.UNIQUE_IDENTIFIER.value]
    alice.ok(Operation.MODIFY_ATTRIBUTE, [uid_(uid), new(vendor("attribute1", "ModifiedValue1"))], V21)
    # TL-M-3-21: GetAttributes/GetAttributeList name it by vendor and name ...
    got = get_v21(alice, uid, vendor("attribute1", "", T.ATTRIBUTE_REFERENCE))
    assert got == [vendor("attribute1", "ModifiedValue1")]
    listed = alice.ok(Operation.GET_ATTRIBUTE_LIST, [uid_(uid)], V21)
    assert vendor("attribute1", "", T.ATTRIBUTE_REFERENCE) in list(listed)
    # ... and 1.x clients see the same attribute as x-attribute1.
    assert get_v14(alice, uid, "x-attribute1") == [("x-attribute1", 0, "ModifiedValue1")]
    alice.ok(Operation.DELETE_ATTRIBUTE, [uid_(uid), vendor("attribute1", "", T.ATTRIBUTE_REFERENCE)], V21)
    assert get_v21(alice, uid, vendor("attribute1", "", T.ATTRIBUTE_REFERENCE)) == []


def test_v21_single_and_multi_valued(alice: Conn) -> None:
    uid = create_v21(alice)
    tag = uid[:8]
    # BL-M-5-21: a second Description is refused; GetAttributes answers in the order asked.
    alice.ok(Operation.ADD_ATTRIBUTE, [uid_(uid), new(ttlv.text(T.DESCRIPTION, "This is opaque"))], V21)
    alice.fails(Operation.ADD_ATTRIBUTE, [uid_(uid), new(ttlv.text(T.DESCRIPTION, "duplicate"))], V21,
                ResultReason.ATTRIBUTE_SINGLE_VALUED)
    got = get_v21(alice, uid, ref(T.DESCRIPTION), ref(T.OBJECT_TYPE))
    assert [i.tag for i in got] == [T.DESCRIPTION.value, T.OBJECT_TYPE.value]
    assert got[0].value == "This is opaque"

    # Set Attribute replaces a single-valued attribute, or sets it when absent.
    alice.ok(Operation.SET_ATTRIBUTE, [uid_(uid), new(ttlv.text(T.DESCRIPTION, "replaced"))], V21)
    alice.ok(Operation.SET_ATTRIBUTE, [uid_(uid), new(ttlv.text(T.CONTACT_INFORMATION, "ops"))], V21)
    got = get_v21(alice, uid, ref(T.DESCRIPTION), ref(T.CONTACT_INFORMATION))
    assert [(i.tag, i.value) for i in got] == [(T.DESCRIPTION.value, "replaced"), (T.CONTACT_INFORMATION.value, "ops")]
    alice.fails(Operation.SET_ATTRIBUTE, [uid_(uid), new(name_struct(T.NAME, f"{tag}-a"))], V21,
                ResultReason.MULTI_VALUED_ATTRIBUTE)

    # Names: several instances, addressed by their current value.
    for n in ("a", "b", "c"):
        alice.ok(Operation.ADD_ATTRIBUTE, [uid_(uid), new(name_struct(T.NAME, f"{tag}-{n}"))], V21)
    # BL-M-8-21: a Name already in use is refused.
    alice.fails(Operation.ADD_ATTRIBUTE, [uid_(uid), new(name_struct(T.NAME, f"{tag}-a"))], V21,
                ResultReason.NON_UNIQUE_NAME_ATTRIBUTE)
    alice.ok(Operation.MODIFY_ATTRIBUTE, [uid_(uid), current(name_struct(T.NAME, f"{tag}-b")),
                                          new(name_struct(T.NAME, f"{tag}-B"))], V21)
    alice.fails(Operation.MODIFY_ATTRIBUTE, [uid_(uid), current(name_struct(T.NAME, f"{tag}-zz")),
                                             new(name_struct(T.NAME, f"{tag}-y"))], V21,
                ResultReason.ATTRIBUTE_INSTANCE_NOT_FOUND)
    alice.ok(Operation.DELETE_ATTRIBUTE, [uid_(uid), current(name_struct(T.NAME, f"{tag}-a"))], V21)
    assert sorted(names_of(get_v21(alice, uid, ref(T.NAME)))) == [f"{tag}-B", f"{tag}-c"]
    # 1.x sees the indexes the instances were given, unchanged by the deletion.
    assert [(n, i) for n, i, _ in get_v14(alice, uid, "Name")] == [("Name", 1), ("Name", 2)]
    alice.ok(Operation.DELETE_ATTRIBUTE, [uid_(uid), ref(T.NAME)], V21)  # a reference deletes every instance
    assert names_of(get_v21(alice, uid, ref(T.NAME))) == []


def test_v21_refusals(alice: Conn) -> None:
    uid = create_v21(alice)
    read_only = ResultReason.ATTRIBUTE_READ_ONLY
    cases: list[tuple[Operation, list[Item], ResultReason]] = [
        # BL-M-7-21, BL-M-10-21: server-set attributes are read-only.
        (Operation.MODIFY_ATTRIBUTE, [new(ttlv.enum(T.STATE, enums.State.COMPROMISED))], read_only),
        (Operation.MODIFY_ATTRIBUTE, [new(ttlv.integer(T.CRYPTOGRAPHIC_LENGTH, 128))], read_only),
        (Operation.ADD_ATTRIBUTE, [new(ttlv.date_time(T.INITIAL_DATE, 0))], read_only),
        (Operation.SET_ATTRIBUTE, [new(ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, 0xFFFF))], read_only),
        (Operation.DELETE_ATTRIBUTE, [ref(T.CRYPTOGRAPHIC_ALGORITHM)], read_only),
        (Operation.MODIFY_ATTRIBUTE, [new(ttlv.text(T.COMMENT, "c"))], ResultReason.ATTRIBUTE_NOT_FOUND),
        (Operation.DELETE_ATTRIBUTE, [ref(T.COMMENT)], ResultReason.ATTRIBUTE_NOT_FOUND),
        (Operation.ADD_ATTRIBUTE, [new(ttlv.integer(T.DESCRIPTION, 3))], ResultReason.INVALID_ATTRIBUTE_VALUE),
        (Operation.ADD_ATTRIBUTE, [], ResultReason.MISSING_DATA),
        (Operation.DELETE_ATTRIBUTE, [], ResultReason.MISSING_DATA),
        (Operation.ADD_ATTRIBUTE, [ttlv.struct_(T.NEW_ATTRIBUTE, [ttlv.text(T.COMMENT, "a"),
                                                                   ttlv.text(T.COMMENT, "b")])],
         ResultReason.INVALID_FIELD),
    ]
    for op, fields, reason in cases:
        alice.fails(op, [uid_(uid), *fields], V21, reason)
    # AKLC-M-3-21 / SKLC-M-3-21: Activation Date may change only while Pre-Active.
    alice.ok(Operation.ACTIVATE, [uid_(uid)], V21)
    bi = alice.fails(Operation.MODIFY_ATTRIBUTE, [uid_(uid), new(ttlv.date_time(T.ACTIVATION_DATE, int(time.time())))],
                     V21, ResultReason.WRONG_KEY_LIFECYCLE_STATE)
    assert "Pre-Active" in bi.value_of(T.RESULT_MESSAGE.value)  # type: ignore[operator]


def test_undo_batch_rolls_back_attribute_changes(alice: Conn) -> None:
    uid = create_v21(alice)
    out = alice.batch([
        (Operation.ADD_ATTRIBUTE, [uid_(uid), new(ttlv.text(T.COMMENT, "kept?"))]),
        (Operation.ADD_ATTRIBUTE, [uid_(uid), new(ttlv.enum(T.STATE, enums.State.ACTIVE))]),
    ], V21, BatchErrorContinuationOption.UNDO)
    assert [b.value_of(T.RESULT_STATUS.value) for b in out] == [
        ResultStatus.OPERATION_UNDONE.value, ResultStatus.OPERATION_FAILED.value]
    assert get_v21(alice, uid, ref(T.COMMENT)) == []


# -- Check --------------------------------------------------------------------------------------------
def test_check(alice: Conn) -> None:
    decrypt, encrypt = enums.CryptographicUsageMask.DECRYPT.value, enums.CryptographicUsageMask.ENCRYPT.value
    uid = create_v21(alice, decrypt)
    # BL-M-3-21: a bit the mask grants passes; one it lacks fails, with no payload in 2.x.
    out = alice.ok(Operation.CHECK, [uid_(uid), ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, decrypt)], V21)
    assert out.value_of(T.UNIQUE_IDENTIFIER.value) == uid
    bi = alice.fails(Operation.CHECK, [uid_(uid), ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, encrypt)], V21,
                     ResultReason.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK)
    assert bi.get(T.RESPONSE_PAYLOAD.value) is None
    # 1.4: Permission Denied, and the payload returns the field that failed (without the id).
    bi = alice.fails(Operation.CHECK, [uid_(uid), ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, encrypt)], V14,
                     ResultReason.PERMISSION_DENIED)
    assert list(bi.get(T.RESPONSE_PAYLOAD.value)) == [ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, encrypt)]  # type: ignore[arg-type]
    alice.ok(Operation.CHECK, [uid_(uid), ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, decrypt)], V14)

    # Usage Limits Count against the object's Usage Limits.
    limits = ttlv.struct_(T.USAGE_LIMITS, [ttlv.long_integer(T.USAGE_LIMITS_TOTAL, 10),
                                          ttlv.enum(T.USAGE_LIMITS_UNIT, enums.UsageLimitsUnit.OBJECT)])
    alice.ok(Operation.ADD_ATTRIBUTE, [uid_(uid), new(limits)], V21)
    alice.ok(Operation.CHECK, [uid_(uid), ttlv.long_integer(T.USAGE_LIMITS_COUNT, 10)], V21)
    alice.fails(Operation.CHECK, [uid_(uid), ttlv.long_integer(T.USAGE_LIMITS_COUNT, 11)], V21,
                ResultReason.USAGE_LIMIT_EXCEEDED)
    bi = alice.fails(Operation.CHECK, [uid_(uid), ttlv.long_integer(T.USAGE_LIMITS_COUNT, 11),
                                       ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, decrypt)], V14,
                     ResultReason.PERMISSION_DENIED)
    assert list(bi.get(T.RESPONSE_PAYLOAD.value)) == [ttlv.long_integer(T.USAGE_LIMITS_COUNT, 11)]  # type: ignore[arg-type]

    # A failed Check empties the ID placeholder, so the next item has no object to act on.
    out = alice.batch([
        (Operation.GET_ATTRIBUTES, [uid_(uid), ref(T.STATE)]),
        (Operation.CHECK, [uid_(uid), ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, encrypt)]),
        (Operation.GET_ATTRIBUTES, [ref(T.STATE)]),
    ], V21, BatchErrorContinuationOption.CONTINUE)
    _failed(out[1], ResultReason.INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK)
    _failed(out[2], ResultReason.MISSING_DATA)

    # BL-M-2-21: in an Undo batch a failing Check undoes the Activate before it.
    out = alice.batch([
        (Operation.ACTIVATE, [uid_(uid)]),
        (Operation.CHECK, [uid_(uid), ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, decrypt)]),
        (Operation.CHECK, [uid_(uid), ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, encrypt)]),
    ], V21, BatchErrorContinuationOption.UNDO)
    assert [b.value_of(T.RESULT_STATUS.value) for b in out] == [
        ResultStatus.OPERATION_UNDONE.value, ResultStatus.OPERATION_UNDONE.value, ResultStatus.OPERATION_FAILED.value]
    assert [i.value for i in get_v21(alice, uid, ref(T.STATE))] == [enums.State.PRE_ACTIVE.value]


# -- another client ----------------------------------------------------------------------------------
def test_query_lists_the_operations(alice: Conn) -> None:
    out = alice.ok(Operation.QUERY, [ttlv.enum(T.QUERY_FUNCTION, enums.QueryFunction.QUERY_OPERATIONS)], V21)
    served = {o.value for o in out.all(T.OPERATION.value)}
    assert {Operation.ADD_ATTRIBUTE.value, Operation.MODIFY_ATTRIBUTE.value, Operation.SET_ATTRIBUTE.value,
            Operation.DELETE_ATTRIBUTE.value, Operation.CHECK.value} <= served


def test_other_client_gets_item_not_found(alice: Conn, bob: Conn) -> None:
    uid = create_v21(alice, enums.CryptographicUsageMask.DECRYPT.value, ttlv.text(T.DESCRIPTION, "alice's"))
    alice.ok(Operation.ADD_ATTRIBUTE, [uid_(uid), new(vendor("tag", "a"))], V21)
    mask = ttlv.integer(T.CRYPTOGRAPHIC_USAGE_MASK, enums.CryptographicUsageMask.DECRYPT.value)
    v14_probes: list[tuple[Operation, list[Item]]] = [
        (Operation.ADD_ATTRIBUTE, [v1("x-tag", text_value("b"))]),
        (Operation.MODIFY_ATTRIBUTE, [v1("x-tag", text_value("b"))]),
        (Operation.MODIFY_ATTRIBUTE, [v1("Description", text_value("bob's"))]),
        (Operation.DELETE_ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, "x-tag")]),
        (Operation.CHECK, [mask]),
    ]
    v21_probes: list[tuple[Operation, list[Item]]] = [
        (Operation.ADD_ATTRIBUTE, [new(vendor("tag", "b"))]),
        (Operation.MODIFY_ATTRIBUTE, [new(ttlv.text(T.DESCRIPTION, "bob's"))]),
        (Operation.SET_ATTRIBUTE, [new(ttlv.text(T.DESCRIPTION, "bob's"))]),
        (Operation.DELETE_ATTRIBUTE, [ref(T.DESCRIPTION)]),
        (Operation.DELETE_ATTRIBUTE, [current(vendor("tag", "a"))]),
        (Operation.CHECK, [mask]),
        # Even a request that would be refused for its content: the object is not there for bob.
        (Operation.MODIFY_ATTRIBUTE, [new(ttlv.enum(T.STATE, enums.State.COMPROMISED))]),
    ]
    for version, probes in ((V14, v14_probes), (V21, v21_probes)):
        for op, fields in probes:
            # KMIP 2.x names the reason Object Not Found; either way the answer for a missing id.
            missing = ResultReason.OBJECT_NOT_FOUND if version >= (2, 0) else ResultReason.ITEM_NOT_FOUND
            bi = bob.fails(op, [uid_(uid), *fields], version, missing)
            assert uid not in (bi.value_of(T.RESULT_MESSAGE.value) or "")  # type: ignore[operator]
    got = get_v21(alice, uid, ref(T.DESCRIPTION), vendor("tag", "", T.ATTRIBUTE_REFERENCE))
    assert got == [ttlv.text(T.DESCRIPTION, "alice's"), vendor("tag", "a")]


# -- what PyKMIP's own integration tests rely on (test_pykmip_integration.py) --------------------------
def test_attribute_index_echo_and_v12_indexes(alice: Conn) -> None:
    name = f"idx-{time.time_ns()}"
    uid = create_v14(alice, v1("Name", name_struct(T.ATTRIBUTE_VALUE, name)))
    # A request naming Attribute Index 0 gets it back; without one it stays omitted (SKFF-M-10-14).
    out = alice.ok(Operation.MODIFY_ATTRIBUTE, [uid_(uid), v1("Name", name_struct(T.ATTRIBUTE_VALUE, name + "b"), 0)],
                   V14)
    assert out.get(T.ATTRIBUTE.value).value_of(T.ATTRIBUTE_INDEX.value) == 0  # type: ignore[union-attr]
    out = alice.ok(Operation.MODIFY_ATTRIBUTE, [uid_(uid), v1("Name", name_struct(T.ATTRIBUTE_VALUE, name))], V14)
    assert out.get(T.ATTRIBUTE.value).get(T.ATTRIBUTE_INDEX.value) is None  # type: ignore[union-attr]
    # GetAttributes: 1.0-1.3 name index 0 of a multi-instance attribute, 1.4 omits it.
    for version, index in (((1, 2), 0), (V14, None)):
        out = alice.ok(Operation.GET_ATTRIBUTES, [uid_(uid), ttlv.text(T.ATTRIBUTE_NAME, "Name"),
                                                  ttlv.text(T.ATTRIBUTE_NAME, "Object Type")], version)
        got = [a.value_of(T.ATTRIBUTE_INDEX.value) for a in out.all(T.ATTRIBUTE.value)]
        assert got == [index, None], version
    out = alice.ok(Operation.DELETE_ATTRIBUTE, [uid_(uid), ttlv.text(T.ATTRIBUTE_NAME, "Name"),
                                                ttlv.integer(T.ATTRIBUTE_INDEX, 0)], V14)
    assert out.get(T.ATTRIBUTE.value).value_of(T.ATTRIBUTE_INDEX.value) == 0  # type: ignore[union-attr]


def test_locate_row_criteria_usage_mask_and_destroyed_objects(alice: Conn) -> None:
    usage = enums.CryptographicUsageMask
    name = f"loc-{time.time_ns()}"
    def mask(bits: int) -> Item:
        return v1("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, bits))

    by_name = v1("Name", name_struct(T.ATTRIBUTE_VALUE, name))
    uid = create_v14(alice, by_name, mask(usage.ENCRYPT.value | usage.DECRYPT.value))

    def locate(*fields: Item, version: tuple[int, int] = V14) -> list[str]:
        out = alice.ok(Operation.LOCATE, list(fields), version)
        return [u.value for u in out.all(T.UNIQUE_IDENTIFIER.value)]  # type: ignore[misc]

    assert locate(v1("Unique Identifier", text_value(uid))) == [uid]
    assert locate(by_name, v1("Operation Policy Name", text_value("default"))) == [uid]
    assert locate(by_name, v1("Operation Policy Name", text_value("other"))) == []
    # A usage mask matches every object whose mask has all its bits (KMIP Locate).
    assert locate(by_name, mask(usage.ENCRYPT.value)) == [uid]
    assert locate(by_name, mask(usage.ENCRYPT.value | usage.SIGN.value)) == []
    alice.ok(Operation.DESTROY, [uid_(uid)], V14)
    # Destroyed objects are not on-line: found only by State or the Destroyed Storage mask bit.
    assert locate(by_name) == []
    assert locate(by_name, v1("State", ttlv.enum(T.ATTRIBUTE_VALUE, enums.State.DESTROYED))) == [uid]
    v2_name = ttlv.struct_(T.ATTRIBUTES, [name_struct(T.NAME, name)])
    for mask, found in ((enums.StorageStatusMask.ONLINE_STORAGE.value, []),
                        (enums.StorageStatusMask.DESTROYED_STORAGE.value, [uid]),
                        (enums.StorageStatusMask.ONLINE_STORAGE.value | enums.StorageStatusMask.DESTROYED_STORAGE.value,
                         [uid]),
                        (enums.StorageStatusMask.ARCHIVAL_STORAGE.value, [])):
        assert locate(ttlv.integer(T.STORAGE_STATUS_MASK, mask), v2_name, version=V21) == found, mask
