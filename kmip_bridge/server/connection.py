"""One client connection on the worker's event loop: TLS handshake, then framed request/response
until the client leaves.

The socket is non-blocking and owned by the loop; waiting for it costs no thread. The handshake
has a deadline of its own (``handshake_timeout``, short): a connection that has not finished its
handshake holds only a handshake slot (server/worker.py), never a connection slot.

Framing is exact: an 8-byte TTLV header, then precisely the length it announces. A message
over the size limit is refused from its header alone, before its body is read. Between messages
a connection may sit idle for ``idle_timeout``; once a message's first byte arrives, the whole
message must arrive within ``read_timeout`` (a deadline, not a per-recv timeout, so a client
trickling bytes cannot hold the connection). Deadlines are loop timers: no ``settimeout`` per read.

The request itself (``Session.handle``: token and database calls) runs on the worker's small
handler pool (``Handlers``), so that concurrent writes still meet in one group commit
(store/writes.py) while the loop goes on reading and writing other connections.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from kmip.core.enums import ResultReason

from .. import logs
from ..protocol import messages, ttlv
from ..protocol.errors import KmipError

log = logging.getLogger("kmip_bridge.server")

READ_CHUNK = 65536  # one TLS read takes whatever has arrived, up to this (a whole request, usually)


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


class InFlight(Protocol):
    def __enter__(self) -> object: ...
    def __exit__(self, *exc: object) -> None: ...


class _Socket:
    """Waits for a non-blocking socket on the loop. The reader stays registered between waits
    (a request/response exchange then costs no epoll_ctl) and is dropped only when it fires with
    nobody waiting, e.g. while a request is being handled and the client sends more."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self._loop = loop
        self._fd = sock.fileno()
        self._waiter: asyncio.Future[None] | None = None
        self._for_write = False
        self._reading = False

    def _readable(self) -> None:
        waiter = self._waiter
        if waiter is None or self._for_write:
            self._loop.remove_reader(self._fd)  # level-triggered: it would fire on every turn
            self._reading = False
        elif not waiter.done():
            waiter.set_result(None)

    def _writable(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, write: bool, deadline: float | None) -> None:
        """Until the socket is readable (or writable); TimeoutError once ``deadline`` (loop time)
        has passed."""
        loop = self._loop
        if deadline is not None and loop.time() >= deadline:
            raise TimeoutError
        waiter = self._waiter = loop.create_future()
        self._for_write = write
        if write:
            loop.add_writer(self._fd, self._writable)
        elif not self._reading:
            loop.add_reader(self._fd, self._readable)
            self._reading = True
        timer = None if deadline is None else loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
            if write:
                loop.remove_writer(self._fd)

    def poke(self) -> None:
        """Ends the current wait early (a handler thread has news for the connection)."""
        self._writable()

    def close(self) -> None:
        if self._reading:
            self._loop.remove_reader(self._fd)
            self._reading = False


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


async def handshake(raw: socket.socket, peer: str, tls: ssl.SSLContext, timeout: float) -> ssl.SSLSocket | None:
    """The server side of the TLS handshake within ``timeout`` seconds in all (a deadline: a peer
    trickling handshake bytes cannot stretch it); the TLS socket, or None (closed, logged)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    conn: ssl.SSLSocket | None = None
    waits: _Socket | None = None
    try:
        raw.setblocking(False)
        conn = tls.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        waits = _Socket(loop, conn)
        while True:
            try:
                conn.do_handshake()
                return conn
            except ssl.SSLWantReadError:
                await waits.wait(False, deadline)
            except ssl.SSLWantWriteError:
                await waits.wait(True, deadline)
    except TimeoutError:
        log.info("handshake timed out", extra={"peer": peer, "timeout": timeout})
    except (ssl.SSLError, OSError) as exc:
        log.info("handshake refused", extra={"peer": peer, "error": str(exc)[:200]})
    finally:
        if waits is not None:
            waits.close()
    try:
        (conn or raw).close()
    except OSError:
        pass
    return None


class _Stream:
    """Buffered reads and whole writes on an established, non-blocking TLS socket."""

    def __init__(self, conn: ssl.SSLSocket, write_timeout: float) -> None:
        self._conn = conn
        self._waits = _Socket(asyncio.get_running_loop(), conn)
        self._write_timeout = write_timeout
        self.buf = bytearray()

    async def fill(self, deadline: float | None) -> None:
        """Appends what has arrived (at least one byte) to ``buf``."""
        while True:
            try:
                chunk = self._conn.recv(READ_CHUNK)
            except ssl.SSLWantReadError:
                await self._waits.wait(False, deadline)
                continue
            except ssl.SSLWantWriteError:
                await self._waits.wait(True, deadline)
                continue
            if not chunk:
                raise Closed()
            self.buf += chunk
            return

    async def readable(self, deadline: float, settled: bool) -> None:
        """Until bytes have arrived or ``poke``; reads nothing. ``settled``: no handler thread
        is using the TLS socket, so decrypted bytes OpenSSL already holds count."""
        if not (settled and self._conn.pending()):
            await self._waits.wait(False, deadline)

    def poke(self) -> None:
        self._waits.poke()

    async def read(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            await self.fill(deadline)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def write(self, data: bytes) -> None:
        """All of ``data``; TimeoutError if the peer takes none of it for ``write_timeout``."""
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            try:
                view = view[self._conn.send(view):]
                continue
            except ssl.SSLWantWriteError:
                write = True
            except ssl.SSLWantReadError:
                write = False
            await self._waits.wait(write, loop.time() + self._write_timeout)

    def close(self) -> None:
        self._waits.close()
        try:
            self._conn.close()
        except OSError:
            pass


class _Outcome(NamedTuple):
    """How a request ended on its handler thread, when the loop has something to do about it."""

    rest: bytes  # the part of the response the socket did not take at once: the loop sends it
    close: bool


def _answer(session: Session, data: bytes, conn: ssl.SSLSocket, peer: str, in_flight: InFlight,
            poke: Callable[[], None], answered: list[float]) -> _Outcome | None:
    """On a handler thread: handles one request and sends its answer. None when that is all; an
    _Outcome (after poking the loop) when the loop must finish the write or close. The loop does
    not touch the TLS socket until this has returned (one SSL object, one thread at a time), and
    is not woken at all in the usual case: the client's next request wakes it."""
    outcome: _Outcome | None = None
    try:
        try:
            response = session.handle(data)
        except ttlv.TtlvError as exc:
            log.info("malformed TTLV; closing", extra={"peer": peer, "error": str(exc)})
            outcome = _Outcome(b"", True)
            return outcome
        view = memoryview(response)
        try:
            while view:
                view = view[conn.send(view):]
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            outcome = _Outcome(bytes(view), False)  # a slow reader: the loop waits for it
        except (ssl.SSLError, OSError) as exc:
            log.info("connection error", extra={"peer": peer, "error": str(exc)[:200]})
            outcome = _Outcome(b"", True)
        return outcome
    except BaseException:
        log.exception("request failed", extra={"peer": peer})
        outcome = _Outcome(b"", True)
        return outcome
    finally:
        answered[0] = time.monotonic()
        if outcome is None or not outcome.rest:
            in_flight.__exit__(None, None, None)  # else once the loop has sent the rest
        if outcome is not None:
            try:
                poke()
            except RuntimeError:  # the loop is closed: the worker is exiting
                pass


async def serve_tls(conn: ssl.SSLSocket, peer: str, app: Application, limits: Limits, in_flight: InFlight,
                    pool: Executor) -> None:
    """Serves requests on an established TLS connection until the client leaves; closes it.
    Each request is handled and answered on ``pool`` (``_answer``) while the loop waits for the
    next one."""
    loop = asyncio.get_running_loop()
    stream = _Stream(conn, limits.read_timeout)
    job: Future[_Outcome | None] | None = None  # the request being handled, if any
    answered = [0.0]  # time.monotonic() when _answer last sent an answer

    def poke() -> None:
        loop.call_soon_threadsafe(stream.poke)

    async def settle() -> bool:
        """The finished job's loose ends; True: close the connection."""
        nonlocal job
        assert job is not None
        if not job.done():
            await asyncio.wrap_future(job)
        outcome, job = job.result(), None
        if outcome is None:
            return False
        if outcome.rest:
            try:
                await stream.write(outcome.rest)
            finally:
                in_flight.__exit__(None, None, None)
        return outcome.close

    try:
        der = conn.getpeercert(binary_form=True)
        if der is None:  # CERT_REQUIRED makes this unreachable; belt and braces
            return
        session = app.open_session(der, peer)
        while True:
            # A pipelined message already read: its predecessor is answered first (in order, and
            # the TLS socket is used by one thread at a time).
            if job is not None and stream.buf and await settle():
                return
            # Until the next message's first byte: at most idle_timeout after the last answer.
            idle = loop.time() + limits.idle_timeout
            while not stream.buf:
                try:
                    await stream.readable(idle, settled=job is None)
                except TimeoutError:
                    if job is None:
                        raise
                    if await settle():
                        return
                    idle = loop.time() + answered[0] + limits.idle_timeout - time.monotonic()
                    if idle <= loop.time():
                        raise
                    continue
                if job is not None:  # the answer must have gone out before the socket is read
                    if await settle():
                        return
                    idle = loop.time() + answered[0] + limits.idle_timeout - time.monotonic()
                # Readable is not yet a byte (a TLS record may carry none): still idle_timeout.
                await stream.fill(idle)
            # The message's first byte is here: the rest must follow within read_timeout.
            deadline = loop.time() + limits.read_timeout
            header = await stream.read(8, deadline)
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
                await stream.write(messages.error_response(None, error))
                log.info("oversized message refused", extra={"peer": peer, "size": length})
                return
            data = header + await stream.read(length, deadline)
            in_flight.__enter__()
            try:
                with logs.request_scope():  # the handler thread logs under this request's id too
                    job = pool.submit(contextvars.copy_context().run, _answer, session, data, conn, peer,
                                      in_flight, poke, answered)
            except BaseException:
                in_flight.__exit__(None, None, None)
                raise
    except Closed:
        pass
    except TimeoutError:
        log.info("connection timed out", extra={"peer": peer})
    except (ssl.SSLError, OSError) as exc:
        log.info("connection error", extra={"peer": peer, "error": str(exc)[:200]})
    finally:
        if job is not None and not job.done():  # cancelled at exit: the thread still holds the socket
            try:
                await asyncio.wrap_future(job)
            except BaseException:  # noqa: BLE001 - the worker is exiting
                pass
        stream.close()
