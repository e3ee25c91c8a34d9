"""Workloads: requests encoded once into bytes, and per-client programs that pick the next one.

A program is a generator: it yields ``(kind, request_bytes)`` and is sent back ``(ok, response)``
for that request. Only Get needs per-request bytes (the id), made by concatenating a cached
prefix, the id and a cached suffix. Responses are scanned, never decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field

from kmip.core import enums
from kmip.core.enums import Operation, ResultReason
from kmip.core.enums import Tags as T

from ..client import request
from ..protocol import ttlv
from ..protocol.ttlv import Item

Version = tuple[int, int]
Op = tuple[str, bytes]
Program = Generator[Op, tuple[bool, bytes], None]

WORKLOADS = ("create-get", "get", "register-secret", "locate", "mixed", "get-locate")
SECRET_SIZE = 1024
# mixed: 50% Get, 20% Create, 20% Locate, 10% Register, interleaved.
MIXED_PATTERN = ("get", "create", "get", "locate", "get", "register", "get", "create", "get", "locate")

_STATUS = bytes.fromhex("42007f0500000004")  # Result Status, enumeration, length 4
_REASON = bytes.fromhex("42007e0500000004")  # Result Reason
_MESSAGE = bytes.fromhex("42007d07")  # Result Message, text
_UID = bytes.fromhex("42009407")  # Unique Identifier, text


# -- building ---------------------------------------------------------------------------------------
def _attr(name: str, value: Item) -> Item:
    return ttlv.struct_(T.ATTRIBUTE, [ttlv.text(T.ATTRIBUTE_NAME, name), value])


def _name_value(name: str) -> Item:
    return ttlv.struct_(
        T.ATTRIBUTE_VALUE,
        [ttlv.text(T.NAME_VALUE, name), ttlv.enum(T.NAME_TYPE, enums.NameType.UNINTERPRETED_TEXT_STRING)],
    )


def _message(op: Operation, payload: Item, version: Version) -> bytes:
    return ttlv.encode(request([(op.value, payload)], version=version))


def create_message(version: Version, name: str | None = None) -> bytes:
    """Create AES-256 (usage mask Encrypt|Decrypt: the stock server insists on one)."""
    mask = enums.CryptographicUsageMask.ENCRYPT.value | enums.CryptographicUsageMask.DECRYPT.value
    attrs = [
        _attr("Cryptographic Algorithm", ttlv.enum(T.ATTRIBUTE_VALUE, enums.CryptographicAlgorithm.AES)),
        _attr("Cryptographic Length", ttlv.integer(T.ATTRIBUTE_VALUE, 256)),
        _attr("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, mask)),
    ]
    if name is not None:
        attrs.append(_attr("Name", _name_value(name)))
    payload = ttlv.struct_(
        T.REQUEST_PAYLOAD,
        [ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SYMMETRIC_KEY), ttlv.struct_(T.TEMPLATE_ATTRIBUTE, attrs)],
    )
    return _message(Operation.CREATE, payload, version)


def register_secret_message(version: Version, size: int = SECRET_SIZE) -> bytes:
    secret = ttlv.struct_(
        T.SECRET_DATA,
        [
            ttlv.enum(T.SECRET_DATA_TYPE, enums.SecretDataType.PASSWORD),
            ttlv.struct_(
                T.KEY_BLOCK,
                [
                    ttlv.enum(T.KEY_FORMAT_TYPE, enums.KeyFormatType.OPAQUE),
                    ttlv.struct_(T.KEY_VALUE, [ttlv.bytes_(T.KEY_MATERIAL, bytes(i % 251 for i in range(size)))]),
                ],
            ),
        ],
    )
    derive = enums.CryptographicUsageMask.DERIVE_KEY.value
    mask = _attr("Cryptographic Usage Mask", ttlv.integer(T.ATTRIBUTE_VALUE, derive))
    payload = ttlv.struct_(
        T.REQUEST_PAYLOAD,
        [
            ttlv.enum(T.OBJECT_TYPE, enums.ObjectType.SECRET_DATA),
            ttlv.struct_(T.TEMPLATE_ATTRIBUTE, [mask]),
            secret,
        ],
    )
    return _message(Operation.REGISTER, payload, version)


def locate_message(version: Version, name: str) -> bytes:
    payload = ttlv.struct_(T.REQUEST_PAYLOAD, [_attr("Name", _name_value(name))])
    return _message(Operation.LOCATE, payload, version)


class IdMessages:
    """Messages for an operation on one id: cached ``prefix + id + suffix`` per id length."""

    def __init__(self, op: Operation, version: Version) -> None:
        self._op = op
        self._version = version
        self._parts: dict[int, tuple[bytes, bytes]] = {}

    def __call__(self, uid: bytes) -> bytes:
        parts = self._parts.get(len(uid))
        if parts is None:
            parts = self._parts[len(uid)] = self._split(len(uid))
        return parts[0] + uid + parts[1]

    def _split(self, n: int) -> tuple[bytes, bytes]:
        payload = ttlv.struct_(T.REQUEST_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, "x" * n)])
        data = _message(self._op, payload, self._version)
        at = data.index(_UID + n.to_bytes(4, "big")) + 8
        return data[:at], data[at + n :]


# -- scanning ---------------------------------------------------------------------------------------
def status_of(resp: bytes) -> tuple[bool, int]:
    """(success, result reason) of the first batch item; reason -1 when there is none."""
    i = resp.find(_STATUS)
    if i < 0:
        return False, -1
    if resp[i + 8 : i + 12] == b"\x00\x00\x00\x00":
        return True, 0
    j = resp.find(_REASON)
    return False, (int.from_bytes(resp[j + 8 : j + 12], "big") if j >= 0 else -1)


def uid_of(resp: bytes) -> bytes | None:
    i = resp.find(_UID)
    if i < 0:
        return None
    n = int.from_bytes(resp[i + 4 : i + 8], "big")
    return resp[i + 8 : i + 8 + n]


def message_of(resp: bytes) -> str:
    i = resp.find(_MESSAGE)
    if i < 0:
        return ""
    n = int.from_bytes(resp[i + 4 : i + 8], "big")
    return resp[i + 8 : i + 8 + n].decode("utf-8", "replace")


def reason_name(reason: int) -> str:
    try:
        return ResultReason(reason).name
    except ValueError:
        return f"reason {reason}"


# -- programs ---------------------------------------------------------------------------------------
@dataclass
class Kit:
    """Everything one client process's programs share, built once per process."""

    version: Version
    names: list[str] = field(default_factory=list)
    warm_ids: list[bytes] = field(default_factory=list)
    create: bytes = b""
    register: bytes = b""
    get: IdMessages | None = None
    gets: list[bytes] = field(default_factory=list)
    locates: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.create = create_message(self.version)
        self.register = register_secret_message(self.version)
        self.get = IdMessages(Operation.GET, self.version)

    def prepare(self) -> None:
        """Encodes the Get and Locate messages once the warm ids and names exist."""
        assert self.get is not None
        self.gets = [self.get(uid) for uid in self.warm_ids]
        self.locates = [locate_message(self.version, n) for n in self.names]


def _cycle(items: list[bytes], start: int) -> Iterable[bytes]:
    n = len(items)
    i = start % n
    while True:
        yield items[i]
        i = (i + 1) % n


def create_get(kit: Kit, index: int) -> Program:
    get = kit.get
    assert get is not None
    while True:
        ok, resp = yield "create", kit.create
        uid = uid_of(resp) if ok else None
        if uid is not None:
            yield "get", get(uid)


def get_only(kit: Kit, index: int) -> Program:
    for msg in _cycle(kit.gets, index * 37):
        yield "get", msg


def register_secret(kit: Kit, index: int) -> Program:
    while True:
        yield "register", kit.register


def locate(kit: Kit, index: int) -> Program:
    for msg in _cycle(kit.locates, index * 7):
        yield "locate", msg


def mixed(kit: Kit, index: int) -> Program:
    gets = iter(_cycle(kit.gets, index * 37))
    locates = iter(_cycle(kit.locates, index * 7))
    messages: dict[str, Callable[[], bytes]] = {
        "get": gets.__next__,
        "locate": locates.__next__,
        "create": lambda: kit.create,
        "register": lambda: kit.register,
    }
    pattern = MIXED_PATTERN[index % len(MIXED_PATTERN) :] + MIXED_PATTERN[: index % len(MIXED_PATTERN)]
    while True:
        for kind in pattern:
            yield kind, messages[kind]()


def get_locate(kit: Kit, index: int) -> Program:
    """Get of a warm key, then Locate by one name, alternately (the scale run's workload)."""
    gets = iter(_cycle(kit.gets, index * 37))
    for msg in _cycle(kit.locates, index * 7):
        yield "get", next(gets)
        yield "locate", msg


PROGRAMS: dict[str, Callable[[Kit, int], Program]] = {
    "create-get": create_get,
    "get": get_only,
    "register-secret": register_secret,
    "locate": locate,
    "mixed": mixed,
    "get-locate": get_locate,
}


def needs(workload: str) -> tuple[bool, bool]:
    """(warm keys, named keys) the workload needs created before it starts."""
    return workload in ("get", "mixed", "get-locate"), workload in ("locate", "mixed", "get-locate")
