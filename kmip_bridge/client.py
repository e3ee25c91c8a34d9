"""A minimal raw KMIP client over mutual TLS, on our TTLV codec.

For tests, the benchmark's load generator and diagnostics: it sends exactly the messages it is
given (batches, ID placeholders, malformed bytes) where PyKMIP's client would not.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable
from pathlib import Path

from kmip.core.enums import Tags as T

from .protocol import ttlv
from .protocol.messages import protocol_version
from .protocol.ttlv import Item


def client_context(ca: Path, cert: Path | None, key: Path | None,
                   maximum_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # dev certificates name localhost; identity is the CA chain here
    ctx.load_verify_locations(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    if maximum_version is not None:
        ctx.maximum_version = maximum_version
    return ctx


def request(items: Iterable[tuple[int, Item | None]], version: tuple[int, int] = (1, 4),
            batch_error_option: int | None = None) -> Item:
    items = list(items)
    header = [protocol_version(version)]
    if batch_error_option is not None:
        header.append(ttlv.enum(T.BATCH_ERROR_CONTINUATION_OPTION, batch_error_option))
    header.append(ttlv.integer(T.BATCH_COUNT, len(items)))
    body = [ttlv.struct_(T.REQUEST_HEADER, header)]
    for op, payload in items:
        body.append(
            ttlv.struct_(
                T.BATCH_ITEM,
                [ttlv.enum(T.OPERATION, op), payload or ttlv.struct_(T.REQUEST_PAYLOAD, [])],
            )
        )
    return ttlv.struct_(T.REQUEST_MESSAGE, body)


class RawClient:
    def __init__(self, host: str, port: int, ctx: ssl.SSLContext, timeout: float = 30.0) -> None:
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw)

    def send_raw(self, data: bytes) -> bytes | None:
        """Sends bytes; returns one response message, or None if the server closed."""
        self.sock.sendall(data)
        return self.read_message()

    def read_message(self) -> bytes | None:
        header = self._recv(8)
        if header is None:
            return None
        body = self._recv(ttlv.message_length(header))
        return None if body is None else header + body

    def call(self, message: Item) -> Item:
        data = self.send_raw(ttlv.encode(message))
        if data is None:
            raise ConnectionError("server closed the connection")
        return ttlv.decode(data)

    def _recv(self, n: int) -> bytes | None:
        chunks = []
        while n:
            try:
                chunk = self.sock.recv(n)
            except (ConnectionResetError, ssl.SSLError):
                return None
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
