"""The database writer process: one process owns the hot write transactions of every worker.

The workers' hot writes (a new object's rows, the Fresh flip) are data: a list of
``(sql, parameters, executemany?)`` (store/hot.py). With ``database.writer: process`` a worker
sends that list over a Unix socket to this process instead of committing it itself; the writer
runs what all workers sent meanwhile in one transaction (writes.GroupCommit: one write lock, one
``fsync``) and answers each sender once its write is durable. The commit then no longer runs in a
worker, where its leader competed for the GIL with the worker's TLS, TTLV and token work after
every blocking call, and two workers no longer take turns at SQLite's write lock with half-full
groups each.

Wire format, both ways: a 4-byte big-endian length, then a ``marshal`` payload (plain tuples,
strings, bytes, numbers: nothing that runs code on load). Request: a list of statements. Answer:
``("ok",)`` or ``("error", kind, message, connection_lost, database_wide)`` with the store's own
error classes and their safe messages (store.py ``_describe``: no SQL, no values).

The writer runs the SQL it is sent, so only the server's own user may send it (who can open the
database anyway). The socket is 0600 in the instance, and each side checks that the other runs
as its own user (``SO_PEERCRED``). A path longer than a Unix socket address allows (107 bytes:
deep instance folders) becomes a Linux abstract address named by the path's hash; there the two
uid checks are what keeps other users out (another user could only squat the name: the server
then refuses to start, or its workers write in-process). A worker that cannot reach the writer
(not started yet, restarting after a crash) writes in-process as before, behind the same
cross-process write lock, so the writer is never the only way to the database.
"""

from __future__ import annotations

import hashlib
import logging
import marshal
import os
import select
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .store import ConcurrentUpdate, Statement, Store, StoreError, StoreUnavailable
from .writes import MAX_GROUP

log = logging.getLogger("kmip_bridge.store.writer")

_LENGTH = struct.Struct(">I")
_MAX_PATH = 107  # bytes of a Unix socket path (sun_path, less its NUL)
# A hot write is one object's rows: far below this. A bigger frame is a broken or foreign peer.
MAX_FRAME = 16 * 1024 * 1024
_ERRORS: dict[str, type[StoreError]] = {
    cls.__name__: cls for cls in (StoreError, StoreUnavailable, ConcurrentUpdate)
}


class WriterGone(StoreUnavailable):
    """The writer took the write but stopped before confirming it: it may or may not be committed."""


def send_frame(sock: socket.socket, payload: Any) -> None:
    data = marshal.dumps(payload)
    sock.sendall(_LENGTH.pack(len(data)) + data)


def recv_frame(sock: socket.socket) -> Any:
    """The next frame's payload (a worker reading its answer); EOFError at the end of stream."""
    (length,) = _LENGTH.unpack(_recv_exactly(sock, _LENGTH.size))
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes")
    return marshal.loads(_recv_exactly(sock, length))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _valid(request: Any) -> bool:
    return isinstance(request, list) and all(
        isinstance(s, tuple) and len(s) == 3 and isinstance(s[0], str) and isinstance(s[2], bool) for s in request
    )


class _Peer:
    """One worker thread's connection and the bytes of its next request read so far."""

    __slots__ = ("buffer", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def frames(self) -> list[Any]:
        """The complete requests in the buffer (at most one in practice: a worker thread waits
        for each answer). ValueError for an oversized, undecodable or malformed one."""
        out = []
        while len(self.buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self.buffer)
            if length > MAX_FRAME:
                raise ValueError(f"frame of {length} bytes")
            if len(self.buffer) < _LENGTH.size + length:
                break
            data = bytes(self.buffer[_LENGTH.size : _LENGTH.size + length])
            del self.buffer[: _LENGTH.size + length]
            try:
                request = marshal.loads(data)
            except (EOFError, TypeError) as exc:
                raise ValueError("undecodable frame") from exc
            if not _valid(request):
                raise ValueError("not a list of statements")
            out.append(request)
        return out


class WriterService:
    """Serves the write socket at ``path`` for ``store`` on one thread: it reads every request
    that arrived while the last transaction ran, runs them all in the next one (one write lock,
    one ``fsync``), then answers each. No lock hand-offs, no thread per peer."""

    def __init__(self, store: Store, path: str) -> None:
        self._store = store
        self._path = path
        self._listener = _bind(path)
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._stopping = threading.Event()

    def serve_forever(self) -> None:
        try:
            while not self._stopping.is_set():
                pending: list[tuple[_Peer, Any]] = []
                for key, _ in self._selector.select(0.2):  # 0.2 s: to see stop() without a wake-up pipe
                    if key.data is None:
                        self._accept()
                    else:
                        pending += self._read(key.data)
                # In groups of at most MAX_GROUP, as in-process: a bound on the lock's hold and
                # on what one failed transaction costs to retry write by write.
                for start in range(0, len(pending), MAX_GROUP):
                    self._run(pending[start : start + MAX_GROUP])
        finally:
            for key in list(self._selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            self._selector.close()
            if address(self._path) == self._path:
                try:
                    os.unlink(self._path)
                except FileNotFoundError:
                    pass

    def stop(self) -> None:
        self._stopping.set()

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        if not _same_user(sock):
            log.error("database writer: refused a peer of another user")
            sock.close()
            return
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ, _Peer(sock))

    def _read(self, peer: _Peer) -> list[tuple[_Peer, Any]]:
        try:
            data = peer.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:  # the worker thread's end (its worker stopped), or a reset
            self._drop(peer)
            return []
        peer.buffer += data
        try:
            return [(peer, request) for request in peer.frames()]
        except ValueError as exc:
            log.error("database writer: dropped a connection that sent a malformed request", extra={"reason": str(exc)})
            self._drop(peer)
            return []

    def _run(self, pending: list[tuple[_Peer, Any]]) -> None:
        try:
            errors = self._store.write_together([request for _, request in pending])
        except Exception as exc:  # noqa: BLE001 - every sender is answered; the writer goes on
            # The kind only: a driver's message can quote the statement's values.
            log.error("database writer: a write failed unexpectedly", extra={"reason": type(exc).__name__})
            errors = [StoreError(f"database write failed ({type(exc).__name__})")] * len(pending)
        for (peer, _), error in zip(pending, errors, strict=True):
            answer: tuple[Any, ...] = ("ok",) if error is None else _error_answer(error)
            data = marshal.dumps(answer)
            try:
                # A few bytes into a socket whose reader waits for exactly them: never blocks.
                peer.sock.sendall(_LENGTH.pack(len(data)) + data)
            except OSError:
                self._drop(peer)

    def _drop(self, peer: _Peer) -> None:
        try:
            self._selector.unregister(peer.sock)
        except (KeyError, ValueError):
            pass  # already dropped in this round
        peer.sock.close()


def _error_answer(error: BaseException) -> tuple[Any, ...]:
    if not isinstance(error, StoreError):
        # Not the store's own (which carry safe messages): name the kind only.
        error = StoreError(f"database write failed ({type(error).__name__})")
    return ("error", type(error).__name__, str(error), bool(getattr(error, "connection_lost", False)),
            bool(getattr(error, "database_wide", False)))


def address(path: str) -> str:
    """The socket address for ``path``: the path itself when it fits, else an abstract name."""
    if len(os.fsencode(path)) <= _MAX_PATH:
        return path
    return "\0kmip-bridge-db-writer-" + hashlib.sha256(os.fsencode(os.path.abspath(path))).hexdigest()[:32]


def _bind(path: str) -> socket.socket:
    """Listens on ``path``; refuses when a live writer already serves it (two servers sharing
    one instance), replaces a stale socket file left by a crash."""
    where = address(path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(where)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    else:
        raise RuntimeError(f"database.writer_socket {path}: another server's writer is running on it")
    finally:
        probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if where == path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        old = os.umask(0o177)  # 0600 from the start, not chmod after bind
        try:
            listener.bind(path)
        finally:
            os.umask(old)
    else:
        listener.bind(where)
    listener.listen(256)
    return listener


def _same_user(conn: socket.socket) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


class WriterClient:
    """A worker's side: one connection per thread (a handler thread waits for its own answer,
    with no hand-off inside the worker)."""

    def __init__(self, path: str, timeout: float) -> None:
        self._path = path
        self._timeout = timeout
        self._local = threading.local()

    def write(self, statements: Sequence[Statement]) -> bool:
        """Runs ``statements`` in the writer's next group commit. False when the writer cannot
        be reached (nothing was sent: the caller writes in-process); raises the store's error
        when the write failed or its outcome is unknown."""
        sock = self._connection()
        if sock is None:
            return False
        try:
            send_frame(sock, list(statements))
        except OSError:
            self._drop()
            return False  # not taken: a frame cut short is never run
        try:
            answer = recv_frame(sock)
        except (OSError, EOFError, ValueError) as exc:
            self._drop()
            raise WriterGone("database writer stopped before confirming the write") from exc
        if answer[0] == "ok":
            return True
        _, kind, message, connection_lost, database_wide = answer
        error = _ERRORS.get(kind, StoreError)(message)
        error.connection_lost, error.database_wide = connection_lost, database_wide  # type: ignore[attr-defined]
        raise error

    def close(self) -> None:
        self._drop()

    def _connection(self) -> socket.socket | None:
        sock: socket.socket | None = getattr(self._local, "sock", None)
        if sock is not None and _closed_by_peer(sock):
            self._drop()
            sock = None
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self._timeout)
            try:
                sock.connect(address(self._path))
            except OSError:
                sock.close()
                return None
            if not _same_user(sock):
                # Not our writer (a squatted abstract name): never hand it a write.
                log.error("database writer socket is served by another user; writing in-process")
                sock.close()
                return None
            self._local.sock = sock
        return sock

    def _drop(self) -> None:
        sock = getattr(self._local, "sock", None)
        self._local.sock = None
        if sock is not None:
            sock.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    """The writer never speaks first: a socket readable now holds its end of stream (a restart).
    (poll, not recv(MSG_DONTWAIT): a socket with a timeout waits for readability before recv.)"""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def run(store_factory: Callable[[], Store], path: str, report: Callable[[str], None],
        stop_on: Callable[[Callable[[], None]], None]) -> int:
    """The writer process's body: opens the store, binds, says ready, serves until stopped."""
    try:
        store = store_factory()
        store.ping()
        service = WriterService(store, path)
    except Exception as exc:  # noqa: BLE001 - reported to the master, which refuses to start
        report(f"error: database writer: {exc}")
        return 1
    stop_on(service.stop)
    report("ok")
    log.info("database writer ready", extra={"pid": os.getpid(), "socket": path})
    try:
        service.serve_forever()
    finally:
        store.close()
    return 0
