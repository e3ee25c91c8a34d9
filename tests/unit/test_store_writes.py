"""Group commit and the SQLite write lock (kmip_bridge/store/writes.py) on a real SQLite file."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from kmip_bridge.store.writes import GroupCommit, write_lock

ROWS = sa.table("rows", sa.column("k", sa.String))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = sa.create_engine(f"sqlite:///{tmp_path}/t.db", connect_args={"check_same_thread": False})
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE rows (k TEXT PRIMARY KEY)"))
    yield eng
    eng.dispose()


class Counted:
    """A begin() that counts the transactions it opened."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.transactions = 0

    @contextmanager
    def __call__(self) -> Iterator[Connection]:
        self.transactions += 1
        with self.engine.begin() as conn:
            yield conn


def _insert(key: str):  # type: ignore[no-untyped-def]
    return lambda conn: conn.execute(ROWS.insert().values(k=key))


def _stored(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return {k for (k,) in conn.execute(sa.text("SELECT k FROM rows"))}


def _queue_behind_a_leader(group: GroupCommit, writes: dict[str, object]) -> dict[str, object]:
    """Starts a first write that holds its transaction open until the other writes are queued
    behind it, so that those are committed together. Returns each write's outcome."""
    release = threading.Event()
    outcomes: dict[str, object] = {}

    def first(conn: Connection) -> None:
        conn.execute(ROWS.insert().values(k="first"))
        assert release.wait(10)

    def submit(name: str, fn) -> None:  # type: ignore[no-untyped-def]
        try:
            group.run(fn)
            outcomes[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - recorded for the test
            outcomes[name] = exc

    threads = [threading.Thread(target=submit, args=("first", first))]
    threads[0].start()
    deadline = time.monotonic() + 10
    while not group._leaders:  # the first write is running
        assert time.monotonic() < deadline, "the first write never started"
        time.sleep(0.01)
    for name, fn in writes.items():
        threads.append(threading.Thread(target=submit, args=(name, fn)))
        threads[-1].start()
    while len(group._queue) < len(writes):
        assert time.monotonic() < deadline, "the writes never queued"
        time.sleep(0.01)
    release.set()
    for t in threads:
        t.join()
    return outcomes


def test_queued_writes_share_one_transaction(engine: Engine) -> None:
    begin = Counted(engine)
    outcomes = _queue_behind_a_leader(GroupCommit(begin), {k: _insert(k) for k in ("a", "b", "c", "d")})
    assert outcomes == dict.fromkeys(("first", "a", "b", "c", "d"), "ok")
    assert _stored(engine) == {"first", "a", "b", "c", "d"}
    assert begin.transactions == 2  # the first write alone, then the four queued behind it


def test_writes_queued_while_the_leader_waits_for_the_lock_join_its_commit(engine: Engine) -> None:
    # The leader takes the queue once it holds the lock (the other worker's commit is over), so
    # writes that arrived meanwhile share its commit rather than wait for the next one.
    lock_free = threading.Event()
    transactions = 0

    @contextmanager
    def begin() -> Iterator[Connection]:
        nonlocal transactions
        assert lock_free.wait(10)
        transactions += 1
        with engine.begin() as conn:
            yield conn

    group = GroupCommit(begin)
    threads = [threading.Thread(target=group.run, args=(_insert("leader"),))]
    threads[0].start()
    deadline = time.monotonic() + 10
    while not group._leaders:
        assert time.monotonic() < deadline, "no leader"
        time.sleep(0.01)
    for key in ("a", "b", "c"):
        threads.append(threading.Thread(target=group.run, args=(_insert(key),)))
        threads[-1].start()
    while len(group._queue) < 4:
        assert time.monotonic() < deadline, "the writes never queued"
        time.sleep(0.01)
    lock_free.set()
    for t in threads:
        t.join(10)
    assert _stored(engine) == {"leader", "a", "b", "c"}
    assert transactions == 1


def test_a_failing_write_fails_alone(engine: Engine) -> None:
    begin = Counted(engine)
    outcomes = _queue_behind_a_leader(
        GroupCommit(begin), {"a": _insert("a"), "dup": _insert("first"), "c": _insert("c")}
    )
    assert outcomes["first"] == outcomes["a"] == outcomes["c"] == "ok"
    assert isinstance(outcomes["dup"], sa.exc.IntegrityError)
    assert _stored(engine) == {"first", "a", "c"}


def test_a_lone_write_returns_its_result(engine: Engine) -> None:
    group = GroupCommit(Counted(engine))
    assert group.run(lambda conn: conn.execute(ROWS.insert().values(k="x")).rowcount) == 1
    assert _stored(engine) == {"x"}


def _hold(url: str, held, release) -> None:  # type: ignore[no-untyped-def]
    with write_lock(url)():
        held.set()
        release.wait(10)


def test_the_sqlite_write_lock_excludes_other_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/k.db"
    ctx = multiprocessing.get_context("fork")
    held, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold, args=(url, held, release))
    child.start()
    try:
        assert held.wait(10)
        fd = os.open(tmp_path / "k.db-writelock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            release.set()
            child.join(10)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the holder is done
        finally:
            os.close(fd)
    finally:
        release.set()
        child.join(10)



class _DatabaseBusy(Exception):
    database_wide = True  # as Store sets it for an OperationalError (busy, unreachable)


class _ConnectionLost(Exception):
    database_wide = True
    connection_lost = True  # as Store sets it when SQLAlchemy invalidated the connection


def test_a_database_wide_failure_fails_the_group_at_once(engine: Engine) -> None:
    def busy(conn: Connection) -> None:
        raise _DatabaseBusy("database busy")

    begin = Counted(engine)
    outcomes = _queue_behind_a_leader(GroupCommit(begin), {"a": _insert("a"), "busy": busy, "c": _insert("c")})
    assert outcomes["first"] == "ok"
    assert all(isinstance(outcomes[k], _DatabaseBusy) for k in ("a", "busy", "c"))
    assert begin.transactions == 2  # not once more per write: each would wait out the same timeout
    assert _stored(engine) == {"first"}


def test_a_write_that_met_a_dropped_connection_is_retried_once(engine: Engine) -> None:
    calls: list[int] = []

    def flaky(conn: Connection) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise _ConnectionLost("server closed the connection")
        conn.execute(ROWS.insert().values(k="y"))
        return "stored"

    assert GroupCommit(Counted(engine)).run(flaky) == "stored"
    assert len(calls) == 2 and _stored(engine) == {"y"}

    def always_lost(conn: Connection) -> None:
        raise _ConnectionLost("server closed the connection")

    with pytest.raises(_ConnectionLost):
        GroupCommit(Counted(engine)).run(always_lost)


def test_with_two_leaders_a_slow_transaction_does_not_hold_up_the_next_write() -> None:
    # PostgreSQL's setting (several transactions at once); SQLite would serialise the writers.
    group = GroupCommit(nullcontext_connection, leaders=2)
    release = threading.Event()
    slow = threading.Thread(target=group.run, args=(lambda conn: release.wait(10),))
    slow.start()
    try:
        while not group._leaders:
            time.sleep(0.01)
        assert group.run(lambda conn: "second") == "second"  # while the first is still open
        assert slow.is_alive()
    finally:
        release.set()
        slow.join(10)


@contextmanager
def nullcontext_connection() -> Iterator[Connection]:
    yield None  # type: ignore[misc]


@pytest.mark.parametrize("leaders", [1, 2])
def test_many_writers_each_get_their_own_outcome_and_nobody_is_left_waiting(engine: Engine, leaders: int) -> None:
    """24 threads, 40 writes each, one in ten a duplicate key: every write returns (no thread
    waits for a wake-up that never comes), each gets its own outcome, and every good row is in
    the database exactly once. Waiting writes are woken one by one (per-write locks), so a lost
    or doubled wake-up would show here as a hung thread or a stray exception."""
    group = GroupCommit(Counted(engine), leaders=leaders)
    outcomes: dict[str, str] = {}
    failures: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(40):
                key = f"{t}-{i}" if i % 10 else "dup"  # every thread also tries the one shared key
                try:
                    group.run(_insert(key))
                    outcome = "stored"
                except sa.exc.IntegrityError:
                    outcome = "duplicate"
                outcomes[f"{t}-{i}"] = outcome
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(24)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads), "a writer never returned"
    assert failures == []
    assert len(outcomes) == 24 * 40
    dup_outcomes = [v for k, v in outcomes.items() if int(k.split("-")[1]) % 10 == 0]
    assert dup_outcomes.count("stored") == 1 and dup_outcomes.count("duplicate") == len(dup_outcomes) - 1
    assert all(v == "stored" for k, v in outcomes.items() if int(k.split("-")[1]) % 10)
    assert _stored(engine) == {k for k in outcomes if int(k.split("-")[1]) % 10} | {"dup"}
    assert group._leaders == 0 and group._queue == []
