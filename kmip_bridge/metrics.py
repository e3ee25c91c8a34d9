"""Observability: Prometheus /metrics, /healthz and /readyz on a separate HTTP port (metrics.*).

One endpoint per server, however many workers: the master sets PROMETHEUS_MULTIPROC_DIR (a
directory of the instance, per KMIP port, emptied at start) *before* it imports prometheus-client
and forks, so every worker records into its own mmap files and the master's HTTP thread
aggregates them (prometheus-client's multiprocess mode). Counters and histograms of a replaced
worker keep counting; its gauges are dropped (mark_process_dead).

Readiness: each worker checks the token and the database every READY_INTERVAL seconds and
publishes the result as a per-process gauge; /readyz answers 200 only if every live worker
reported ready recently. The master itself never opens the token or the database (they do not
survive the fork of a replacement worker).

Everything here is a no-op unless the master called setup(): the hot path then costs one
attribute test.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger("kmip_bridge.metrics")

ENV = "PROMETHEUS_MULTIPROC_DIR"
READY_INTERVAL = 2.0
READY_STALE = 5 * READY_INTERVAL
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Instruments:
    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter(
            "kmip_bridge_requests", "KMIP batch items processed, by operation and result status",
            ["operation", "result"],
        )
        # Failures only: why they failed (item_not_found, permission_denied, cryptographic_failure, ...).
        self.errors = Counter(
            "kmip_bridge_request_errors", "KMIP batch items that failed, by operation and result reason",
            ["operation", "reason"],
        )
        self.latency = Histogram(
            "kmip_bridge_request_duration_seconds", "time to process one KMIP batch item",
            ["operation"], buckets=BUCKETS,
        )
        self.connections = Gauge(
            "kmip_bridge_open_connections", "client connections currently open", multiprocess_mode="livesum"
        )
        self.ready = Gauge(
            "kmip_bridge_worker_ready", "1 if the worker's token and database checks passed",
            multiprocess_mode="liveall",
        )
        self.ready_at = Gauge(
            "kmip_bridge_worker_ready_checked_timestamp_seconds", "when the worker last ran its checks",
            multiprocess_mode="liveall",
        )
        self.keyhsm = Histogram(
            "kmip_bridge_keyhsm_call_duration_seconds",
            "time of one Key HSM call (seal/open/rewrap: one token call each, plus AES-GCM in software)",
            ["call"], buckets=BUCKETS,
        )
        self.probe = Histogram(
            "kmip_bridge_probe_duration_seconds",
            "round trip of the readiness probes: database SELECT 1, Key HSM token check",
            ["target"], buckets=BUCKETS,
        )
        # Writes of Create and first Get (writes.GroupCommit): writes / transactions = group size.
        self.group_writes = Counter("kmip_bridge_group_commit_writes", "writes committed through group commit")
        self.group_transactions = Counter(
            "kmip_bridge_group_commit_transactions", "transactions group commit ran (each one commit)"
        )
        # SQLite's single writer (writes.write_lock): held / wall time is how busy the one writer is.
        self.write_lock = Counter(
            "kmip_bridge_db_write_lock_seconds", "time write transactions waited for / held the SQLite write lock",
            ["phase"],
        )
        # Both read the same database and token, so the most recent report of any worker is right.
        self.kek_objects = Gauge(
            "kmip_bridge_kek_objects", "objects with material sealed under each KEK version (database)",
            ["kek"], multiprocess_mode="mostrecent",
        )
        # The newest signed audit checkpoint's record count (audit.py): compare it with
        # 'kmip-bridge audit verify' and keep it off this host to catch a truncated audit log.
        self.audit_records = Gauge(
            "kmip_bridge_audit_checkpoint_records", "audit records covered by the newest signed checkpoint",
            multiprocess_mode="max",
        )
        self.kek_current = Gauge(
            "kmip_bridge_kek_current", "1 for the KEK version new objects are sealed under",
            ["kek"], multiprocess_mode="mostrecent",
        )
        # Set once by the master; "max" files survive mark_process_dead (only live* gauges are dropped).
        self.build_info = Gauge(
            "kmip_bridge_build_info", "always 1: the running kmip-bridge version and Python",
            ["version", "python"], multiprocess_mode="max",
        )


_on: _Instruments | None = None


def setup(directory: Path) -> None:
    """In the master, before forking any worker: a fresh multiprocess directory, the instruments."""
    global _on
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, mode=0o700)
    os.environ[ENV] = str(directory)
    _on = _Instruments()
    import platform

    from . import __version__

    _on.build_info.labels(__version__, platform.python_version()).set(1)
    # Unlabelled gauges get a value file at creation: the master's would read as a worker never ready.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid())


def enabled() -> bool:
    return _on is not None


# -- the hot path ------------------------------------------------------------------------------------


def observe(operation: str, result: str, started: float, reason: str | None = None) -> None:
    """One batch item: ``started`` is its time.perf_counter() at start; ``reason`` its Result
    Reason when it failed."""
    m = _on
    if m is None:
        return
    m.requests.labels(operation, result).inc()
    if reason is not None:
        m.errors.labels(operation, reason).inc()
    m.latency.labels(operation).observe(time.perf_counter() - started)


def connection_opened() -> None:
    if _on is not None:
        _on.connections.inc()


def connection_closed() -> None:
    if _on is not None:
        _on.connections.dec()


def worker_died(pid: int) -> None:
    if _on is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def group_committed(writes: int) -> None:
    if _on is not None:
        _on.group_writes.inc(writes)
        _on.group_transactions.inc()


def audit_head(records: int) -> None:
    if _on is not None:
        _on.audit_records.set(records)


def write_lock_timed(waited: float, held: float) -> None:
    if _on is not None:
        _on.write_lock.labels("wait").inc(waited)
        _on.write_lock.labels("held").inc(held)


# -- Key HSM and database call latency ----------------------------------------------------------------

KEYHSM_CALLS = ("seal", "open", "rewrap")


class TimedKeyHsm:
    """The worker's Key HSM (in-process or the socket client) with its calls timed; every other
    attribute passes through. Only built when metrics are on."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        assert _on is not None
        for name in KEYHSM_CALLS:
            setattr(self, name, _timed(getattr(inner, name), _on.keyhsm.labels(name)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _timed(call: Callable[..., Any], histogram: Any) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            histogram.observe(time.perf_counter() - started)

    return timed


@contextmanager
def probe(target: str) -> Iterator[None]:
    """Times one readiness probe of ``target`` (database: SELECT 1; keyhsm: the token check),
    recorded only if it succeeds. The database's latency is measured this way, every
    READY_INTERVAL seconds per worker, rather than per statement: SQLAlchemy cursor events cost
    ~60 µs per statement here (more than a SQLite statement itself) even with empty listeners."""
    m = _on
    started = time.perf_counter()
    yield
    if m is not None:
        m.probe.labels(target).observe(time.perf_counter() - started)


# -- KEK versions in use (in each worker) --------------------------------------------------------------

def start_kek_stats(
    read: Callable[[], tuple[list[str], dict[str, int]]], interval: float
) -> threading.Event | None:
    """A daemon thread publishing, every ``interval`` seconds (metrics.kek_stats_seconds: a GROUP
    BY over the objects table, so not every readiness tick), ``read()``: the KEK labels new
    objects are sealed under and the object count per KEK label. None when metrics are off."""
    m = _on
    if m is None:
        return None
    stop = threading.Event()

    def loop() -> None:
        seen_counts: set[str] = set()
        seen_current: set[str] = set()
        while True:
            try:
                current, counts = read()
                for label in seen_counts - set(counts):  # revoked or emptied since: now 0
                    m.kek_objects.labels(label).set(0)
                for label, n in counts.items():
                    m.kek_objects.labels(label).set(n)
                for label in seen_current - set(current):  # rotated away from
                    m.kek_current.labels(label).set(0)
                for label in current:
                    m.kek_current.labels(label).set(1)
                seen_counts |= set(counts)
                seen_current |= set(current)
            except Exception as exc:  # noqa: BLE001 - readiness reports the outage; keep trying
                log.debug("KEK statistics not refreshed", extra={"error": str(exc)[:200]})
            if stop.wait(interval):
                return

    threading.Thread(target=loop, name="kek-stats", daemon=True).start()
    return stop


# -- readiness (in each worker) ----------------------------------------------------------------------


def start_readiness(check: Callable[[], None]) -> threading.Event | None:
    """A daemon thread running ``check`` (raises if not ready) every READY_INTERVAL seconds;
    set the returned event to stop it. None when metrics are off."""
    m = _on
    if m is None:
        return None
    stop = threading.Event()

    def loop() -> None:
        last_ok: bool | None = None
        while True:
            try:
                check()
                ok = True
            except Exception as exc:  # noqa: BLE001 - whatever fails, the worker is not ready
                ok = False
                if last_ok is not False:
                    log.warning("readiness check failed", extra={"error": str(exc)[:200]})
            last_ok = ok
            m.ready.set(1 if ok else 0)
            m.ready_at.set(time.time())
            if stop.wait(READY_INTERVAL):
                return

    threading.Thread(target=loop, name="readiness", daemon=True).start()
    return stop


# -- the HTTP endpoint (in the master) ---------------------------------------------------------------


def _collect() -> Any:
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def readiness() -> tuple[bool, str]:
    """(ready, why) from the workers' latest checks."""
    ready: dict[str, float] = {}
    checked: dict[str, float] = {}
    for family in _collect().collect():
        for sample in family.samples:
            if sample.name == "kmip_bridge_worker_ready":
                ready[sample.labels.get("pid", "?")] = sample.value
            elif sample.name == "kmip_bridge_worker_ready_checked_timestamp_seconds":
                checked[sample.labels.get("pid", "?")] = sample.value
    if not ready:
        return False, "no worker has reported yet"
    now = time.time()
    for pid, value in sorted(ready.items()):
        if value != 1:
            return False, f"worker {pid}: token or database unreachable"
        if now - checked.get(pid, 0.0) > READY_STALE:
            return False, f"worker {pid}: no readiness report for {READY_STALE:.0f} s"
    return True, f"ready ({len(ready)} workers)"


class _Handler(BaseHTTPRequestHandler):
    server_version = "kmip-bridge-metrics"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            self._reply(200, generate_latest(_collect()), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._reply(200, b"ok\n")
        elif path == "/readyz":
            ok, why = readiness()
            self._reply(200 if ok else 503, why.encode() + b"\n")
        else:
            self._reply(404, b"not found: /metrics, /healthz, /readyz\n")

    def _reply(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


_httpd: ThreadingHTTPServer | None = None


def in_database_writer() -> None:
    """In the freshly forked database writer: its counters (group commit, write lock) count; its
    copies of the workers' live gauges must not, or /readyz would wait for a readiness report
    it never sends. The first touch of any value in a new process creates every value file of
    that pid; the live gauges' files are then unlinked (the mapped copies go on unseen)."""
    if _on is not None:
        _on.group_writes.inc(0)
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


def in_worker() -> None:
    """In a freshly forked worker: drop the inherited metrics listening socket."""
    if _httpd is not None:
        _httpd.socket.close()


def serve_http(host: str, port: int) -> ThreadingHTTPServer:
    """Binds now (so a taken port fails start-up), serves on a daemon thread."""
    global _httpd
    httpd = _httpd = ThreadingHTTPServer((host, port), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    return httpd
