"""A worker process: one event loop owns the listener and every connection's socket; requests are
handled on a small pool of threads.

The loop does the TLS handshakes, the framing and the waiting (deadlines are loop timers), so an
idle or slow connection costs no thread and a request no thread hand-offs beyond the pool's. The
pool (``HANDLER_THREADS``) runs ``Session.handle``: the token and the database calls, most of whose
time is spent outside the GIL, and several at once so that concurrent writes share one group
commit (store/writes.py). Several workers use several cores.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .. import logs, metrics
from .connection import Application, Limits, handshake, serve_tls

log = logging.getLogger("kmip_bridge.server")
FULL_WORKER_GRACE = 0.05  # seconds a worker at its connection limit leaves a new connection to others
# Threads per worker handling requests (token and database calls), unless server.handler_threads
# says otherwise: as many as the database pool and the token session pool hold by default
# (database.pool_size, keyhsm.session_pool_size: 8).
HANDLER_THREADS = 8
ROTATION_CHECK = 0.5  # seconds between looks at the session-ticket key period


class InFlightCounter:
    """Counts requests being processed (read, not yet answered) so that shutdown can wait for
    them. Entered on the loop, left on the handler thread that sent the answer."""

    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()

    def __enter__(self) -> InFlightCounter:
        with self._lock:
            self._n += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._n -= 1

    async def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._n:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True


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
    handler_threads: int = HANDLER_THREADS,
) -> int:
    """``rotation``: the current session-ticket key period; when it changes the TLS context is
    made again (``tls_factory`` installs the new period's key), as on SIGHUP."""
    try:
        app = app_factory()
    except Exception as exc:  # noqa: BLE001 - reported to the master, which refuses to start
        report(f"error: {exc}")
        return 3
    try:
        tls = tls_factory()
    except Exception as exc:  # noqa: BLE001 - reported to the master, which refuses to start
        report(f"error: {exc}")
        return 3
    worker = _Worker(listener, tls, tls_factory, app, limits, max_connections, rotation,
                     max_handshakes, max_handshakes_per_ip, handler_threads)
    asyncio.run(worker.run(report, drain_timeout))
    close = getattr(app, "close", None)
    if close is not None:
        close()
    return 0


class _Worker:
    def __init__(self, listener: socket.socket, tls: ssl.SSLContext, tls_factory: Callable[[], ssl.SSLContext],
                 app: Application, limits: Limits, max_connections: int, rotation: Callable[[], int] | None,
                 max_handshakes: int, max_handshakes_per_ip: int, handler_threads: int = HANDLER_THREADS) -> None:
        self.listener, self.app, self.limits = listener, app, limits
        self.tls = tls  # replaced as a whole on SIGHUP; a connection keeps the one it started with
        self.tls_factory, self.rotation = tls_factory, rotation
        self.period = rotation() if rotation is not None else None
        self.slots = Slots(max_connections)
        self.gate = HandshakeGate(max_handshakes, max_handshakes_per_ip)
        self.in_flight = InFlightCounter()
        self.connections: set[asyncio.Task[None]] = set()
        self.stopping: asyncio.Event | None = None
        self.accepting = False
        self.pool = ThreadPoolExecutor(handler_threads, thread_name_prefix="handler")

    async def run(self, report: Callable[[str], None], drain_timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        self.listener.setblocking(False)
        self._accept_on()
        rotate = loop.call_later(ROTATION_CHECK, self._check_rotation) if self.rotation is not None else None
        report("ok")
        await self.stopping.wait()
        self._accept_off()
        self.listener.close()
        if rotate is not None:
            rotate.cancel()
        # Requests already read finish and are answered; connections between requests just close.
        if not await self.in_flight.wait_idle(drain_timeout):
            log.warning("drain timeout: requests still running at exit", extra={"pid": os.getpid()})
        # The rest are between requests (or past the drain timeout): closed as the worker exits.
        # (A task whose request is still running past the drain timeout waits for its handler
        # thread, which holds the socket; asyncio.run's final cancel ends that wait.)
        tasks = list(self.connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        self.pool.shutdown(wait=False, cancel_futures=True)

    # --- accepting -------------------------------------------------------------------------------

    def _accept_on(self) -> None:
        if not self.accepting and not self.stopping.is_set():  # type: ignore[union-attr]
            asyncio.get_running_loop().add_reader(self.listener.fileno(), self._on_listener)
            self.accepting = True

    def _accept_off(self) -> None:
        if self.accepting:
            asyncio.get_running_loop().remove_reader(self.listener.fileno())
            self.accepting = False

    def _room(self) -> bool:
        return self.slots.free() > 0 and self.gate.has_room()

    def _on_listener(self) -> None:
        # Workers race for each connection. A worker without room (every connection slot taken,
        # or its handshake pool full) leaves the connection to one with room for a moment; if it
        # is still waiting after that (every worker full), it is refused before the handshake.
        if self._room():
            self._accept(True)
            return
        self._accept_off()
        asyncio.get_running_loop().call_later(FULL_WORKER_GRACE, self._accept_late)

    def _accept_late(self) -> None:
        if self.stopping.is_set():  # type: ignore[union-attr]
            return
        self._accept(self._room())
        self._accept_on()

    def _accept(self, have_room: bool) -> None:
        try:
            sock, addr = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return  # another worker took it
        except OSError as exc:
            log.warning("accept failed", extra={"error": str(exc)})
            self._accept_off()  # e.g. out of file descriptors: look again shortly
            asyncio.get_running_loop().call_later(0.05, self._accept_on)
            return
        peer, ip = f"{addr[0]}:{addr[1]}", str(addr[0])
        if have_room:
            refusal = self.gate.enter(ip)
        else:
            refusal = ("connection limit reached; refusing" if self.slots.free() <= 0
                       else "handshake limit reached; refusing")
        if refusal is not None:
            log.warning(refusal, extra={"peer": peer})
            sock.close()
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = asyncio.get_running_loop().create_task(self._connection(sock, peer, ip))
        self.connections.add(task)
        task.add_done_callback(self.connections.discard)

    async def _connection(self, sock: socket.socket, peer: str, ip: str) -> None:
        with logs.connection_scope():  # every line about this connection carries its id
            try:
                conn = await handshake(sock, peer, self.tls, self.limits.handshake_timeout)
            finally:
                self.gate.leave(ip)
            if conn is None:
                return
            if not self.slots.try_acquire():  # others finished their handshakes first
                log.warning("connection limit reached; refusing", extra={"peer": peer})
                conn.close()
                return
            metrics.connection_opened()
            try:
                await serve_tls(conn, peer, self.app, self.limits, self.in_flight, self.pool)
            except Exception:  # one connection's failure is not the worker's
                log.exception("connection failed", extra={"peer": peer})
            finally:
                metrics.connection_closed()
                self.slots.release()

    # --- reload ----------------------------------------------------------------------------------

    def _reload(self) -> None:
        _reload(self.app)
        self._new_tls()

    def _check_rotation(self) -> None:
        assert self.rotation is not None
        if self.stopping is None or self.stopping.is_set():
            return
        if self.rotation() != self.period:
            self._new_tls()
        asyncio.get_running_loop().call_later(ROTATION_CHECK, self._check_rotation)

    def _new_tls(self) -> None:
        self.period = self.rotation() if self.rotation is not None else None
        try:
            self.tls = self.tls_factory()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.error("TLS reload failed; keeping the previous certificates", extra={"error": str(exc)})
