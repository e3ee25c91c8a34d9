"""The master process: binds the listener, forks the workers, supervises them, drains on SIGTERM.

Workers are forked before anything touches the PKCS#11 module or the database, because neither
survives a fork; each worker opens its own token sessions and connection pool.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import metrics
from .connection import Application, Limits
from .tickets import TicketKeys
from .worker import run_worker

log = logging.getLogger("kmip_bridge.server")

READY_TIMEOUT = 120.0
# A replacement worker that cannot start is tried again after 1, 2, 4 … 30 s.
RESPAWN_BACKOFF, RESPAWN_BACKOFF_MAX = 1.0, 30.0


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    workers: int
    limits: Limits
    max_connections: int
    drain_timeout: float
    # (host, port, multiprocess directory) of the metrics endpoint; None: metrics off
    metrics: tuple[str, int, Path] | None = None
    # connections not past their TLS handshake: in all, and from one peer address (split across
    # the workers, rounded up)
    max_handshakes: int = 128
    max_handshakes_per_ip: int = 32
    # The database writer process's body (store/writer.run bound to the settings), given a
    # function to report readiness with; None: every worker commits its own writes.
    writer: Callable[[Callable[[str], None]], int] | None = None
    handler_threads: int = 8  # per worker (server.handler_threads)


def _fork(body: Callable[[Callable[[str], None]], int], what: str) -> tuple[int, int]:
    """Forks a child that runs ``body(report)`` and exits with its code; returns the child's pid
    and the read end of the pipe its ``report`` (one message: "ok" or the reason) writes to."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        metrics.in_worker()
        code = 1
        try:
            def report(msg: str) -> None:
                os.write(w, msg.encode()[:4000])
                os.close(w)

            code = body(report)
        except BaseException:
            log.exception(f"{what} crashed")
        finally:
            logging.shutdown()
            os._exit(code)
    os.close(w)
    return pid, r


def _spawn(listener: socket.socket, tls: Callable[[], ssl.SSLContext], factory: Callable[[], Application],
           opts: ServeOptions, per_worker: int, rotation: Callable[[], int] | None = None) -> tuple[int, int]:
    def body(report: Callable[[str], None]) -> int:
        n = opts.workers or os.cpu_count() or 1
        # Shares rounded up, so that many workers do not leave each a uselessly small pool.
        return run_worker(listener, tls, factory, opts.limits, per_worker,
                          opts.drain_timeout, report, rotation, -(-opts.max_handshakes // n),
                          -(-opts.max_handshakes_per_ip // n), opts.handler_threads)

    return _fork(body, "worker")


def _spawn_writer(run: Callable[[Callable[[str], None]], int]) -> tuple[int, int]:
    def body(report: Callable[[str], None]) -> int:
        metrics.in_database_writer()
        # Only the master stops it, after the workers have drained: their last writes still
        # reach it. A terminal's Ctrl-C or hang-up goes to the whole process group.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        return run(report)

    return _fork(body, "database writer")


def _await_ready(fd: int) -> str:
    chunks = []
    deadline = time.monotonic() + READY_TIMEOUT
    os.set_blocking(fd, False)
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            time.sleep(0.02)
            continue
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace") or "error: worker exited during start-up"


def serve(opts: ServeOptions, tls: Callable[[], ssl.SSLContext], factory: Callable[[], Application]) -> int:
    # One session-ticket secret for every worker (drawn before the fork, never written anywhere):
    # a client resumes its TLS session whichever worker its reconnect reaches. Each worker derives
    # the key of the current hour from it and installs it in every context it makes.
    keys = TicketKeys(os.urandom(32))
    plain_tls = tls

    def tls() -> ssl.SSLContext:
        ctx = plain_tls()
        keys.apply(ctx)
        return ctx

    tls()  # fail here, with one message, if the certificates cannot be loaded
    listener = socket.create_server((opts.host, opts.port), backlog=1024)
    httpd = None
    if opts.metrics is not None:
        host, mport, directory = opts.metrics
        metrics.setup(directory)
        try:
            httpd = metrics.serve_http(host, mport)
        except OSError as exc:
            log.error("server cannot start", extra={"reason": f"metrics endpoint {host}:{mport}: {exc.strerror}"})
            listener.close()
            return 1
    n = opts.workers or os.cpu_count() or 1
    per_worker = max(1, opts.max_connections // n)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    workers: dict[int, int] = {}
    alive: set[int] = set()

    def forward_hup(*_: object) -> None:
        for pid in alive:
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGHUP, forward_hup)
    writer = 0
    if opts.writer is not None:
        # Before the workers: their first writes find it (and, were it missing, they would
        # commit in-process, which is correct but not the point).
        writer, fd = _spawn_writer(opts.writer)
        reason = _await_ready(fd)
        if reason != "ok":
            log.error("server cannot start", extra={"reason": reason})
            _terminate([writer], 5.0)
            listener.close()
            return 1
    for _ in range(n):
        pid, fd = _spawn(listener, tls, factory, opts, per_worker, keys.epoch)
        workers[pid] = fd
    failures = [msg for msg in (_await_ready(fd) for fd in workers.values()) if msg != "ok"]
    if failures:
        log.error("server cannot start", extra={"reason": failures[0]})
        _terminate(list(workers), 5.0)
        if writer:
            _terminate([writer], 5.0)
        return 1
    port = listener.getsockname()[1]
    log.info("ready", extra={"host": opts.host, "port": port, "workers": n})
    alive.update(workers)
    missing = 0  # workers that died and are not replaced yet
    retry_at, backoff = 0.0, RESPAWN_BACKOFF
    writer_retry_at, writer_backoff = 0.0, RESPAWN_BACKOFF
    while not stopping:
        time.sleep(0.2)
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            if not missing:
                break
            pid, status = 0, 0
        if pid and pid in alive and not stopping:
            alive.discard(pid)
            metrics.worker_died(pid)
            log.error("worker died; replacing it", extra={"worker": pid, "status": status})
            missing += 1
        if pid and pid == writer and not stopping:
            # Meanwhile the workers commit their own writes (store/writer.py).
            metrics.worker_died(pid)
            log.error("database writer died; replacing it", extra={"writer": pid, "status": status})
            writer = 0
        if opts.writer is not None and not writer and not stopping and time.monotonic() >= writer_retry_at:
            new_pid, fd = _spawn_writer(opts.writer)
            reason = _await_ready(fd)
            if reason == "ok":
                writer, writer_backoff = new_pid, RESPAWN_BACKOFF
            else:
                log.error("replacement database writer failed to start; retrying",
                          extra={"reason": reason, "retry_in": writer_backoff})
                _terminate([new_pid], 5.0)
                writer_retry_at = time.monotonic() + writer_backoff
                writer_backoff = min(writer_backoff * 2, RESPAWN_BACKOFF_MAX)
        if missing and not stopping and time.monotonic() >= retry_at:
            new_pid, fd = _spawn(listener, tls, factory, opts, per_worker, keys.epoch)
            reason = _await_ready(fd)
            if reason == "ok":
                alive.add(new_pid)
                missing -= 1
                backoff = RESPAWN_BACKOFF
            else:
                # E.g. the database or the token is down right now: the remaining workers keep
                # serving (their requests fail cleanly meanwhile) and the worker is tried again,
                # instead of the whole server exiting over a passing outage.
                log.error("replacement worker failed to start; retrying",
                          extra={"reason": reason, "retry_in": backoff})
                retry_at = time.monotonic() + backoff
                backoff = min(backoff * 2, RESPAWN_BACKOFF_MAX)
    log.info("stopping: draining workers")
    listener.close()
    _terminate(list(alive), opts.drain_timeout + 5.0)
    if writer:  # last: the draining workers' writes went through it
        _terminate([writer], 10.0)
    if httpd is not None:
        httpd.shutdown()
    log.info("stopped")
    return 0


def _terminate(pids: list[int], grace: float) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    remaining = set(pids)
    while remaining and time.monotonic() < deadline:
        for pid in list(remaining):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                remaining.discard(pid)
        time.sleep(0.05)
    for pid in remaining:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
