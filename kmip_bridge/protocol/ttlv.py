"""A generic TTLV tree codec (KMIP §9.1).

The whole message is decoded into a tree of :class:`Item` nodes; semantics live elsewhere. Decoding
is strict about lengths (a lie about a length is an error, never an over-read) and bounded in
depth and item count, because the input comes from the network.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from enum import Enum, IntEnum
from typing import NoReturn

from kmip.core.enums import Tags


class Type(IntEnum):
    STRUCTURE = 0x01
    INTEGER = 0x02
    LONG_INTEGER = 0x03
    BIG_INTEGER = 0x04
    ENUMERATION = 0x05
    BOOLEAN = 0x06
    TEXT_STRING = 0x07
    BYTE_STRING = 0x08
    DATE_TIME = 0x09
    INTERVAL = 0x0A
    DATE_TIME_EXTENDED = 0x0B


class TtlvError(ValueError):
    """The bytes are not well-formed TTLV (or break a decoding limit)."""


HEADER = struct.Struct(">3sBI")

# The codec's hot paths compare type codes against these plain ints: reading a member off the
# ``Type`` class (``Type.STRUCTURE``) is a slow metaclass attribute lookup, ints are free.
_STRUCTURE = 0x01
_INTEGER = 0x02
_LONG_INTEGER = 0x03
_BIG_INTEGER = 0x04
_ENUMERATION = 0x05
_BOOLEAN = 0x06
_TEXT_STRING = 0x07
_BYTE_STRING = 0x08
_DATE_TIME = 0x09
_INTERVAL = 0x0A
_DATE_TIME_EXTENDED = 0x0B

# Type members by code (None for unknown codes), and as module globals for the builders: Items
# still carry ``Type`` members, only found without the class attribute lookup.
_TYPE_OF: tuple[Type | None, ...] = tuple(
    Type(code) if code in Type._value2member_map_ else None for code in range(256)
)
_T_STRUCTURE = Type.STRUCTURE
_T_INTEGER = Type.INTEGER
_T_LONG_INTEGER = Type.LONG_INTEGER
_T_BIG_INTEGER = Type.BIG_INTEGER
_T_ENUMERATION = Type.ENUMERATION
_T_BOOLEAN = Type.BOOLEAN
_T_TEXT_STRING = Type.TEXT_STRING
_T_BYTE_STRING = Type.BYTE_STRING
_T_DATE_TIME = Type.DATE_TIME
_T_INTERVAL = Type.INTERVAL

# An item header as two big-endian words: (tag << 8 | type, length). Fixed-size items are encoded
# with their header in one struct call.
_HEAD = struct.Struct(">II")
_HEAD_I32 = struct.Struct(">IIi4x")
_HEAD_U32 = struct.Struct(">III4x")
_HEAD_I64 = struct.Struct(">IIq")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_PAD = tuple(b"\x00" * ((8 - n) % 8) for n in range(8))  # padding after n % 8 bytes
_PAD_LEN = tuple(len(p) for p in _PAD)


class Item:
    """One TTLV node. ``value`` is a list of Items for structures, else a Python scalar:
    int (integers, enumerations, intervals, date-times as POSIX seconds, extended date-times in
    microseconds), bool, str or bytes."""

    __slots__ = ("tag", "type", "value")

    def __init__(self, tag: int, type_: int, value: object) -> None:
        self.tag = tag if type(tag) is int else int(tag)  # builders and the decoder pass ints
        self.type = type_
        self.value = value

    # -- navigation -------------------------------------------------------------------------------
    def get(self, tag: int) -> Item | None:
        for child in self.value:  # type: ignore[union-attr]
            if child.tag == tag:
                return child
        return None

    def all(self, tag: int) -> list[Item]:
        return [c for c in self.value if c.tag == tag]  # type: ignore[union-attr]

    def value_of(self, tag: int, default: object = None) -> object:
        child = self.get(tag)
        return default if child is None else child.value

    def __iter__(self) -> Iterator[Item]:
        return iter(self.value)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Item)
            and self.tag == other.tag
            and self.type == other.type
            and self.value == other.value
        )

    def __repr__(self) -> str:
        return f"Item({tag_name(self.tag)}, {Type(self.type).name}, {self.value!r})"


def tag_name(tag: int) -> str:
    try:
        return Tags(tag).name
    except ValueError:
        return f"0x{tag:06X}"


# -- builders ---------------------------------------------------------------------------------------
def struct_(tag: Tags | int, children: Iterable[Item | None] = ()) -> Item:
    return Item(_t(tag), _T_STRUCTURE, [c for c in children if c is not None])


def text(tag: Tags | int, value: str) -> Item:
    return Item(_t(tag), _T_TEXT_STRING, value)


def bytes_(tag: Tags | int, value: bytes) -> Item:
    return Item(_t(tag), _T_BYTE_STRING, bytes(value))


def integer(tag: Tags | int, value: int) -> Item:
    return Item(_t(tag), _T_INTEGER, value if type(value) is int else int(value))


def long_integer(tag: Tags | int, value: int) -> Item:
    return Item(_t(tag), _T_LONG_INTEGER, value if type(value) is int else int(value))


def enum(tag: Tags | int, value: object) -> Item:
    if type(value) is int:
        v = value
    elif isinstance(value, Enum):
        v = int(value._value_)  # what ``.value`` returns, without the (slow) property call
    else:
        v = int(getattr(value, "value", value))  # type: ignore[call-overload]
    return Item(_t(tag), _T_ENUMERATION, v)


def boolean(tag: Tags | int, value: bool) -> Item:
    return Item(_t(tag), _T_BOOLEAN, bool(value))


def date_time(tag: Tags | int, value: int) -> Item:
    return Item(_t(tag), _T_DATE_TIME, value if type(value) is int else int(value))


def interval(tag: Tags | int, value: int) -> Item:
    return Item(_t(tag), _T_INTERVAL, value if type(value) is int else int(value))


def _t(tag: Tags | int) -> int:
    cls = type(tag)
    if cls is int:
        return tag  # type: ignore[return-value]
    if cls is Tags:
        return tag._value_  # type: ignore[union-attr,no-any-return]  # ``.value`` is a slow property
    return int(tag)


# -- encoding -----------------------------------------------------------------------------------------
def encode(item: Item) -> bytes:
    out = bytearray()
    _encode_items((item,), out)
    return bytes(out)


def _encode_items(items: Iterable[Item], out: bytearray) -> None:
    """Appends the encodings of ``items`` to ``out``; recurses only into structures."""
    for item in items:
        t = item.type
        tag = item.tag
        if tag >> 24:  # not a 3-byte tag: raise what ``to_bytes`` raises
            tag.to_bytes(3, "big")
        v = item.value
        if t == _STRUCTURE:
            start = len(out)
            out += _HEAD.pack(tag << 8 | _STRUCTURE, 0)  # the length is patched in below
            _encode_items(v, out)  # type: ignore[arg-type]
            _U32.pack_into(out, start + 4, len(out) - start - 8)
        elif t == _TEXT_STRING or t == _BYTE_STRING:
            raw = v.encode("utf-8") if t == _TEXT_STRING else v  # type: ignore[union-attr]
            n = len(raw)  # type: ignore[arg-type]
            out += _HEAD.pack(tag << 8 | t, n)
            out += raw  # type: ignore[operator]
            out += _PAD[n & 7]
        elif t == _ENUMERATION or t == _INTERVAL:
            out += _HEAD_U32.pack(tag << 8 | t, 4, v)
        elif t == _INTEGER:
            out += _HEAD_I32.pack(tag << 8 | _INTEGER, 4, v)
        elif t == _LONG_INTEGER or t == _DATE_TIME or t == _DATE_TIME_EXTENDED:
            out += _HEAD_I64.pack(tag << 8 | t, 8, v)
        elif t == _BOOLEAN:
            out += _HEAD_I64.pack(tag << 8 | _BOOLEAN, 8, 1 if v else 0)
        elif t == _BIG_INTEGER:
            body = _big_to_bytes(v)  # type: ignore[arg-type]
            out += _HEAD.pack(tag << 8 | _BIG_INTEGER, len(body))
            out += body
        else:
            raise TtlvError(f"cannot encode type {t!r}")


def encoded_size(item: Item) -> int:
    """The length of ``encode(item)``, without building it (the response budget counts each
    batch item as it is produced). Text is counted as UTF-8 only when it is not ASCII."""
    t, v = item.type, item.value
    if t == _STRUCTURE:
        return 8 + sum(encoded_size(child) for child in v)  # type: ignore[union-attr]
    if t == _TEXT_STRING:
        n = len(v) if v.isascii() else len(v.encode("utf-8"))  # type: ignore[union-attr]
        return 8 + (n + 7) // 8 * 8
    if t == _BYTE_STRING:
        return 8 + (len(v) + 7) // 8 * 8  # type: ignore[arg-type]
    if t == _BIG_INTEGER:
        return 8 + len(_big_to_bytes(v))  # type: ignore[arg-type]
    return 16  # every other type is one 8-byte (padded) value


def _big_to_bytes(value: int) -> bytes:
    size = max(8, (value.bit_length() + 8 + 63) // 64 * 8)
    return value.to_bytes(size, "big", signed=True)


# -- decoding -----------------------------------------------------------------------------------------
class Limits:
    __slots__ = ("max_depth", "max_items")

    def __init__(self, max_depth: int = 32, max_items: int = 100_000) -> None:
        self.max_depth = max_depth
        self.max_items = max_items


DEFAULT_LIMITS = Limits()


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Item:
    """Decodes exactly one TTLV item that spans all of ``data``."""
    # Slices of a bytes object are the values themselves (no memoryview slice + copy per value).
    buf = data if type(data) is bytes else bytes(memoryview(data))
    size = len(data)
    if size < 8:
        raise TtlvError("truncated item header")
    items, end, _budget = _decode_items(buf, 0, size, 0, limits.max_depth, limits.max_items, True)
    if end != size:
        raise TtlvError(f"{size - end} trailing bytes after the message")
    return items[0]


def _decode_items(
    buf: bytes, pos: int, stop: int, depth: int, max_depth: int, budget: int, single: bool = False
) -> tuple[list[Item], int, int]:
    """Decodes the items in ``buf[pos:stop]`` (only the first one if ``single``), recursing only
    into structures. Returns them, the position after the last one and the item budget left."""
    items: list[Item] = []
    append = items.append
    while pos < stop:
        if stop - pos < 8:
            raise TtlvError("truncated item header")
        budget -= 1
        if budget < 0:
            raise TtlvError("too many items in message")
        head, length = _HEAD.unpack_from(buf, pos)
        tag = head >> 8
        code = head & 0xFF
        pos += 8
        left = stop - pos
        if code == _STRUCTURE:
            if length > left:
                raise TtlvError(f"{tag_name(tag)} claims {length} bytes, only {left} remain")
            if depth >= max_depth:
                raise TtlvError("structures nested too deeply")
            end = pos + length
            children, _end, budget = _decode_items(buf, pos, end, depth + 1, max_depth, budget)
            append(Item(tag, _T_STRUCTURE, children))
            pos = end
        elif code == _ENUMERATION or code == _INTEGER or code == _INTERVAL:
            if length != 4:
                _wrong_length(code, tag, length, 4)
            if left < 8:
                raise TtlvError(f"{tag_name(tag)} claims {length} bytes, only {left} remain")
            value = (_I32 if code == _INTEGER else _U32).unpack_from(buf, pos)[0]
            append(Item(tag, _TYPE_OF[code], value))
            pos += 8
        elif code == _TEXT_STRING or code == _BYTE_STRING:
            padded = length + _PAD_LEN[length & 7]
            if padded > left:
                raise TtlvError(f"{tag_name(tag)} claims {length} bytes, only {left} remain")
            raw = buf[pos : pos + length]
            if code == _TEXT_STRING:
                try:
                    append(Item(tag, _T_TEXT_STRING, raw.decode("utf-8")))
                except UnicodeDecodeError as exc:
                    raise TtlvError(f"text {tag_name(tag)} is not valid UTF-8") from exc
            else:
                append(Item(tag, _T_BYTE_STRING, raw))
            pos += padded
        elif code == _LONG_INTEGER or code == _DATE_TIME or code == _DATE_TIME_EXTENDED or code == _BOOLEAN:
            if length != 8:
                _wrong_length(code, tag, length, 8)
            if left < 8:
                raise TtlvError(f"{tag_name(tag)} claims {length} bytes, only {left} remain")
            if code == _BOOLEAN:
                n = _U64.unpack_from(buf, pos)[0]
                if n != 0 and n != 1:
                    raise TtlvError(f"boolean {tag_name(tag)} is {n}, not 0 or 1")
                append(Item(tag, _T_BOOLEAN, n == 1))
            else:
                append(Item(tag, _TYPE_OF[code], _I64.unpack_from(buf, pos)[0]))
            pos += 8
        elif code == _BIG_INTEGER:
            padded = length + _PAD_LEN[length & 7]
            if padded > left:
                raise TtlvError(f"{tag_name(tag)} claims {length} bytes, only {left} remain")
            if length % 8:
                raise TtlvError(f"big integer {tag_name(tag)} length {length} is not a multiple of 8")
            value = int.from_bytes(buf[pos : pos + length], "big", signed=True)
            append(Item(tag, _T_BIG_INTEGER, value))
            pos += padded
        else:
            raise TtlvError(f"unknown item type 0x{code:02X} for tag {tag_name(tag)}")
        if single:
            break
    return items, pos, budget


def _wrong_length(code: int, tag: int, length: int, fixed: int) -> NoReturn:
    raise TtlvError(f"{Type(code).name} {tag_name(tag)} has length {length}, expected {fixed}")


def message_length(header: bytes) -> int:
    """Length of the body that follows an 8-byte message header (which must be a structure)."""
    _tag, type_code, length = HEADER.unpack(header)
    if type_code != _STRUCTURE:
        raise TtlvError("a KMIP message must be a structure")
    return int(length)
