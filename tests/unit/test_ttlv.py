"""TTLV codec: byte-exact encodings (KMIP 1.4 §9.1.2 examples) and strict decoding."""

from __future__ import annotations

import pytest
from kmip.core.enums import Tags as T

from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item, Type


def test_spec_examples_encode_byte_exact() -> None:
    # The examples of the KMIP 1.4 specification, section 9.1.2.
    assert ttlv.encode(ttlv.integer(0x420020, 8)).hex() == "42002002000000040000000800000000"
    assert (
        ttlv.encode(Item(0x420020, Type.LONG_INTEGER, 123456789000000000)).hex()
        == "420020030000000801b69b4ba5749200"
    )
    assert (
        ttlv.encode(Item(0x420020, Type.BIG_INTEGER, 1234567890000000000000000000)).hex()
        == "42002004000000100000000003fd35eb6bc2df4618080000"
    )
    assert ttlv.encode(ttlv.enum(0x420020, 255)).hex() == "4200200500000004000000ff00000000"
    assert ttlv.encode(ttlv.boolean(0x420020, True)).hex() == "42002006000000080000000000000001"
    assert (
        ttlv.encode(ttlv.text(0x420020, "Hello World")).hex()
        == "420020070000000b48656c6c6f20576f726c640000000000"
    )
    assert ttlv.encode(ttlv.bytes_(0x420020, b"\x01\x02\x03")).hex() == "42002008000000030102030000000000"
    assert (
        ttlv.encode(ttlv.date_time(0x420020, 0x47DA67F8)).hex()
        == "42002009000000080000000047da67f8"
    )
    assert ttlv.encode(ttlv.interval(0x420020, 864000)).hex() == "4200200a00000004000d2f0000000000"
    nested = ttlv.struct_(0x420020, [ttlv.enum(0x420004, 254), ttlv.integer(0x420005, 255)])
    assert (
        ttlv.encode(nested).hex()
        == "42002001000000204200040500000004000000fe000000004200050200000004000000ff00000000"
    )


def test_round_trip_every_type() -> None:
    msg = ttlv.struct_(
        T.REQUEST_MESSAGE,
        [
            ttlv.integer(T.BATCH_COUNT, -5),
            Item(T.ITERATION_COUNT.value, Type.LONG_INTEGER, -(2**40)),
            Item(T.NONCE_VALUE.value, Type.BIG_INTEGER, -(2**100) + 7),
            ttlv.enum(T.OPERATION, 0xFFFFFFFF),
            ttlv.boolean(T.FRESH, False),
            ttlv.text(T.NAME_VALUE, "ünïcødé ✓"),
            ttlv.bytes_(T.KEY_MATERIAL, bytes(range(17))),
            ttlv.date_time(T.TIME_STAMP, 1_700_000_000),
            ttlv.interval(T.LEASE_TIME, 3600),
            Item(T.TIME_STAMP.value, Type.DATE_TIME_EXTENDED, 1_700_000_000_123_456),
            ttlv.struct_(T.BATCH_ITEM, []),
        ],
    )
    data = ttlv.encode(msg)
    assert len(data) % 8 == 0
    assert ttlv.decode(data) == msg


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda b: b[:-3], "remain"),
        (lambda b: b[:4] + b"\x00\x10\x00\x00" + b[8:], "remain"),  # length far beyond the data
        (lambda b: b + b"\x00" * 8, "trailing"),
        (lambda b: b[:11] + b"\x0c" + b[12:], "unknown item type"),
        (lambda b: b[:12] + b"\x00\x00\x00\x05" + b[16:], "expected 4"),
    ],
)
def test_malformed_input_is_rejected(mutate, problem) -> None:  # type: ignore[no-untyped-def]
    good = ttlv.encode(ttlv.struct_(T.REQUEST_MESSAGE, [ttlv.integer(T.BATCH_COUNT, 1)]))
    with pytest.raises(ttlv.TtlvError, match=problem):
        ttlv.decode(mutate(good))


def test_invalid_utf8_and_boolean_rejected() -> None:
    bad_text = Item(T.NAME_VALUE.value, Type.BYTE_STRING, b"\xff\xfe")
    data = bytearray(ttlv.encode(bad_text))
    data[3] = Type.TEXT_STRING
    with pytest.raises(ttlv.TtlvError, match="UTF-8"):
        ttlv.decode(bytes(data))
    data = bytearray(ttlv.encode(ttlv.boolean(T.FRESH, True)))
    data[-1] = 2
    with pytest.raises(ttlv.TtlvError, match="boolean"):
        ttlv.decode(bytes(data))


def test_depth_and_item_limits() -> None:
    item = ttlv.integer(T.BATCH_COUNT, 1)
    for _ in range(40):
        item = ttlv.struct_(T.BATCH_ITEM, [item])
    with pytest.raises(ttlv.TtlvError, match="nested too deeply"):
        ttlv.decode(ttlv.encode(item))
    many = ttlv.struct_(T.BATCH_ITEM, [ttlv.integer(T.BATCH_COUNT, i) for i in range(50)])
    with pytest.raises(ttlv.TtlvError, match="too many items"):
        ttlv.decode(ttlv.encode(many), ttlv.Limits(max_items=20))


def test_message_length_requires_structure() -> None:
    assert ttlv.message_length(bytes.fromhex("42007801000000a0")) == 0xA0
    with pytest.raises(ttlv.TtlvError):
        ttlv.message_length(bytes.fromhex("42007802000000a0"))
