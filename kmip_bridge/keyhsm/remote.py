"""RemoteKeyHsm: the KeyHsm methods the server uses, served by 'kmip-bridge keyhsm serve' over a
Unix socket. The process using it never loads the PKCS#11 module nor reads the token PIN.

A pool of persistent connections per process (one request at a time on each), so the threads of a
worker call the service concurrently. Failures raise the same KeyHsmError classes, with the same
messages, as the in-process KeyHsm; a service that cannot be reached is TokenUnavailable.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from . import per_object, wire
from .envelope import Sealed
from .errors import TokenUnavailable
from .kek import KekInfo

T = TypeVar("T")

POOL_WAIT_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 60.0


class _Connection:
    def __init__(self, path: Path, timeout: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(str(path))
            _, uid, _ = wire.peer_credentials(self.sock)
            if uid != os.getuid():
                # Not our service: never send it material.
                raise TokenUnavailable(f"the key HSM service socket {path} belongs to uid {uid}, not {os.getuid()}")
            status, fields = self.call(wire.HELLO, [wire.MAGIC])
            if status != wire.OK or fields != [wire.MAGIC]:
                raise TokenUnavailable(f"{path} does not speak {wire.MAGIC.decode()}")
        except BaseException:
            self.sock.close()
            raise

    def call(self, op: int, fields: Sequence[bytes]) -> tuple[int, list[bytes]]:
        return self.exchange(wire.pack(op, fields))

    def exchange(self, frame: bytes) -> tuple[int, list[bytes]]:
        self.sock.sendall(frame)
        return wire.unpack(wire.read_frame(self.sock))

    def close(self) -> None:
        self.sock.close()


class RemoteKeyHsm:
    def __init__(
        self,
        path: Path | str,
        kek_name: str,
        pool_size: int = 8,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self._path = Path(path)
        self._kek_name = kek_name
        self._timeout = timeout
        self._pool_size = max(1, pool_size)
        self._idle: queue.LifoQueue[_Connection] = queue.LifoQueue()
        self._count = 0
        self._count_lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> RemoteKeyHsm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the KeyHsm interface ---------------------------------------------------------------------

    def seal(self, object_id: str, material: bytes, context: str = "", kek_name: str | None = None) -> Sealed:
        fields = [object_id.encode(), material, context.encode(), (kek_name or self._kek_name).encode()]
        out = self._call(wire.SEAL, fields, retry=True)
        with self._answer():
            return wire.sealed_from(out)

    def open(self, object_id: str, sealed: Sealed, context: str = "") -> bytes:
        out = self._call(wire.OPEN, [object_id.encode(), context.encode(), *wire.sealed_fields(sealed)], retry=True)
        with self._answer():
            (material,) = _exactly(out, 1)
        return material

    def rewrap(self, object_id: str, sealed: Sealed, context: str = "") -> Sealed:
        out = self._call(wire.REWRAP, [object_id.encode(), context.encode(), *wire.sealed_fields(sealed)], retry=True)
        with self._answer():
            return wire.sealed_from(out)

    def current_kek(self, kek_name: str | None = None) -> KekInfo:
        return self._one_kek(self._call(wire.CURRENT_KEK, [(kek_name or self._kek_name).encode()], retry=True))

    def list_keks(self) -> list[KekInfo]:
        out = self._call(wire.LIST_KEKS, [], retry=True)
        with self._answer():
            return wire.keks_from(out)

    # Not idempotent: never re-sent after a lost connection.
    def create_kek(self, name: str, kind: str) -> KekInfo:
        return self._one_kek(self._call(wire.CREATE_KEK, [name.encode(), kind.encode()], retry=False))

    def rotate_kek(self, name: str) -> KekInfo:
        return self._one_kek(self._call(wire.ROTATE_KEK, [name.encode()], retry=False))

    def revoke_kek(self, label: str) -> list[str]:
        out = self._call(wire.REVOKE_KEK, [label.encode()], retry=False)
        with self._answer():
            return [wire.text(f) for f in out]

    def check(self) -> None:
        self._call(wire.CHECK, [], retry=True)

    def destroy_object_key(self, label: str) -> bool:
        out = self._call(wire.DESTROY_OBJECT_KEY, [label.encode()], retry=True)  # idempotent
        with self._answer():
            (done,) = _exactly(out, 1)
        return done == b"1"

    def list_object_keys(self) -> list[per_object.ObjectKeyLabel]:
        out = self._call(wire.LIST_OBJECT_KEYS, [], retry=True)
        with self._answer():
            parsed = [per_object.parse_label(wire.text(f)) for f in out]
            if None in parsed:
                raise wire.ProtocolError("not a per-object key label")
        return [p for p in parsed if p is not None]

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._discard(self._idle.get_nowait())
            except queue.Empty:
                break

    # -- connections -------------------------------------------------------------------------------

    def _protocol(self, why: str) -> TokenUnavailable:
        return TokenUnavailable(f"the key HSM service at {self._path} answered out of protocol: {why}")

    @contextmanager
    def _answer(self) -> Iterator[None]:
        try:
            yield
        except (wire.ProtocolError, ValueError) as exc:
            raise self._protocol(str(exc)) from None

    def _one_kek(self, out: list[bytes]) -> KekInfo:
        with self._answer():
            (kek,) = _exactly(wire.keks_from(out), 1)
        return kek

    def _call(self, op: int, fields: Sequence[bytes], retry: bool) -> list[bytes]:
        frame = wire.pack(op, fields)  # before taking a connection: may refuse an oversized request
        conn, reused = self._take()
        try:
            status, out = conn.exchange(frame)
        except TimeoutError:
            self._discard(conn)  # a late answer would be read by the next request
            raise TokenUnavailable(
                f"the key HSM service at {self._path} did not answer within {self._timeout:.0f} s"
            ) from None
        except (OSError, wire.ProtocolError) as exc:
            self._discard(conn)
            # A pooled connection may predate a restart of the service: one fresh attempt, for
            # requests that may safely run twice.
            if not (reused and retry and isinstance(exc, (wire.Closed, ConnectionError))):
                raise self._unreachable(exc) from None
            conn = self._connect()
            try:
                status, out = conn.exchange(frame)
            except (OSError, wire.ProtocolError) as again:
                self._discard(conn)
                raise self._unreachable(again) from None
            except BaseException:
                self._discard(conn)
                raise
        except BaseException:
            self._discard(conn)  # interrupted mid-exchange: the connection's state is unknown
            raise
        self._give_back(conn)
        if status == wire.OK:
            return out
        if status == wire.ERROR:
            try:
                raise wire.error_from(out)
            except wire.ProtocolError as exc:
                raise self._protocol(str(exc)) from None
        raise self._protocol(f"unknown status {status}")

    def _unreachable(self, exc: BaseException) -> TokenUnavailable:
        why = str(exc) if isinstance(exc, wire.ProtocolError) else type(exc).__name__
        return TokenUnavailable(
            f"the key HSM service at {self._path} is not reachable ({why}): is 'kmip-bridge keyhsm serve' running?"
        )

    def _take(self) -> tuple[_Connection, bool]:
        if self._closed:
            raise TokenUnavailable("the key HSM connection is closed")
        try:
            return self._idle.get_nowait(), True
        except queue.Empty:
            pass
        with self._count_lock:
            grow = self._count < self._pool_size
            if grow:
                self._count += 1
        if grow:
            try:
                return self._new(), False
            except BaseException:
                with self._count_lock:
                    self._count -= 1
                raise
        try:
            return self._idle.get(timeout=POOL_WAIT_SECONDS), True
        except queue.Empty:
            raise TokenUnavailable(
                f"all {self._pool_size} connections to the key HSM service stayed busy for {POOL_WAIT_SECONDS:.0f} s"
            ) from None

    def _connect(self) -> _Connection:
        """A replacement for a discarded connection (the count already includes it)."""
        with self._count_lock:
            self._count += 1
        try:
            return self._new()
        except BaseException:
            with self._count_lock:
                self._count -= 1
            raise

    def _new(self) -> _Connection:
        try:
            return _Connection(self._path, self._timeout)
        except (OSError, wire.ProtocolError) as exc:
            raise self._unreachable(exc) from None

    def _give_back(self, conn: _Connection) -> None:
        if self._closed:
            self._discard(conn)
        else:
            self._idle.put(conn)

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        with self._count_lock:
            self._count -= 1


def _exactly(items: list[T], n: int) -> list[T]:
    if len(items) != n:
        raise wire.ProtocolError(f"expected {n} item(s) in the answer, got {len(items)}")
    return items
