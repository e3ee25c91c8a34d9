"""Idle connections (``--idle-connections N``): N mutual-TLS connections opened before the
measured run and held, silent, through it; afterwards each must still answer a request.

They live in a forked process of their own, so the clients' selector loops are not slowed by
1,000 extra sockets. Each one costs a file descriptor here and one in the server, so the soft
``RLIMIT_NOFILE`` is raised (up to the hard limit) before anything is forked.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from multiprocessing.connection import Connection
from typing import Any

from kmip.core.enums import Operation
from kmip.core.enums import Tags as T

from ..client import RawClient, client_context
from ..protocol import ttlv
from . import workloads
from .loadgen import Endpoint

FD_HEADROOM = 256  # descriptors beyond the connections: clients, logs, pipes, libraries


def raise_fd_limit(connections: int) -> tuple[int, int]:
    """Raises the soft open-files limit of this process (and so of what it starts) to fit
    ``connections`` plus headroom, as far as the hard limit allows. Returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < want:
        soft = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft, hard


def _probe(version: workloads.Version) -> bytes:
    """DiscoverVersions: the cheapest request that makes the server read, decode and answer."""
    payload = ttlv.struct_(T.REQUEST_PAYLOAD, [])
    return workloads._message(Operation.DISCOVER_VERSIONS, payload, version)


def _child(pipe: Connection, ep: Endpoint, count: int, version: workloads.Version) -> None:
    clients: list[RawClient] = []
    failures: dict[str, int] = {}
    t0 = time.monotonic()
    try:
        ctx = client_context(ep.ca, ep.cert, ep.key)
        for _ in range(count):
            try:
                clients.append(RawClient(ep.host, ep.port, ctx))
            except OSError as exc:
                key = f"connect: {type(exc).__name__}: {str(exc)[:80]}"
                failures[key] = failures.get(key, 0) + 1
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which stops the run
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    pipe.send(("ready", {"opened": len(clients), "open_s": round(time.monotonic() - t0, 2),
                         "errors": dict(failures)}))
    if pipe.recv() != "check":
        return
    probe, answered = _probe(version), 0
    for client in clients:
        try:
            resp = client.send_raw(probe)
        except OSError as exc:
            resp, key = None, f"after idling: {type(exc).__name__}: {str(exc)[:80]}"
        else:
            key = "after idling: connection closed by the server"
        if resp is not None and workloads.status_of(resp)[0]:
            answered += 1
        else:
            if resp is not None:
                key = f"after idling: {workloads.reason_name(workloads.status_of(resp)[1])}"
            failures[key] = failures.get(key, 0) + 1
        client.close()
    pipe.send(("done", {"answered": answered, "errors": failures}))


class IdleHolder:
    """The process holding the idle connections."""

    def __init__(self, ep: Endpoint, count: int, version: workloads.Version) -> None:
        mp = multiprocessing.get_context("fork")
        self._pipe, child = mp.Pipe()
        self._proc = mp.Process(target=_child, args=(child, ep, count, version), daemon=True)
        self._proc.start()
        child.close()
        self.count = count

    def _recv(self, timeout: float) -> dict[str, Any]:
        if not self._pipe.poll(timeout):
            raise RuntimeError(f"idle-connection process gave no answer within {timeout:.0f} s")
        kind, body = self._pipe.recv()
        if kind == "error":
            raise RuntimeError(f"idle-connection process failed: {body}")
        return body  # type: ignore[no-any-return]

    def opened(self, timeout: float = 600.0) -> dict[str, Any]:
        return self._recv(timeout)

    def check(self, timeout: float = 600.0) -> dict[str, Any]:
        """Sends one request on every idle connection, then closes them."""
        self._pipe.send("check")
        return self._recv(timeout)

    def close(self) -> None:
        self._proc.join(timeout=5)
        if self._proc.is_alive():
            self._proc.terminate()
        self._pipe.close()
