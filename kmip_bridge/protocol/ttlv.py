"""A generic TTLV tree codec (KMIP §9.1).

The whole message is decoded into a tree of :class:`Item` nodes; semantics live elsewhere. Decoding
is strict about lengths (a lie about a length is an error, never an over-read) and bounded in
depth and item count, because the input comes from the network.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from enum import IntEnum

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
_I32 = struct.Struct(">i4x")
_U32 = struct.Struct(">I4x")
_I64 = struct.Struct(">q")
_FIXED_LENGTH = {
    Type.INTEGER: 4,
    Type.LONG_INTEGER: 8,
    Type.ENUMERATION: 4,
    Type.BOOLEAN: 8,
    Type.DATE_TIME: 8,
    Type.INTERVAL: 4,
    Type.DATE_TIME_EXTENDED: 8,
}
_TYPES = {t.value: t for t in Type}


class Item:
    """One TTLV node. ``value`` is a list of Items for structures, else a Python scalar:
    int (integers, enumerations, intervals, date-times as POSIX seconds, extended date-times in
    microseconds), bool, str or bytes."""

    __slots__ = ("tag", "type", "value")

    def __init__(self, tag: int, type_: int, value: object) -> None:
        self.tag = int(tag)
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
    return Item(_t(tag), Type.STRUCTURE, [c for c in children if c is not None])


def text(tag: Tags | int, value: str) -> Item:
    return Item(_t(tag), Type.TEXT_STRING, value)


def bytes_(tag: Tags | int, value: bytes) -> Item:
    return Item(_t(tag), Type.BYTE_STRING, bytes(value))


def integer(tag: Tags | int, value: int) -> Item:
    return Item(_t(tag), Type.INTEGER, int(value))


def long_integer(tag: Tags | int, value: int) -> Item:
    return Item(_t(tag), Type.LONG_INTEGER, int(value))


def enum(tag: Tags | int, value: object) -> Item:
    return Item(_t(tag), Type.ENUMERATION, int(getattr(value, "value", value)))  # type: ignore[call-overload]


def boolean(tag: Tags | int, value: bool) -> Item:
    return Item(_t(tag), Type.BOOLEAN, bool(value))


def date_time(tag: Tags | int, value: int) -> Item:
    return Item(_t(tag), Type.DATE_TIME, int(value))


def interval(tag: Tags | int, value: int) -> Item:
    return Item(_t(tag), Type.INTERVAL, int(value))


def _t(tag: Tags | int) -> int:
    return tag.value if isinstance(tag, Tags) else int(tag)


# -- encoding -----------------------------------------------------------------------------------------
def encode(item: Item) -> bytes:
    out: list[bytes] = []
    _encode_into(item, out)
    return b"".join(out)


def _pad(n: int) -> bytes:
    return b"\x00" * ((8 - n % 8) % 8)


def _encode_into(item: Item, out: list[bytes]) -> int:
    """Appends the encoding of ``item`` to ``out`` and returns its total length."""
    t = item.type
    tag = item.tag.to_bytes(3, "big")
    v = item.value
    if t == Type.STRUCTURE:
        slot = len(out)
        out.append(b"")
        length = 0
        for child in v:  # type: ignore[union-attr]
            length += _encode_into(child, out)
        out[slot] = HEADER.pack(tag, t, length)
        return 8 + length
    if t == Type.TEXT_STRING or t == Type.BYTE_STRING:
        raw = v.encode("utf-8") if t == Type.TEXT_STRING else v  # type: ignore[union-attr]
        pad = _pad(len(raw))  # type: ignore[arg-type]
        out.append(HEADER.pack(tag, t, len(raw)) + raw + pad)  # type: ignore[operator]
        return 8 + len(raw) + len(pad)  # type: ignore[arg-type]
    if t == Type.INTEGER:
        body = _I32.pack(v)
        length = 4
    elif t == Type.ENUMERATION or t == Type.INTERVAL:
        body = _U32.pack(v)
        length = 4
    elif t == Type.LONG_INTEGER or t == Type.DATE_TIME or t == Type.DATE_TIME_EXTENDED:
        body = _I64.pack(v)
        length = 8
    elif t == Type.BOOLEAN:
        body = _I64.pack(1 if v else 0)
        length = 8
    elif t == Type.BIG_INTEGER:
        body = _big_to_bytes(v)  # type: ignore[arg-type]
        length = len(body)
    else:
        raise TtlvError(f"cannot encode type {t!r}")
    out.append(HEADER.pack(tag, t, length) + body)
    return 8 + len(body)


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
    budget = [limits.max_items]
    item, end = _decode_at(memoryview(data), 0, len(data), 0, limits, budget)
    if end != len(data):
        raise TtlvError(f"{len(data) - end} trailing bytes after the message")
    return item


def _decode_at(
    buf: memoryview, pos: int, end: int, depth: int, limits: Limits, budget: list[int]
) -> tuple[Item, int]:
    if end - pos < 8:
        raise TtlvError("truncated item header")
    budget[0] -= 1
    if budget[0] < 0:
        raise TtlvError("too many items in message")
    tag_b, type_code, length = HEADER.unpack_from(buf, pos)
    tag = int.from_bytes(tag_b, "big")
    pos += 8
    t = _TYPES.get(type_code)
    if t is None:
        raise TtlvError(f"unknown item type 0x{type_code:02X} for tag {tag_name(tag)}")
    fixed = _FIXED_LENGTH.get(t)
    if fixed is not None and length != fixed:
        raise TtlvError(f"{t.name} {tag_name(tag)} has length {length}, expected {fixed}")
    padded = length + (8 - length % 8) % 8
    if t == Type.STRUCTURE:
        padded = length
    if padded > end - pos:
        raise TtlvError(f"{tag_name(tag)} claims {length} bytes, only {end - pos} remain")
    if t == Type.STRUCTURE:
        if depth >= limits.max_depth:
            raise TtlvError("structures nested too deeply")
        children: list[Item] = []
        stop = pos + length
        while pos < stop:
            child, pos = _decode_at(buf, pos, stop, depth + 1, limits, budget)
            children.append(child)
        return Item(tag, t, children), stop
    raw = buf[pos : pos + length]
    value: object
    if t == Type.INTEGER:
        value = int.from_bytes(raw, "big", signed=True)
    elif t == Type.ENUMERATION or t == Type.INTERVAL:
        value = int.from_bytes(raw, "big")
    elif t == Type.LONG_INTEGER or t == Type.DATE_TIME or t == Type.DATE_TIME_EXTENDED:
        value = int.from_bytes(raw, "big", signed=True)
    elif t == Type.BOOLEAN:
        n = int.from_bytes(raw, "big")
        if n not in (0, 1):
            raise TtlvError(f"boolean {tag_name(tag)} is {n}, not 0 or 1")
        value = n == 1
    elif t == Type.TEXT_STRING:
        try:
            value = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TtlvError(f"text {tag_name(tag)} is not valid UTF-8") from exc
    elif t == Type.BYTE_STRING:
        value = bytes(raw)
    else:  # BIG_INTEGER
        if length % 8:
            raise TtlvError(f"big integer {tag_name(tag)} length {length} is not a multiple of 8")
        value = int.from_bytes(raw, "big", signed=True)
    return Item(tag, t, value), pos + padded


def message_length(header: bytes) -> int:
    """Length of the body that follows an 8-byte message header (which must be a structure)."""
    _tag, type_code, length = HEADER.unpack(header)
    if type_code != Type.STRUCTURE:
        raise TtlvError("a KMIP message must be a structure")
    return int(length)
