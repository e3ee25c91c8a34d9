"""The load generator: forked client processes, each running its clients on one selector loop.

Every client is one persistent mutual-TLS connection with one request in flight (closed loop).
A process never decodes TTLV: it sends pre-encoded bytes, frames responses by their 8-byte header
and scans them for the result status. Latencies are ``perf_counter_ns`` samples, counted by
``latency.Recorder`` (which says which requests count) and shipped to the parent as packed arrays;
the process also reports its own CPU time (``getrusage``).
"""

from __future__ import annotations

import multiprocessing
import resource
import select
import selectors
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..client import RawClient, client_context
from . import workloads
from .latency import Recorder
from .workloads import Kit, Program, Version

GRACE_NS = 10_000_000_000  # after the end: how long an unanswered request may still take


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class ProcessSpec:
    endpoint: Endpoint
    workload: str
    version: Version
    clients: int
    first_index: int  # global index of this process's first client
    warm_keys: int  # keys this process creates for get / mixed
    names: list[str] = field(default_factory=list)  # named keys it creates for locate / mixed
    # objects that already exist (bulk-loaded for --scale): their ids and names, used as they are
    given_ids: list[bytes] = field(default_factory=list)
    given_names: list[str] = field(default_factory=list)


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class _Conn:
    __slots__ = ("buf", "client", "index", "kind", "need", "pair_t0", "prog", "t0")

    def __init__(self, client: RawClient, index: int, prog: Program) -> None:
        self.client = client
        self.index = index
        self.prog = prog
        self.kind = ""
        self.t0 = 0
        self.pair_t0: int | None = None  # send time of the Create the next Get belongs to
        self.buf = b""
        self.need = -1


def _send(sock: ssl.SSLSocket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view) :]
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            select.select([], [sock], [], 1.0)


def _read(c: _Conn) -> bool:
    """Reads what is available; True once a whole response message is buffered."""
    sock = c.client.sock
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            c.buf += chunk
            if c.need < 0 and len(c.buf) >= 8:
                c.need = 8 + int.from_bytes(c.buf[4:8], "big")
            if 0 <= c.need <= len(c.buf):
                return True
    except ssl.SSLWantReadError:
        return False


def _setup(client: RawClient, spec: ProcessSpec, kit: Kit) -> None:
    """Creates this process's warm keys and named keys, one blocking request at a time."""

    def call(msg: bytes) -> bytes:
        resp = client.send_raw(msg)
        if resp is None:
            raise ConnectionError("server closed the connection during setup")
        ok, reason = workloads.status_of(resp)
        if not ok:
            raise RuntimeError(f"setup request failed: {workloads.reason_name(reason)}: {workloads.message_of(resp)}")
        return resp

    for _ in range(spec.warm_keys):
        uid = workloads.uid_of(call(kit.create))
        assert uid is not None
        kit.warm_ids.append(uid)
    for name in spec.names:
        call(workloads.create_message(kit.version, name))
        kit.names.append(name)
    kit.warm_ids.extend(spec.given_ids)
    kit.names.extend(spec.given_names)
    kit.prepare()


def child_main(pipe: Connection, spec: ProcessSpec) -> None:
    try:
        ep = spec.endpoint
        ctx = client_context(ep.ca, ep.cert, ep.key)
        clients = [RawClient(ep.host, ep.port, ctx) for _ in range(spec.clients)]
        kit = Kit(spec.version)
        _setup(clients[0], spec, kit)
        tls = (clients[0].sock.version(), clients[0].sock.cipher()[0])  # type: ignore[index]
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops the run
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    pipe.send(("ready", {"tls": tls}))
    message = pipe.recv()
    if message[0] != "go":
        return
    _, start, warm_end, end = message
    try:
        result = run_loop(clients, spec, kit, ctx, start, warm_end, end)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    pipe.send(("done", result))


def run_loop(
    clients: list[RawClient], spec: ProcessSpec, kit: Kit, ctx: ssl.SSLContext, start: int, warm_end: int, end: int
) -> dict[str, Any]:
    now = time.perf_counter_ns
    program = workloads.PROGRAMS[spec.workload]
    sel = selectors.DefaultSelector()
    rec = Recorder(warm_end, end, pairs=spec.workload == "create-get")
    errors: Counter[str] = Counter()
    samples: dict[str, str] = {}
    warm_errors = 0
    conns: set[_Conn] = set()  # clients still running
    for i, client in enumerate(clients):
        client.sock.setblocking(False)
        c = _Conn(client, spec.first_index + i, program(kit, spec.first_index + i))
        sel.register(client.sock, selectors.EVENT_READ, c)
        conns.add(c)
    cpu0 = cpu_t0 = None
    while now() < start:
        time.sleep(max(0.0, (start - now()) / 1e9))

    def fire(c: _Conn, op: tuple[str, bytes]) -> None:
        c.kind = op[0]
        c.t0 = now()
        if c.kind == "create":
            c.pair_t0 = c.t0
        _send(c.client.sock, op[1])

    def fail(c: _Conn, what: str) -> None:
        """Counts a connection failure, then reconnects the client with a fresh program."""
        errors[f"connection: {what}"] += 1
        sel.unregister(c.client.sock)
        c.client.close()
        c.buf, c.need, c.pair_t0 = b"", -1, None
        try:
            c.client = RawClient(spec.endpoint.host, spec.endpoint.port, ctx)
        except OSError as exc:
            errors[f"connection: reconnect failed: {exc}"] += 1
            conns.discard(c)
            return
        c.client.sock.setblocking(False)
        c.prog = program(kit, c.index)
        sel.register(c.client.sock, selectors.EVENT_READ, c)
        fire(c, next(c.prog))

    for c in conns:
        fire(c, next(c.prog))
    closed = []
    while conns:
        t = now()
        if cpu0 is None and t >= warm_end:
            cpu0, cpu_t0 = _cpu(), t
        if t > end + GRACE_NS:
            errors["timeout: no response within the grace period after the end"] += len(conns)
            break
        for key, _ in sel.select(1.0):
            c = key.data
            try:
                if not _read(c):
                    continue
            except (OSError, ConnectionError) as exc:
                fail(c, str(exc)[:120])
                continue
            t1 = now()
            resp, c.buf, c.need = c.buf, b"", -1
            ok, reason = workloads.status_of(resp)
            pair_t0 = c.pair_t0 if c.kind == "get" else None
            if c.kind == "get":
                c.pair_t0 = None
            if rec.response(c.kind, c.t0, t1, pair_t0):
                if not ok:
                    label = f"{c.kind}: {workloads.reason_name(reason)}"
                    errors[label] += 1
                    samples.setdefault(label, workloads.message_of(resp)[:200])
            elif not ok:
                warm_errors += 1
            if t1 >= end:
                sel.unregister(c.client.sock)
                conns.discard(c)
                closed.append(c)
                continue
            fire(c, c.prog.send((ok, resp)))
            rec.gap(t1, c.t0)
    cpu1, cpu_t1 = _cpu(), now()
    for c in [*conns, *closed]:
        c.client.close()
    return {
        **rec.export(),
        "errors": dict(errors),
        "error_samples": samples,
        "warmup_errors": warm_errors,
        "cpu_window_s": (cpu1 - cpu0) if cpu0 is not None else 0.0,
        "cpu_window_wall_s": (cpu_t1 - cpu_t0) / 1e9 if cpu_t0 is not None else 0.0,
        "cpu_total_s": cpu1,
    }


def spread(total: int, parts: int) -> list[int]:
    """``total`` split as evenly as possible over ``parts``."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def start_processes(specs: list[ProcessSpec]) -> list[tuple[multiprocessing.process.BaseProcess, Connection]]:
    mp = multiprocessing.get_context("fork")
    out = []
    for spec in specs:
        parent, child = mp.Pipe()
        proc = mp.Process(target=child_main, args=(child, spec), daemon=True)
        proc.start()
        child.close()
        out.append((proc, parent))
    return out
