"""The Key HSM service protocol: length-prefixed binary frames over a Unix stream socket.

frame    := u32 length (big-endian) | body            (length <= MAX_FRAME)
request  := u8 op     | field*
response := u8 status | field*                        (status OK or ERROR)
field    := u32 length | bytes                        (text is UTF-8)

An error response carries (class name, message, argument): the client raises the same KeyHsmError
subclass with the same message. One request at a time per connection; a client keeps several
connections to run requests concurrently.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence

from .envelope import Sealed
from .errors import IntegrityError, KekExists, KekNotFound, KekRevoked, KeyHsmError, TokenUnavailable
from .kek import KekInfo
from .per_object import ObjectKeyDestroyed

# /2: sealed records carry their envelope format (a 7th field).
MAGIC = b"kmip-bridge-keyhsm/2"
MAX_FRAME = 16 * 1024 * 1024

# operations
HELLO = 1
SEAL = 2
OPEN = 3
CURRENT_KEK = 4
LIST_KEKS = 5
CREATE_KEK = 6
ROTATE_KEK = 7
REVOKE_KEK = 8
CHECK = 9
REWRAP = 10
DESTROY_OBJECT_KEY = 11  # keyhsm.per_object
LIST_OBJECT_KEYS = 12

OK = 0
ERROR = 1

_U32 = struct.Struct(">I")
_PEERCRED = struct.Struct("3i")  # struct ucred
_FIRST_READ = 65536


class ProtocolError(Exception):
    """The peer sent something that is not this protocol (or the connection ended mid-frame)."""


class Closed(ProtocolError):
    """The peer closed the connection between frames."""


def pack(head: int, fields: Sequence[bytes]) -> bytes:
    parts = [b"", bytes((head,))]
    size = 1
    for f in fields:
        parts.append(_U32.pack(len(f)))
        parts.append(f)
        size += 4 + len(f)
    if size > MAX_FRAME:
        raise KeyHsmError(f"key HSM request of {size} bytes exceeds the {MAX_FRAME}-byte frame limit")
    parts[0] = _U32.pack(size)
    return b"".join(parts)


def unpack(body: bytes) -> tuple[int, list[bytes]]:
    if not body:
        raise ProtocolError("empty frame")
    fields: list[bytes] = []
    pos, end = 1, len(body)
    while pos < end:
        if pos + 4 > end:
            raise ProtocolError("truncated field length")
        (n,) = _U32.unpack_from(body, pos)
        pos += 4
        if pos + n > end:
            raise ProtocolError("truncated field")
        fields.append(body[pos : pos + n])
        pos += n
    return body[0], fields


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ProtocolError("connection closed mid-frame")
        buf += chunk
    return bytes(buf)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket (SO_PEERCRED)."""
    pid, uid, gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return pid, uid, gid


def read_frame(sock: socket.socket) -> bytes:
    """One frame's body. The first recv usually holds the whole frame (one syscall, not two)."""
    head = sock.recv(_FIRST_READ)
    if not head:
        raise Closed("connection closed")
    if len(head) < 4:
        head += _recv_exact(sock, 4 - len(head))
    (size,) = _U32.unpack_from(head)
    if size == 0 or size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes is outside 1..{MAX_FRAME}")
    have = len(head) - 4
    if have > size:
        raise ProtocolError("data after the frame (one request at a time per connection)")
    if have == size:
        return head[4:]
    return head[4:] + _recv_exact(sock, size - have)


# -- values -------------------------------------------------------------------------------------


def text(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise ProtocolError("a text field is not UTF-8") from None


def sealed_fields(s: Sealed) -> list[bytes]:
    return [
        s.kek_label.encode(), s.kek_kind.encode(), s.nonce, s.ciphertext, s.wrapped_dek, s.wrap_nonce,
        str(s.format).encode(),
    ]


def sealed_from(fields: Sequence[bytes]) -> Sealed:
    if len(fields) != 7:
        raise ProtocolError("a sealed record has 7 fields")
    try:
        fmt = int(fields[6])
    except ValueError:
        raise ProtocolError("an envelope format is not a number") from None
    return Sealed(text(fields[0]), text(fields[1]), fields[2], fields[3], fields[4], fields[5], fmt)


def kek_fields(k: KekInfo) -> list[bytes]:
    return [k.label.encode(), k.name.encode(), str(k.version).encode(), k.kind.encode()]


def keks_from(fields: Sequence[bytes]) -> list[KekInfo]:
    if len(fields) % 4:
        raise ProtocolError("KEK descriptions have 4 fields")
    out = []
    for i in range(0, len(fields), 4):
        label, name, version, kind = fields[i : i + 4]
        try:
            n = int(version)
        except ValueError:
            raise ProtocolError("a KEK version is not a number") from None
        out.append(KekInfo(text(label), text(name), n, text(kind)))
    return out


# -- errors -------------------------------------------------------------------------------------

_ERRORS: dict[str, type[KeyHsmError]] = {
    cls.__name__: cls
    for cls in (
        KeyHsmError, TokenUnavailable, KekNotFound, KekExists, KekRevoked, IntegrityError, ObjectKeyDestroyed,
    )
}


def error_fields(exc: KeyHsmError) -> list[bytes]:
    cls = type(exc)
    while cls.__name__ not in _ERRORS or _ERRORS[cls.__name__] is not cls:
        cls = cls.__mro__[1]
    argument = getattr(exc, "label", None) or getattr(exc, "name", None) or ""
    return [cls.__name__.encode(), str(exc).encode(), str(argument).encode()]


def error_from(fields: Sequence[bytes]) -> KeyHsmError:
    if len(fields) != 3:
        raise ProtocolError("an error has 3 fields")
    name, message, argument = (text(f) for f in fields)
    cls = _ERRORS.get(name, KeyHsmError)
    if cls is ObjectKeyDestroyed:
        exc: KeyHsmError = ObjectKeyDestroyed(argument)
    elif cls is KekRevoked:
        exc = KekRevoked(argument)
    elif cls is KekNotFound:
        exc = KekNotFound(argument, message)
    elif cls is KekExists:
        exc = KekExists(argument)
    else:
        exc = cls(message)
    if str(exc) != message:  # a subclass whose wording changed: the service's message wins
        exc.args = (message,)
    return exc
