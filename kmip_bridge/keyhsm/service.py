"""The Key HSM as its own local service: one KeyHsm (one token login) shared by every KMIP worker
through a Unix socket (``kmip-bridge keyhsm serve``), so the network-facing processes never load
the PKCS#11 module nor read the token PIN.

The socket is created mode 0600; each connection's peer must also run as the service's uid
(SO_PEERCRED), as defence in depth. One thread per connection (clients keep a few persistent
connections each); KeyHsm is thread-safe and bounds token concurrency with its session pool.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import stat
import threading
from collections.abc import Sequence
from pathlib import Path

from . import wire
from .errors import KeyHsmError
from .hsm import KeyHsm

log = logging.getLogger("kmip_bridge.keyhsm.service")


class ServiceError(RuntimeError):
    pass


class KeyHsmService:
    def __init__(self, hsm: KeyHsm, path: Path | str, allowed_uid: int | None = None) -> None:
        self.hsm = hsm
        self.path = Path(path)
        self.allowed_uid = os.getuid() if allowed_uid is None else allowed_uid
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._busy = 0
        self._idle = threading.Condition()

    # -- life cycle ---------------------------------------------------------------------------------

    def bind(self) -> None:
        """Creates the socket (0600). Refuses when another service listens on the path."""
        path = self.path
        if os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise ServiceError(f"{path} exists and is not a socket; remove it or set keyhsm.socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                os.unlink(path)  # left behind by a service that did not exit cleanly
            else:
                raise ServiceError(f"another key HSM service is already listening on {path}")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # born 0600: no window in which others may connect
        try:
            sock.bind(str(path))
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._inode = os.stat(path).st_ino
        sock.listen(128)
        sock.settimeout(0.5)
        self._listener = sock

    def serve_forever(self) -> None:
        """Accepts connections until stop(); each is served on its own thread."""
        if self._listener is None:
            self.bind()
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    break
                log.warning("accept failed", extra={"error": str(exc)})
                continue
            conn.settimeout(None)
            with self._conns_lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def close(self, drain_timeout: float = 10.0) -> None:
        """Stops accepting, waits for requests in progress, disconnects clients. The KeyHsm is the
        caller's to close."""
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            try:
                if os.stat(self.path).st_ino == self._inode:
                    os.unlink(self.path)
            except FileNotFoundError:
                pass
        with self._idle:
            if not self._idle.wait_for(lambda: self._busy == 0, drain_timeout):
                log.warning("drain timeout: key HSM requests still running")
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- connections ----------------------------------------------------------------------------------

    def _serve_connection(self, conn: socket.socket) -> None:
        try:
            pid, uid, _ = wire.peer_credentials(conn)
            if uid != self.allowed_uid:
                log.warning("key HSM client refused: wrong uid", extra={"peer_uid": uid, "peer_pid": pid})
                return
            while not self._stop.is_set():
                try:
                    body = wire.read_frame(conn)
                except wire.Closed:
                    return
                with self._idle:
                    self._busy += 1
                try:
                    reply = self._dispatch(pid, *wire.unpack(body))
                finally:
                    with self._idle:
                        self._busy -= 1
                        self._idle.notify_all()
                conn.sendall(reply)
        except wire.ProtocolError as exc:
            log.warning("key HSM client broke the protocol; disconnected", extra={"error": str(exc)})
        except OSError:
            pass  # the client went away
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            conn.close()

    def _dispatch(self, pid: int, op: int, fields: list[bytes]) -> bytes:
        try:
            return wire.pack(wire.OK, self._run(pid, op, fields))
        except KeyHsmError as exc:
            return wire.pack(wire.ERROR, wire.error_fields(exc))
        except wire.ProtocolError:
            raise
        except Exception:  # a bug must not take the service down
            log.exception("key HSM request failed", extra={"op": op})
            return wire.pack(wire.ERROR, wire.error_fields(KeyHsmError("internal error in the key HSM service")))

    def _run(self, pid: int, op: int, f: list[bytes]) -> list[bytes]:
        hsm, text = self.hsm, wire.text
        if op == wire.SEAL:
            _arity(f, 4)
            sealed = hsm.seal(text(f[0]), f[1], text(f[2]), kek_name=text(f[3]) or None)
            return wire.sealed_fields(sealed)
        if op == wire.OPEN:
            _arity(f, 9)
            return [hsm.open(text(f[0]), wire.sealed_from(f[2:]), text(f[1]))]
        if op == wire.REWRAP:
            _arity(f, 9)
            return wire.sealed_fields(hsm.rewrap(text(f[0]), wire.sealed_from(f[2:]), text(f[1])))
        if op == wire.DESTROY_OBJECT_KEY:
            _arity(f, 1)
            return [b"1" if hsm.destroy_object_key(text(f[0])) else b"0"]
        if op == wire.LIST_OBJECT_KEYS:
            _arity(f, 0)
            return [k.label.encode() for k in hsm.list_object_keys()]
        if op == wire.CURRENT_KEK:
            _arity(f, 1)
            return wire.kek_fields(hsm.current_kek(text(f[0]) or None))
        if op == wire.CHECK:
            _arity(f, 0)
            hsm.check()
            return []
        if op == wire.LIST_KEKS:
            _arity(f, 0)
            return [field for k in hsm.list_keks() for field in wire.kek_fields(k)]
        if op == wire.HELLO:
            if f != [wire.MAGIC]:
                raise wire.ProtocolError("unknown protocol version")
            return [wire.MAGIC]
        if op == wire.CREATE_KEK:
            _arity(f, 2)
            info = hsm.create_kek(text(f[0]), text(f[1]))
            log.info("KEK created", extra={"kek": info.label, "kind": info.kind, "peer_pid": pid})
            return wire.kek_fields(info)
        if op == wire.ROTATE_KEK:
            _arity(f, 1)
            info = hsm.rotate_kek(text(f[0]))
            log.info("KEK rotated", extra={"kek": info.label, "kind": info.kind, "peer_pid": pid})
            return wire.kek_fields(info)
        if op == wire.REVOKE_KEK:
            _arity(f, 1)
            labels = hsm.revoke_kek(text(f[0]))
            log.info("KEK revoked", extra={"keks": labels, "peer_pid": pid})
            return [label.encode() for label in labels]
        raise wire.ProtocolError(f"unknown operation {op}")


def _arity(fields: Sequence[bytes], n: int) -> None:
    if len(fields) != n:
        raise wire.ProtocolError(f"expected {n} fields, got {len(fields)}")


def run(hsm: KeyHsm, path: Path, drain_timeout: float = 10.0) -> int:
    """``kmip-bridge keyhsm serve``: serves until SIGTERM/SIGINT, then drains and exits 0."""
    service = KeyHsmService(hsm, path)
    service.bind()
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    signal.signal(signal.SIGINT, lambda *_: service.stop())
    log.info("keyhsm service ready", extra={"socket": str(path), "pid": os.getpid()})
    try:
        service.serve_forever()
    finally:
        log.info("keyhsm service stopping")
        service.close(drain_timeout)
    log.info("keyhsm service stopped")
    return 0
