"""A worker process: accepts connections from the shared listener and serves each on a thread.

Threads suit the work: most of a request's time is spent in the PKCS#11 module, the database
driver and OpenSSL, all of which release the GIL. Several workers use several cores.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable

from .. import logs, metrics
from .connection import Application, Limits, handshake, serve_tls

log = logging.getLogger("kmip_bridge.server")
FULL_WORKER_GRACE = 0.05  # seconds a worker at its connection limit leaves a new connection to others


class InFlightCounter:
    """Counts requests being processed so that shutdown can wait for them."""

    def __init__(self) -> None:
        self._n = 0
        self._cond = threading.Condition()

    def __enter__(self) -> InFlightCounter:
        with self._cond:
            self._n += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._n -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._n == 0, timeout)


class Slots:
    """Established connections of this worker: a slot is taken once the TLS handshake is done."""

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._lock = threading.Lock()

    def free(self) -> int:
        return self._free

    def try_acquire(self) -> bool:
        with self._lock:
            if self._free <= 0:
                return False
            self._free -= 1
            return True

    def release(self) -> None:
        with self._lock:
            self._free += 1


class HandshakeGate:
    """Connections between TCP accept and the end of their TLS handshake (bounded in time by
    handshake_timeout): at most ``total`` in this worker and ``per_ip`` from one peer address, so
    that silent or slow sockets hold neither a connection slot nor the whole handshake pool."""

    def __init__(self, total: int, per_ip: int) -> None:
        self._total, self._per_ip = total, per_ip
        self._pending: dict[str, int] = {}
        self._n = 0
        self._lock = threading.Lock()

    def has_room(self) -> bool:
        return self._n < self._total

    def enter(self, ip: str) -> str | None:
        """None when admitted, else why not."""
        with self._lock:
            if self._n >= self._total:
                return "handshake limit reached; refusing"
            if self._pending.get(ip, 0) >= self._per_ip:
                return "handshake limit per address reached; refusing"
            self._n += 1
            self._pending[ip] = self._pending.get(ip, 0) + 1
            return None

    def leave(self, ip: str) -> None:
        with self._lock:
            self._n -= 1
            left = self._pending[ip] - 1
            if left:
                self._pending[ip] = left
            else:
                del self._pending[ip]


def _reload(app: Application) -> None:
    reload = getattr(app, "reload", None)
    if reload is None:
        return
    try:
        reload()
        log.info("reloaded")
    except Exception as exc:  # noqa: BLE001 - a bad reload keeps the old configuration
        log.error("reload failed; keeping the previous configuration", extra={"error": str(exc)})


def run_worker(
    listener: socket.socket,
    tls_factory: Callable[[], ssl.SSLContext],
    app_factory: Callable[[], Application],
    limits: Limits,
    max_connections: int,
    drain_timeout: float,
    report: Callable[[str], None],
    rotation: Callable[[], int] | None = None,
    max_handshakes: int = 64,
    max_handshakes_per_ip: int = 16,
) -> int:
    """``rotation``: the current session-ticket key period; when it changes the TLS context is
    made again (``tls_factory`` installs the new period's key), as on SIGHUP."""
    try:
        app = app_factory()
    except Exception as exc:  # noqa: BLE001 - reported to the master, which refuses to start
        report(f"error: {exc}")
        return 3
    tls = [tls_factory()]  # replaced as a whole on SIGHUP; a connection keeps the one it started with
    report("ok")
    stopping = threading.Event()
    reload_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGHUP, lambda *_: reload_requested.set())
    slots = Slots(max_connections)
    gate = HandshakeGate(max_handshakes, max_handshakes_per_ip)
    in_flight = InFlightCounter()
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)

    def connection(sock: socket.socket, peer: str, ip: str) -> None:
        with logs.connection_scope():  # every line about this connection carries its id
            try:
                conn = handshake(sock, peer, tls[0], limits.handshake_timeout)
            finally:
                gate.leave(ip)
            if conn is None:
                return
            if not slots.try_acquire():  # others finished their handshakes first
                log.warning("connection limit reached; refusing", extra={"peer": peer})
                conn.close()
                return
            metrics.connection_opened()
            try:
                serve_tls(conn, peer, app, limits, in_flight)
            finally:
                metrics.connection_closed()
                slots.release()

    def room() -> bool:
        return slots.free() > 0 and gate.has_room()

    period = rotation() if rotation is not None else None
    while not stopping.is_set():
        rotate = rotation is not None and rotation() != period
        if reload_requested.is_set() or rotate:
            if reload_requested.is_set():
                reload_requested.clear()
                _reload(app)
            period = rotation() if rotation is not None else None
            try:
                tls[0] = tls_factory()
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                log.error("TLS reload failed; keeping the previous certificates", extra={"error": str(exc)})
        if not sel.select(timeout=0.5):
            continue
        # Workers race for each connection. A worker without room (every connection slot taken,
        # or its handshake pool full) leaves the connection to one with room for a moment; if it
        # is still waiting after that (every worker full), it is refused before the handshake.
        have_room = room()
        if not have_room:
            time.sleep(FULL_WORKER_GRACE)
            have_room = room()
        try:
            sock, addr = listener.accept()
        except (BlockingIOError, InterruptedError):
            continue  # another worker took it
        except OSError as exc:
            log.warning("accept failed", extra={"error": str(exc)})
            time.sleep(0.05)
            continue
        peer, ip = f"{addr[0]}:{addr[1]}", str(addr[0])
        if have_room:
            refusal = gate.enter(ip)
        else:
            refusal = "connection limit reached; refusing" if slots.free() <= 0 else "handshake limit reached; refusing"
        if refusal is not None:
            log.warning(refusal, extra={"peer": peer})
            sock.close()
            continue
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            threading.Thread(target=connection, args=(sock, peer, ip), daemon=True).start()
        except RuntimeError:  # no thread to be had: the handshake slot goes back at once
            gate.leave(ip)
            sock.close()
            log.error("cannot start a connection thread; refusing", extra={"peer": peer})
    sel.close()
    listener.close()
    if not in_flight.wait_idle(drain_timeout):
        log.warning("drain timeout: requests still running at exit", extra={"pid": os.getpid()})
    close = getattr(app, "close", None)
    if close is not None:
        close()
    return 0
