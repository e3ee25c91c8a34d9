"""The database writer process's protocol and group commit (kmip_bridge/store/writer.py), on a
real SQLite file and a real Unix socket; the service runs on a thread of the test process."""

from __future__ import annotations

import marshal
import os
import socket
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmip_bridge.store import migrate
from kmip_bridge.store.store import AttrRow, ObjectRow, Store, StoreUnavailable
from kmip_bridge.store.writer import WriterGone, WriterService


def _row(uid: str) -> ObjectRow:
    return ObjectRow(uid=uid, object_type=2, state=1, owner="alice", created_at=1, kek_label="kek",
                     kek_kind="aes", nonce=b"n" * 12, ciphertext=b"sealed", wrapped_dek=b"w" * 40, wrap_nonce=b"m")


def _attrs() -> list[AttrRow]:
    return [AttrRow("Name", b"\x01", 0, "key"), AttrRow("Cryptographic Length", b"\x02", 0, "256")]


class Writer:
    """A WriterService on a thread; restartable on the same socket path."""

    def __init__(self, url: str, path: str) -> None:
        self.url, self.path = url, path
        self.store = Store(url, 2)
        self.service: WriterService | None = None
        self.thread: threading.Thread | None = None
        self.writes = 0
        original = self.store.write_together

        def counted(writes):  # type: ignore[no-untyped-def]
            self.writes += len(writes)
            return original(writes)

        self.store.write_together = counted  # type: ignore[method-assign]

    def start(self) -> None:
        self.service = WriterService(self.store, self.path)
        self.thread = threading.Thread(target=self.service.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        assert self.service is not None and self.thread is not None
        self.service.stop()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/kb.db"
    store = Store(url, 1)
    migrate.upgrade(store.engine)
    store.close()
    return url


@pytest.fixture
def writer(db: str, tmp_path: Path) -> Iterator[Writer]:
    w = Writer(db, str(tmp_path / "w.sock"))
    w.start()
    yield w
    if w.thread is not None and w.thread.is_alive():
        w.stop()
    w.store.close()


def _in_process_forbidden(store: Store) -> None:
    """Makes the client store fail loudly if it committed a write itself instead of the writer."""
    def refuse(_fn):  # type: ignore[no-untyped-def]
        raise AssertionError("written in-process, not by the writer")

    store._group.run = refuse  # type: ignore[method-assign]


def _stored_uids(db: str) -> set[str]:
    # A connection of its own, outside the store: what is durable on disk.
    conn = sqlite3.connect(db.removeprefix("sqlite:///"))
    try:
        return {uid for (uid,) in conn.execute("SELECT uid FROM objects")}
    finally:
        conn.close()


def test_concurrent_writes_all_go_through_the_writer_and_are_committed(writer: Writer, db: str) -> None:
    client = Store(db, 4, writer=writer.path)
    _in_process_forbidden(client)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(40):
                client.insert_object(_row(f"t{t}-{i}"), _attrs())
                client.mark_served(f"t{t}-{i}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _stored_uids(db) == {f"t{t}-{i}" for t in range(8) for i in range(40)}
    assert writer.writes == 8 * 40 * 2
    loaded = client.load_object("t3-7")
    assert loaded is not None and loaded.fresh is False and loaded.ciphertext == b"sealed"
    assert [a.name for a in client.load_attributes("t3-7")] == ["Name", "Cryptographic Length"]
    client.close()


def test_a_write_is_durable_when_it_returns(writer: Writer, db: str) -> None:
    client = Store(db, 1, writer=writer.path)
    _in_process_forbidden(client)
    for i in range(20):
        client.insert_object(_row(f"d{i}"), [])
        assert f"d{i}" in _stored_uids(db)
    client.close()


def test_a_failing_write_fails_alone_and_the_error_reaches_its_sender(writer: Writer, db: str) -> None:
    client = Store(db, 2, writer=writer.path)
    _in_process_forbidden(client)
    client.insert_object(_row("dup"), [])
    with pytest.raises(StoreUnavailable, match="IntegrityError") as caught:
        client.insert_object(_row("dup"), [])
    assert "sealed" not in str(caught.value)  # no values in the message
    assert not isinstance(caught.value, WriterGone)
    # In one transaction with good writes: only the bad one fails.
    ok = [client.hot.insert_object, tuple(getattr(_row("good"), f) for f in ObjectRow.__dataclass_fields__), False]
    bad = [client.hot.insert_object, tuple(getattr(_row("dup"), f) for f in ObjectRow.__dataclass_fields__), False]
    errors = writer.store.write_together([[tuple(ok)], [tuple(bad)]])
    assert errors[0] is None and isinstance(errors[1], StoreUnavailable)
    assert {"dup", "good"} <= _stored_uids(db)
    client.close()


def test_without_a_writer_the_store_commits_in_process(db: str, tmp_path: Path) -> None:
    client = Store(db, 1, writer=str(tmp_path / "nobody-listens.sock"))
    client.insert_object(_row("alone"), [])
    assert "alone" in _stored_uids(db)
    client.close()


def test_a_restarted_writer_is_found_again_without_an_error(writer: Writer, db: str) -> None:
    client = Store(db, 1, writer=writer.path)
    client.insert_object(_row("before"), [])
    writer.stop()
    # Meanwhile: in-process (the cached connection is found closed, nothing is sent).
    client.insert_object(_row("between"), [])
    before = writer.writes
    writer.start()
    client.insert_object(_row("after"), [])
    assert writer.writes == before + 1
    assert {"before", "between", "after"} <= _stored_uids(db)
    client.close()


def test_an_answer_lost_is_an_error_not_a_silent_second_write(db: str, tmp_path: Path) -> None:
    """A writer that takes the write and dies before answering: the outcome is unknown, so the
    request fails (WriterGone) and the store does not write it again in-process."""
    path = str(tmp_path / "dies.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()

    def take_and_die() -> None:
        conn, _ = listener.accept()
        conn.recv(1 << 16)
        conn.close()

    t = threading.Thread(target=take_and_die)
    t.start()
    client = Store(db, 1, writer=path)
    with pytest.raises(WriterGone):
        client.insert_object(_row("unknown"), [])
    t.join()
    listener.close()
    assert "unknown" not in _stored_uids(db)
    client.close()


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


@pytest.mark.parametrize("garbage", [
    struct.pack(">I", 0xFFFFFFFF) + b"x",  # longer than any write
    _frame(b"\x00not marshal at all"),
    _frame(marshal.dumps({"sql": "DROP TABLE objects"})),  # well-formed, not a list of statements
    _frame(marshal.dumps([("DELETE FROM objects", (), "yes")])),  # executemany flag not a bool
])
def test_a_peer_sending_garbage_is_dropped_and_the_writer_serves_on(writer: Writer, db: str, garbage: bytes) -> None:
    client = Store(db, 1, writer=writer.path)
    client.insert_object(_row("kept"), [])
    with socket.socket(socket.AF_UNIX) as raw:
        raw.settimeout(5)
        raw.connect(writer.path)
        raw.sendall(garbage)
        assert raw.recv(10) == b""  # closed, never answered
    assert writer.thread is not None and writer.thread.is_alive()
    client.insert_object(_row("next"), [])
    assert {"kept", "next"} <= _stored_uids(db)
    client.close()


def test_the_socket_is_private_to_the_servers_user(writer: Writer) -> None:
    assert os.stat(writer.path).st_mode & 0o777 == 0o600
    if os.getuid() != 0:
        return  # another user's connect needs root to set up; the mode above is the guard
    pid = os.fork()
    if pid == 0:  # a process of another user tries the socket
        code = 3
        try:
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(writer.path)
            code = 1  # connected: the socket is not private
        except PermissionError:
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_second_writer_on_a_live_socket_is_refused(writer: Writer) -> None:
    with pytest.raises(RuntimeError, match="another server's writer"):
        WriterService(writer.store, writer.path)


def test_a_stale_socket_file_is_replaced(db: str, tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens (a crashed writer)
    w = Writer(db, path)
    w.start()
    client = Store(db, 1, writer=path)
    client.insert_object(_row("fresh-start"), [])
    deadline = time.monotonic() + 5
    while w.writes < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.writes == 1
    w.stop()
    assert not os.path.exists(path)  # removed on a clean stop
    client.close()
    w.store.close()


def test_a_path_too_long_for_a_unix_socket_uses_an_abstract_address(db: str, tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = str(deep / "db-writer.5696.sock")
    assert len(path) > 107
    w = Writer(db, path)
    w.start()
    client = Store(db, 1, writer=path)
    _in_process_forbidden(client)
    client.insert_object(_row("deep"), [])
    assert w.writes == 1 and "deep" in _stored_uids(db)
    assert not os.path.exists(path)  # nothing in the file system
    with pytest.raises(RuntimeError, match="another server's writer"):
        WriterService(w.store, path)  # the name is taken while it runs
    w.stop()
    client.close()
    w.store.close()
