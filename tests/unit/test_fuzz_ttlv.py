"""Property-based fuzzing of the TTLV decoder and the request parser (short, for CI).

Whatever the bytes: ``ttlv.decode`` returns an Item or raises ``ttlv.TtlvError`` (nothing else),
``messages.parse_request`` returns a Request or raises ``KmipError``, and the work is bounded
(item count capped by the limits, each input decoded quickly). ``scripts/fuzz.py`` runs the
same property for millions of inputs.
"""

from __future__ import annotations

import random
import struct
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kmip.core.enums import Operation, ResultReason
from kmip.core.enums import Tags as T

from kmip_bridge.client import request
from kmip_bridge.protocol import messages, ttlv
from kmip_bridge.protocol.errors import KmipError
from tools import fuzz

CORPUS = fuzz.seeds()
LIMITS = ttlv.Limits(max_depth=32, max_items=2_000)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _count(item: ttlv.Item) -> int:
    if item.type != ttlv.Type.STRUCTURE:
        return 1
    return 1 + sum(_count(c) for c in item.value)  # type: ignore[union-attr]


def _depth(item: ttlv.Item) -> int:
    if item.type != ttlv.Type.STRUCTURE or not item.value:
        return 0
    return 1 + max(_depth(c) for c in item.value)  # type: ignore[union-attr]


def _decode_bounded(data: bytes) -> ttlv.Item | None:
    t0 = time.perf_counter()
    try:
        item = ttlv.decode(data, LIMITS)
    except ttlv.TtlvError:
        item = None
    assert time.perf_counter() - t0 < 1.0
    if item is not None:
        assert _count(item) <= LIMITS.max_items
        assert _depth(item) <= LIMITS.max_depth
    return item


def _parse(item: ttlv.Item) -> None:
    try:
        messages.parse_request(item, 10)
    except KmipError as error:
        assert error.reason == ResultReason.INVALID_MESSAGE.value
    # The whole check, including that every response the server would echo back encodes.
    fuzz.check(ttlv.encode(item), LIMITS, 10)


def _header_offsets(msg: bytes) -> list[int]:
    """Where the item headers of a valid message sit."""
    out: list[int] = []

    def walk(pos: int) -> int:
        out.append(pos)
        _tag, type_, length = fuzz.HEADER.unpack_from(msg, pos)
        if type_ == ttlv.Type.STRUCTURE:
            p, end = pos + 8, pos + 8 + length
            while p < end:
                p = walk(p)
            return end
        return pos + 8 + length + (8 - length % 8) % 8

    walk(0)
    return out


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    item = _decode_bounded(data)
    if item is not None:
        _parse(item)


@FUZZ
@given(st.binary(min_size=0, max_size=400))
def test_random_bodies_behind_a_valid_header(body: bytes) -> None:
    data = fuzz.fix_length(bytes.fromhex("4200780100000000") + body)
    item = _decode_bounded(data)
    if item is not None:
        _parse(item)


@FUZZ
@given(st.integers(0, len(CORPUS) - 1), st.integers(0, 2**64))
def test_mutated_valid_messages(which: int, seed: int) -> None:
    data = fuzz.mutate(CORPUS[which], random.Random(seed), CORPUS)
    item = _decode_bounded(data)
    if item is not None:
        _parse(item)


@FUZZ
@given(st.integers(0, len(CORPUS) - 1), st.data())
def test_truncation_and_lying_lengths(which: int, data: st.DataObject) -> None:
    msg = CORPUS[which]
    cut = data.draw(st.integers(0, len(msg) - 1))
    with pytest.raises(ttlv.TtlvError):
        ttlv.decode(msg[:cut], LIMITS)
    at = data.draw(st.sampled_from(_header_offsets(msg)))
    length = data.draw(st.sampled_from([len(msg), 2**31, 2**32 - 1]) | st.integers(len(msg), 2**32 - 1))
    lied = msg[:at + 4] + struct.pack(">I", length) + msg[at + 8:]
    with pytest.raises(ttlv.TtlvError):
        ttlv.decode(lied, LIMITS)


@FUZZ
@given(st.integers(0, len(CORPUS) - 1), st.data())
def test_wrong_types_unknown_tags_and_invalid_utf8(which: int, data: st.DataObject) -> None:
    buf = bytearray(CORPUS[which])
    at = data.draw(st.integers(0, len(buf) // 8 - 1)) * 8
    kind = data.draw(st.sampled_from(["type", "tag", "value", "utf8"]))
    if kind == "type":
        buf[at + 3] = data.draw(st.integers(0, 255))
    elif kind == "tag":
        buf[at:at + 3] = data.draw(st.integers(0, 2**24 - 1)).to_bytes(3, "big")
    elif kind == "value" and at + 12 <= len(buf):
        buf[at + 8:at + 12] = data.draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
    elif at + 12 <= len(buf):
        bad_utf8 = [b"\xff\xff\xff\xff", b"\xc3\x28\xa0\xa1", b"\xed\xa0\x80\x00"]
        buf[at + 8:at + 12] = data.draw(st.sampled_from(bad_utf8))
    item = _decode_bounded(bytes(buf))
    if item is not None:
        _parse(item)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5000))
@example(32)  # the boundary, every run (max_depth is 32)
@example(33)
def test_deep_nesting_is_refused_without_recursion_error(depth: int) -> None:
    data = fuzz.nested(depth)
    if depth <= LIMITS.max_depth:  # max_depth levels (0 .. max_depth-1); the innermost is at depth-1
        assert _depth(ttlv.decode(data, LIMITS)) == depth - 1
    else:
        with pytest.raises(ttlv.TtlvError, match="nested too deeply"):
            ttlv.decode(data, LIMITS)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 20_000))
def test_item_count_is_capped(n: int) -> None:
    body = bytes.fromhex("42000a0200000004") + b"\x00" * 8  # one Integer item
    data = fuzz.fix_length(bytes.fromhex("4200780100000000") + body * n)
    if n + 1 <= LIMITS.max_items:
        assert len(ttlv.decode(data, LIMITS).value) == n  # type: ignore[arg-type]
    else:
        with pytest.raises(ttlv.TtlvError, match="too many items"):
            ttlv.decode(data, LIMITS)


@settings(max_examples=50, deadline=None)
@given(st.integers(-(2**31), 2**31 - 1), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_batch_counts_and_unknown_operations(count: int, items: int, op: int) -> None:
    msg = request([(op, None)] * items)
    msg.value[0].value[-1] = ttlv.integer(T.BATCH_COUNT, count)
    item = ttlv.decode(ttlv.encode(msg), LIMITS)
    if items > 10:
        with pytest.raises(KmipError, match="more than the limit"):
            messages.parse_request(item, 10)
    elif count != items:
        with pytest.raises(KmipError, match="Batch Count"):
            messages.parse_request(item, 10)
    else:
        assert [b.operation for b in messages.parse_request(item, 10).batch_items] == [op] * items


def test_batch_limit_is_checked_before_the_items() -> None:
    # 11 batch items that are not even structures: refused for their number alone.
    msg = request([(Operation.QUERY.value, None)])
    msg.value.extend(ttlv.integer(T.BATCH_ITEM, 1) for _ in range(11))
    with pytest.raises(KmipError, match="more than the limit of 10"):
        messages.parse_request(ttlv.decode(ttlv.encode(msg)), 10)


@pytest.mark.parametrize("bad", [
    ttlv.enum(T.PROTOCOL_VERSION_MAJOR, 0xFFFEFDFC),  # found by scripts/fuzz.py: unencodable echo
    ttlv.text(T.PROTOCOL_VERSION_MAJOR, "1"),
])
def test_protocol_version_of_another_type_is_invalid(bad: ttlv.Item) -> None:
    msg = request([(Operation.QUERY.value, None)])
    msg.value[0].value[0].value[0] = bad
    assert fuzz.check(ttlv.encode(msg)) == "invalid-message"


@pytest.mark.parametrize("ubi", [ttlv.integer(T.UNIQUE_BATCH_ITEM_ID, 2**31 - 1),
                                 ttlv.text(T.UNIQUE_BATCH_ITEM_ID, "x")])
def test_unique_batch_item_id_of_another_type_is_invalid(ubi: ttlv.Item) -> None:
    # An Integer id used to reach bytes(2**31 - 1) when echoed: a 2 GB allocation per request.
    msg = request([(Operation.QUERY.value, None)])
    msg.value[1].value.insert(1, ubi)
    with pytest.raises(KmipError, match="Unique Batch Item ID"):
        messages.parse_request(ttlv.decode(ttlv.encode(msg)))


def test_fast_loop_sample_has_no_crash() -> None:
    rng = random.Random(1234)
    for _ in range(3000):
        fuzz.check(fuzz.mutate(rng.choice(CORPUS), rng, CORPUS), LIMITS, 10)
