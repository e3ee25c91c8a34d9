"""TLS session-ticket keys shared by every worker, so a client resumes its session whichever
worker its reconnect lands on (each OpenSSL context otherwise makes its own random keys).

The master draws one random secret before it forks; each worker derives the ticket key of the
current period from it (HMAC-SHA256), so all workers hold the same key without talking to each
other, and the key changes every ``period`` seconds without anyone sending a new one. A ticket made
under the previous key is not accepted after a rotation: that client does one full handshake.
The key also depends on the context's certificates and CRL, so a SIGHUP that loads a new CRL
ends resumption of every earlier session: a revoked client must handshake again, and is refused.

Python's ``ssl`` has no call for ticket keys. OpenSSL has (``SSL_CTX_ctrl`` with
``SSL_CTRL_SET_TLSEXT_TICKET_KEYS``); it is reached with ctypes through the very libssl the
``_ssl`` module is linked to, on the ``SSL_CTX*`` that CPython keeps as the first field after the
object header of an ``SSLContext``. That pointer is trusted only after OpenSSL, asked for that
context's options, answers exactly what Python reports; otherwise nothing is touched and the
worker keeps its own keys (resumption then works on the same worker only, as before).
"""

from __future__ import annotations

import _ssl
import ctypes
import hashlib
import hmac
import logging
import platform
import ssl
import time

log = logging.getLogger("kmip_bridge.server")

_SET_TICKET_KEYS = 59  # SSL_CTRL_SET_TLSEXT_TICKET_KEYS (openssl/ssl.h, 1.1.0 to 3.x)
_KEYS_LEN = 80  # key name 16 + HMAC key 32 + AES key 32 (OpenSSL >= 1.1.0)
DEFAULT_PERIOD = 3600.0

_lib: ctypes.CDLL | None = None


def _libssl() -> ctypes.CDLL | None:
    global _lib
    if _lib is None:
        if platform.python_implementation() != "CPython" or ssl.OPENSSL_VERSION_INFO < (1, 1, 0):
            return None
        lib = ctypes.CDLL(_ssl.__file__)  # dlsym through it finds the libssl it was linked with
        lib.SSL_CTX_get_options.restype = ctypes.c_uint64
        lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_ctrl.restype = ctypes.c_long
        lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        _lib = lib
    return _lib


def _ssl_ctx(ctx: ssl.SSLContext, lib: ctypes.CDLL) -> int | None:
    """The context's SSL_CTX*, or None when the layout is not the one expected."""
    if not isinstance(ctx, _ssl._SSLContext) or type(ctx).__basicsize__ < object.__basicsize__ + 8:
        return None
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ptr:
        return None
    # A second, independent reading of one field must agree before anything is written.
    before = ctx.options
    if lib.SSL_CTX_get_options(ptr) != int(before):
        return None
    return ptr


class TicketKeys:
    """The shared secret (drawn in the master) and the rotation period."""

    def __init__(self, secret: bytes, period: float = DEFAULT_PERIOD) -> None:
        if len(secret) < 32:
            raise ValueError("ticket key secret must be at least 32 bytes")
        self._secret = secret
        self.period = period

    def epoch(self, now: float | None = None) -> int:
        return int((time.time() if now is None else now) // self.period)

    def key(self, epoch: int, salt: bytes = b"") -> bytes:
        """``salt``: the context's TLS material (tls.material_digest): new certificates or a new
        CRL give new keys, so sessions resumed under the old ones end."""
        def part(label: bytes) -> bytes:
            data = label + epoch.to_bytes(8, "big") + hashlib.sha256(salt).digest()
            return hmac.new(self._secret, data, hashlib.sha256).digest()

        name, mac, aes = (part(b"kmip-bridge ticket " + label) for label in (b"name", b"hmac", b"aes"))
        return name[:16] + mac + aes

    def apply(self, ctx: ssl.SSLContext, epoch: int | None = None) -> bool:
        """Installs the key of ``epoch`` (default: now) in ``ctx``; False if it could not."""
        lib = _libssl()
        ptr = _ssl_ctx(ctx, lib) if lib is not None else None
        if lib is None or ptr is None:
            log.warning("TLS session tickets: cannot share keys across workers on this Python/OpenSSL; "
                        "a resumed session then needs the same worker")
            return False
        salt = getattr(ctx, "material_digest", b"")
        buf = ctypes.create_string_buffer(self.key(self.epoch() if epoch is None else epoch, salt), _KEYS_LEN)
        ok = lib.SSL_CTX_ctrl(ptr, _SET_TICKET_KEYS, _KEYS_LEN, buf) == 1
        ctypes.memset(buf, 0, _KEYS_LEN)
        return ok
