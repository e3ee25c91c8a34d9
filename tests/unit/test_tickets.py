"""Shared TLS session-ticket keys (server/tickets.py): same secret and period -> same key in every
process; keys change with the period; the key really lands in OpenSSL."""

from __future__ import annotations

import ctypes
import ssl

import pytest

from kmip_bridge.server import tickets


def test_key_is_a_function_of_secret_and_period() -> None:
    a, b = tickets.TicketKeys(b"s" * 32, 60), tickets.TicketKeys(b"s" * 32, 60)
    assert a.key(5) == b.key(5) and len(a.key(5)) == 80
    assert a.key(5) != a.key(6)
    assert tickets.TicketKeys(b"t" * 32, 60).key(5) != a.key(5)
    assert a.epoch(119.9) == 1 and a.epoch(120.0) == 2
    assert a.key(5, b"crl-1") != a.key(5, b"crl-2")  # a new CRL ends earlier sessions
    with pytest.raises(ValueError):
        tickets.TicketKeys(b"short")


def test_apply_installs_the_key_in_openssl() -> None:
    keys = tickets.TicketKeys(b"k" * 32, 60)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert keys.apply(ctx, epoch=7)
    lib = tickets._libssl()
    assert lib is not None
    ptr = tickets._ssl_ctx(ctx, lib)
    buf = ctypes.create_string_buffer(80)
    assert lib.SSL_CTX_ctrl(ptr, 58, 80, buf) == 1  # SSL_CTRL_GET_TLSEXT_TICKET_KEYS
    assert buf.raw == keys.key(7)


def test_foreign_object_is_never_written() -> None:
    lib = tickets._libssl()
    assert lib is not None
    assert tickets._ssl_ctx(object(), lib) is None  # type: ignore[arg-type]
