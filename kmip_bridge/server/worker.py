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

from .. import metrics
from .connection import Application, Limits, serve_connection

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
    slots = threading.BoundedSemaphore(max_connections)
    in_flight = InFlightCounter()
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)

    def connection(sock: socket.socket, peer: str) -> None:
        metrics.connection_opened()
        try:
            serve_connection(sock, peer, tls[0], app, limits, in_flight)
        finally:
            metrics.connection_closed()
            slots.release()

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
        # Workers race for each connection. A worker at its limit leaves the connection to one with
        # room for a moment; if it is still waiting after that (every worker full), it is refused.
        have_slot = slots.acquire(blocking=False) or slots.acquire(timeout=FULL_WORKER_GRACE)
        try:
            sock, addr = listener.accept()
        except (BlockingIOError, InterruptedError):
            if have_slot:
                slots.release()
            continue  # another worker took it
        except OSError as exc:
            if have_slot:
                slots.release()
            log.warning("accept failed", extra={"error": str(exc)})
            time.sleep(0.05)
            continue
        peer = f"{addr[0]}:{addr[1]}"
        if not have_slot:
            log.warning("connection limit reached; refusing", extra={"peer": peer})
            sock.close()
            continue
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=connection, args=(sock, peer), daemon=True).start()
    sel.close()
    listener.close()
    if not in_flight.wait_idle(drain_timeout):
        log.warning("drain timeout: requests still running at exit", extra={"pid": os.getpid()})
    close = getattr(app, "close", None)
    if close is not None:
        close()
    return 0
