"""One client connection: TLS handshake, then framed request/response until the client leaves.

The handshake has a deadline of its own (``handshake_timeout``, short): a connection that has not
finished its handshake holds only a handshake slot (server/worker.py), never a connection slot.

Framing is exact: an 8-byte TTLV header, then precisely the length it announces. A message
over the size limit is refused from its header alone, before its body is read. Between messages
a connection may sit idle for ``idle_timeout``; once a message's first byte arrives, the whole
message must arrive within ``read_timeout`` (a deadline, not a per-recv timeout, so a client
trickling bytes cannot hold a thread).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Protocol

from kmip.core.enums import ResultReason

from .. import logs
from ..protocol import messages, ttlv
from ..protocol.errors import KmipError

log = logging.getLogger("kmip_bridge.server")


class Session(Protocol):
    def handle(self, data: bytes) -> bytes: ...


class Application(Protocol):
    """What the server runs: built once per worker process by the composition root."""

    def open_session(self, peer_cert_der: bytes, peer: str) -> Session: ...


@dataclass(frozen=True)
class Limits:
    max_message_size: int
    idle_timeout: float
    read_timeout: float
    handshake_timeout: float = 10.0  # the whole TLS handshake, from accept


class Closed(Exception):
    pass


def _recv_exact(conn: ssl.SSLSocket, n: int, deadline: float | None = None) -> bytes:
    """Reads exactly n bytes; with a deadline (time.monotonic), raises TimeoutError once past it."""
    chunks = []
    while n:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("message read deadline passed")
            conn.settimeout(remaining)
        chunk = conn.recv(min(n, 65536))
        if not chunk:
            raise Closed()
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class InFlight(Protocol):
    def __enter__(self) -> object: ...
    def __exit__(self, *exc: object) -> None: ...


def serve_connection(
    raw: socket.socket,
    peer: str,
    tls: ssl.SSLContext,
    app: Application,
    limits: Limits,
    in_flight: InFlight,
) -> None:
    """Handshake and serve (a caller that needs to act between the two uses handshake() and
    serve_tls() inside its own logs.connection_scope())."""
    # Every line logged while serving this connection carries its id (logs.ContextFilter).
    with logs.connection_scope():
        conn = handshake(raw, peer, tls, limits.handshake_timeout)
        if conn is not None:
            serve_tls(conn, peer, app, limits, in_flight)


def handshake(raw: socket.socket, peer: str, tls: ssl.SSLContext, timeout: float) -> ssl.SSLSocket | None:
    """The server side of the TLS handshake within ``timeout`` seconds in all (a deadline: a peer
    trickling handshake bytes cannot stretch it); the TLS socket, or None (closed, logged)."""
    deadline = time.monotonic() + timeout
    conn: ssl.SSLSocket | None = None
    try:
        conn = tls.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        conn.setblocking(False)
        poller = select.poll()
        while True:
            try:
                conn.do_handshake()
                break
            except ssl.SSLWantReadError:
                events = select.POLLIN
            except ssl.SSLWantWriteError:
                events = select.POLLOUT
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            poller.register(conn, events)
            poller.poll(remaining * 1000)
            poller.unregister(conn)
        conn.setblocking(True)
        return conn
    except TimeoutError:
        log.info("handshake timed out", extra={"peer": peer, "timeout": timeout})
    except (ssl.SSLError, OSError) as exc:
        log.info("handshake refused", extra={"peer": peer, "error": str(exc)[:200]})
    try:
        (conn or raw).close()
    except OSError:
        pass
    return None


def serve_tls(conn: ssl.SSLSocket, peer: str, app: Application, limits: Limits, in_flight: InFlight) -> None:
    """Serves requests on an established TLS connection until the client leaves; closes it."""
    try:
        der = conn.getpeercert(binary_form=True)
        if der is None:  # CERT_REQUIRED makes this unreachable; belt and braces
            return
        session = app.open_session(der, peer)
        while True:
            conn.settimeout(limits.idle_timeout)
            first = _recv_exact(conn, 1)
            deadline = time.monotonic() + limits.read_timeout
            header = first + _recv_exact(conn, 7, deadline)
            conn.settimeout(limits.read_timeout)
            try:
                length = ttlv.message_length(header)
            except ttlv.TtlvError:
                log.info("not a KMIP message; closing", extra={"peer": peer})
                return
            if length > limits.max_message_size:
                error = KmipError(
                    ResultReason.INVALID_MESSAGE,
                    f"message of {length} bytes exceeds the limit of {limits.max_message_size}",
                )
                conn.sendall(messages.error_response(None, error))
                log.info("oversized message refused", extra={"peer": peer, "size": length})
                return
            body = _recv_exact(conn, length, deadline)
            conn.settimeout(limits.read_timeout)
            with in_flight, logs.request_scope():
                try:
                    response = session.handle(header + body)
                except ttlv.TtlvError as exc:
                    log.info("malformed TTLV; closing", extra={"peer": peer, "error": str(exc)})
                    return
                conn.sendall(response)
    except Closed:
        pass
    except TimeoutError:
        log.info("connection timed out", extra={"peer": peer})
    except (ssl.SSLError, OSError) as exc:
        log.info("connection error", extra={"peer": peer, "error": str(exc)[:200]})
    finally:
        try:
            conn.close()
        except OSError:
            pass
