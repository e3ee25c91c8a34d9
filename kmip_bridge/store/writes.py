"""How write transactions reach the database: one writer at a time on SQLite without its busy
handler, and group commit of the hot writes (new objects, the Fresh flip) on every database.

*SQLite write lock.* SQLite has a single writer. Two writers that collide meet SQLite's busy
handler, which sleeps 1, 2, 5 … 50, then 100 ms per retry and does not wake when the lock frees:
under load the lock sits idle while writers sleep (p99 ≈ 328 ms + k * 100 ms in docs/performance.md).
So our writers queue in the kernel instead: a thread lock (``flock`` does not exclude threads
sharing one open file) and ``flock`` on ``DB-writelock`` (other processes: the other workers,
``keyhsm rewrap``). A blocked ``flock`` wakes as soon as the holder releases it. The busy timeout
stays for writers that are not ours (the ``sqlite3`` shell).

*Group commit.* Concurrent Create and first-Get requests each need a small write and a durable
commit (an ``fsync``). ``GroupCommit.run`` queues the write; the first waiting thread becomes the
leader, opens a transaction (on SQLite: waits for the write lock), then takes the whole queue
and runs it in that transaction; the others wait for it. One commit,
one lock acquisition and one pool checkout then serve many requests, and each request still
returns only after its write is durable. If the shared transaction fails, each write is retried
alone, so one bad write cannot fail the others and every caller gets its own outcome; a write
that met a connection the database had dropped is retried once on a new one. A failure of the
database itself (busy past its timeout, unreachable) fails the whole group at once.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.engine.url import make_url

from .. import metrics

R = TypeVar("R")

# At most this many writes share one transaction (bounds the lock hold and a retry's cost).
MAX_GROUP = 64


class _FileWriteLock:
    """A per-process thread lock plus ``flock`` on a lock file next to the database."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._thread_lock = threading.Lock()
        self._fd = -1

    @contextmanager
    def held(self) -> Iterator[None]:
        asked = time.perf_counter()
        with self._thread_lock:
            if self._fd < 0:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            got = time.perf_counter()
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                metrics.write_lock_timed(got - asked, time.perf_counter() - got)


# One lock per database file per process: two Store objects on one file must exclude each other.
_LOCKS: dict[str, _FileWriteLock] = {}
_LOCKS_GUARD = threading.Lock()


def _forget_locks() -> None:
    # A child must not inherit a thread lock some other thread of the parent held at fork().
    global _LOCKS_GUARD
    _LOCKS.clear()
    _LOCKS_GUARD = threading.Lock()


os.register_at_fork(after_in_child=_forget_locks)


def write_lock(url: str) -> Callable[[], AbstractContextManager[None]]:
    """The lock every write transaction on ``url`` takes first (a no-op except for SQLite files)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return nullcontext
    path = os.path.abspath(parsed.database) + "-writelock"
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(path, _FileWriteLock(path))
    return lock.held


class _Job(Generic[R]):
    __slots__ = ("done", "error", "fn", "lead", "result", "wake", "woken")

    def __init__(self, fn: Callable[[Connection], R]) -> None:
        self.fn = fn
        self.done = False
        self.lead = False  # asked to lead the next transaction
        self.result: R | None = None
        self.error: BaseException | None = None
        # Released once, by whoever has news for this job's thread (done, or lead): each waiting
        # thread is woken for its own news only, not for every commit.
        self.wake = threading.Lock()
        self.wake.acquire()
        self.woken = False


class GroupCommit:
    """Runs writes submitted by many threads in shared transactions (leader/follower: no extra
    thread, and a lone writer commits on its own thread with no hand-off). A leader wakes the
    threads of exactly the writes it committed, and the next leader; nobody else.

    ``leaders``: how many transactions may run at once. The store uses 1 on both databases:
    SQLite has one writer, and on PostgreSQL more leaders only split the queue into more, smaller
    commits (measured: docs/performance.md)."""

    def __init__(self, begin: Callable[[], AbstractContextManager[Connection]], leaders: int = 1) -> None:
        self._begin = begin  # opens one write transaction (lock, guard, commit or rollback)
        self._mutex = threading.Lock()
        self._queue: list[_Job[Any]] = []
        self._max_leaders = max(1, leaders)
        self._leaders = 0

    def run(self, fn: Callable[[Connection], R]) -> R:
        """Runs ``fn(connection)`` inside a write transaction; returns once it is committed."""
        job: _Job[R] = _Job(fn)
        with self._mutex:
            self._queue.append(job)
            if self._leaders < self._max_leaders:  # a free leader's place: this thread leads
                self._leaders += 1
                job.lead = True
        while True:
            if job.lead and not job.done:
                job.lead = False
                batch: list[_Job[Any]] = []
                try:
                    self._lead(batch)
                finally:
                    with self._mutex:
                        for other in batch:
                            if not other.done:  # only if _lead itself was interrupted
                                other.error, other.done = RuntimeError("write interrupted"), True
                            if other is not job:
                                self._signal(other)
                        self._step_down()
                continue
            if job.done:
                if job.lead:  # asked to lead after another leader had finished it: pass it on
                    with self._mutex:
                        job.lead = False
                        self._step_down()
                break
            job.wake.acquire()  # until done, or asked to lead
            with self._mutex:
                job.woken = False
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def run_together(self, writes: list[Callable[[Connection], Any]]) -> list[tuple[Any, BaseException | None]]:
        """Runs ``writes`` in one transaction on the calling thread, with the same rules as
        ``run`` when it fails (each write alone, a dropped connection retried once); returns each
        write's (result, error). For a caller that gathered the group itself (store/writer.py)."""
        batch: list[_Job[Any]] = [_Job(fn) for fn in writes]
        if batch:
            self._lead(batch, take=False)
        return [(job.result, job.error) for job in batch]

    def _signal(self, job: _Job[Any]) -> None:
        """Under the mutex: wakes ``job``'s thread (once, however many reasons)."""
        if not job.woken:
            job.woken = True
            job.wake.release()

    def _step_down(self) -> None:
        """Under the mutex: a leader's place is free; the oldest queued write's thread takes it."""
        self._leaders -= 1
        for nxt in self._queue:
            if self._leaders >= self._max_leaders:
                break
            if not nxt.lead:
                nxt.lead = True
                self._leaders += 1
                self._signal(nxt)

    def _take(self, batch: list[_Job[Any]]) -> None:
        """Moves the oldest MAX_GROUP queued writes into ``batch`` (the leader's own among them,
        unless another leader already took it)."""
        with self._mutex:
            batch[:], self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]

    def _lead(self, batch: list[_Job[Any]], take: bool = True) -> None:
        # The transaction (on SQLite: the write lock) first, the queue after: every write queued
        # while this leader waited for the lock joins this commit instead of waiting for the next
        # one. With two workers taking turns at SQLite's lock, that is most of them.
        try:
            with self._begin() as conn:
                if take:
                    self._take(batch)
                results = [job.fn(conn) for job in batch]
        except Exception as exc:  # noqa: BLE001 - handed over, or each write retried alone
            if not batch:  # the transaction never opened: the queued writes meet the same error
                self._take(batch)
            if _database_wide(exc):
                _fail(batch, exc)
            elif len(batch) == 1:  # that was this write's own first attempt
                self._alone(batch, first_error=exc)
            else:
                self._alone(batch)
            return
        for job, result in zip(batch, results, strict=True):
            job.result, job.done = result, True
        if batch:
            metrics.group_committed(len(batch))

    def _alone(self, batch: list[_Job[Any]], first_error: BaseException | None = None) -> None:
        """Each write in its own transaction; one that met a dropped connection gets a second try."""
        for job in batch:
            if job.done:
                continue
            if first_error is not None and not getattr(first_error, "connection_lost", False):
                job.error, job.done = first_error, True
                continue
            for attempt in (2,) if first_error is not None else (1, 2):
                try:
                    with self._begin() as conn:
                        job.result = job.fn(conn)
                    break
                except Exception as exc:  # noqa: BLE001 - handed to the thread that submitted it
                    # A connection the database dropped (restart) is replaced once; the pool has
                    # already discarded its other connections from before the failure.
                    if attempt == 2 or not getattr(exc, "connection_lost", False):
                        job.error = exc
                        if _database_wide(exc):
                            _fail(batch, exc)  # the rest would only wait out the same timeout
                        break
            job.done = True


def _database_wide(exc: BaseException) -> bool:
    """A failure of the database, not of one write (busy past the timeout, unreachable): every
    write of the group would meet it again, each after its own timeout."""
    return bool(getattr(exc, "database_wide", False)) and not getattr(exc, "connection_lost", False)


def _fail(batch: list[_Job[Any]], exc: BaseException) -> None:
    for job in batch:
        if not job.done:
            job.error, job.done = exc, True
