"""Mutation fuzzing of the request path: seeds, a fast mutator and the property checked.

Shared by ``tests/unit/test_fuzz_ttlv.py`` (short, hypothesis-driven) and ``scripts/fuzz.py``
(long runs, in process or against a live server). The property: the TTLV decoder returns an
Item or raises ``ttlv.TtlvError``; the request parser returns a Request or raises ``KmipError``;
an error response can always be built for what was decoded. Anything else is a crash.
"""

from __future__ import annotations

import random
import struct

from kmip.core import enums
from kmip.core.enums import Operation, ResultReason
from kmip.core.enums import Tags as T

from kmip_bridge.client import request
from kmip_bridge.protocol import messages, ttlv
from kmip_bridge.protocol.errors import KmipError

HEADER = struct.Struct(">3sBI")
INTERESTING_LENGTHS = (0, 1, 4, 7, 8, 9, 16, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 20)
INTERESTING_INTS = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x7E, 0x42)


def _attr(name: str, value: ttlv.Item) -> ttlv.Item:
    return ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, name), value])


def seeds() -> list[bytes]:
    """Valid request messages covering the shapes clients send."""
    create = ttlv.struct_(T.REQUEST_PAYLOAD, [
        ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY),
        ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [
            _attr("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.AES)),
            _attr("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, 256)),
            _attr("Name", ttlv.struct_(T.ATTRIBUTE_VALUE, [
                ttlv.text(T.NAME_VALUE, "fuzz-ключ"),
                ttlv.enum(T.NAME_TYPE, enums.NameType.UNINTERPRETED_TEXT_STRING)])),
        ]),
    ])
    get = ttlv.struct_(T.REQUEST_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, "00000000-0000-0000-0000-000000000001")])
    locate = ttlv.struct_(T.REQUEST_PAYLOAD, [
        ttlv.integer(T.MAXIMUM_ITEMS, 10),
        _attr("Object Type", ttlv.enum(T.ATTRIBUTE_VALUE, enums.ObjectType.SYMMETRIC_KEY)),
    ])
    register = ttlv.struct_(T.REQUEST_PAYLOAD, [
        ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA),
        ttlv.struct_(T.SECRET_DATA, [
            ttlv.enum(T.SECRET_DATA_TYPE, enums.SecretDataType.PASSWORD),
            ttlv.struct_(T.KEY_BLOCK, [
                ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.OPAQUE),
                ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, b"\x00secret\xff" * 3)]),
            ]),
        ]),
        ttlv.struct_(T.TEMPLATE_ATTRIBUTE, []),
    ])
    query = ttlv.struct_(T.REQUEST_PAYLOAD, [
        ttlv.enum(T.QUERY_FUNCTION, enums.QueryFunction.QUERY_OPERATIONS),
        ttlv.enum(T.QUERY_FUNCTION, enums.QueryFunction.QUERY_OBJECTS),
    ])
    misc = ttlv.struct_(T.REQUEST_PAYLOAD, [
        ttlv.Item(T.KEY_MATERIAL.value, ttlv.Type.BIG_INTEGER, 2**70 + 5),
        ttlv.boolean(T.ATTRIBUTE_VALUE, True),
        ttlv.long_integer(T.ATTRIBUTE_VALUE, -5),
        ttlv.date_time(T.ATTRIBUTE_VALUE, 1_700_000_000),
        ttlv.interval(T.ATTRIBUTE_VALUE, 60),
    ])
    v21 = request([(Operation.QUERY.value, query)], version=(2, 1))
    v21.value[0].value.insert(1, ttlv.text(T.CLIENT_CORRELATION_VALUE, "corr"))
    v21.value[0].value.insert(1, ttlv.integer(T.MAXIMUM_RESPONSE_SIZE, 4096))
    v21.value[1].value.insert(1, ttlv.bytes_(T.UNIQUE_BATCH_ITEM_ID, b"\x01\x02"))
    msgs = [
        request([(Operation.QUERY.value, None)]),
        request([(Operation.QUERY.value, query)], version=(1, 0)),
        request([(Operation.CREATE.value, create), (Operation.ACTIVATE.value, None), (Operation.GET.value, None)]),
        request([(Operation.GET.value, get)], version=(2, 0)),
        request([(Operation.LOCATE.value, locate)],
                batch_error_option=enums.BatchErrorContinuationOption.CONTINUE.value),
        request([(Operation.REGISTER.value, register)], version=(1, 2)),
        request([(Operation.GET_ATTRIBUTES.value, misc)]),
        v21,
    ]
    return [ttlv.encode(m) for m in msgs]


def nested(depth: int, tag: int = T.REQUEST_MESSAGE.value) -> bytes:
    """A structure nested ``depth`` deep (built as bytes: the encoder would recurse)."""
    tag_b = tag.to_bytes(3, "big")
    return b"".join(HEADER.pack(tag_b, 1, 8 * (depth - 1 - i)) for i in range(depth))


def fix_length(data: bytes) -> bytes:
    """Makes the outer header announce what follows (so the decoder looks inside)."""
    if len(data) < 8:
        return data
    return data[:4] + struct.pack(">I", len(data) - 8) + data[8:]


def mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        n = len(buf)
        if n < 8:
            buf += rng.randbytes(8)
            n = len(buf)
        at = rng.randrange(0, n // 8) * 8  # item headers and values are 8-aligned
        op = rng.randrange(12)
        if op == 0:  # truncation
            del buf[rng.randrange(n):]
        elif op == 1:  # bit flip
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 2 and at + 8 <= n:  # length far beyond (or short of) the data
            length = rng.choice(INTERESTING_LENGTHS) if rng.random() < 0.7 else rng.randrange(1 << 32)
            buf[at + 4:at + 8] = struct.pack(">I", length)
        elif op == 3 and at + 4 <= n:  # wrong type for a known tag
            buf[at + 3] = rng.choice((rng.randrange(0x0D), 0x00, 0xFF, 0x0C))
        elif op == 4 and at + 3 <= n:  # unknown or other known tag
            tag = rng.choice((rng.randrange(1 << 24), 0x420000 + rng.randrange(0x160), 0x540000))
            buf[at:at + 3] = tag.to_bytes(3, "big")
        elif op == 5 and at + 12 <= n:  # unknown enum values / operations, odd integers
            value = rng.choice(INTERESTING_INTS) if rng.random() < 0.7 else rng.randrange(1 << 32)
            buf[at + 8:at + 12] = struct.pack(">I", value)
        elif op == 6:  # random bytes inserted
            buf[at:at] = rng.randbytes(rng.choice((1, 3, 8, 16, 40)))
        elif op == 7:  # a slice duplicated (repeated items, batch items beyond the count)
            end = min(n, at + 8 * rng.randint(1, 8))
            buf[at:at] = buf[at:end] * rng.randint(1, 16)
        elif op == 8:  # spliced with another message
            other = rng.choice(corpus)
            cut = rng.randrange(0, len(other) // 8) * 8
            buf[at:] = other[cut:]
        elif op == 9 and at + 16 <= n:  # invalid UTF-8 in whatever sits there
            buf[at + 8:at + 12] = rng.choice((b"\xff\xfe\xfd\xfc", b"\xc3\x28ab", b"\xed\xa0\x80a"))
        elif op == 10:  # deep nesting spliced in
            buf[at:at] = nested(rng.choice((31, 33, 64, 1000)))
        else:  # a giant batch count
            i = buf.find(T.BATCH_COUNT.value.to_bytes(3, "big") + b"\x02")
            if i >= 0 and i + 12 <= n:
                buf[i + 8:i + 12] = struct.pack(">i", rng.choice((0, -1, 2**31 - 1, 100_000)))
    out = bytes(buf)
    return fix_length(out) if rng.random() < 0.8 else out


def check(data: bytes, limits: ttlv.Limits = ttlv.DEFAULT_LIMITS, max_batch_items: int = 1000) -> str:
    """Runs one input through decode and parse; returns the outcome. Any exception other than
    the expected ones propagates: that is a crash."""
    try:
        item = ttlv.decode(data, limits)
    except ttlv.TtlvError:
        return "ttlv-error"
    version = messages.peek_version(item)
    try:
        req = messages.parse_request(item, max_batch_items)
    except KmipError as error:
        messages.error_response(version, error)
        return "invalid-message"
    assert 0 < len(req.batch_items) <= max_batch_items
    # Everything the response echoes (version, correlation values, batch item ids) must encode.
    probe = KmipError(ResultReason.OPERATION_NOT_SUPPORTED, "probe")
    response = messages.Response(
        version=req.version,
        results=[messages.Result.failure(bi, probe) for bi in req.batch_items],
        client_correlation_value=req.client_correlation_value,
        server_correlation_value=req.server_correlation_value,
    )
    ttlv.encode(messages.build_response(response))
    return "request"
