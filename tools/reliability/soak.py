"""The soak: mixed load for a while against one server, with faults on a schedule — the database
restarted (a PostgreSQL cluster of the soak's own) and a worker killed -9 (the master must replace
it) — then every object the clients saw acknowledged read back, and `db check --open`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .harness import ServerProcess, cli
from .pgcluster import PgCluster
from .storm import Ledger, Verdict, client_loop, verify


@dataclass
class SoakReport:
    seconds: float = 0.0
    db_restarts: int = 0
    worker_kills: int = 0
    respawned: int = 0  # kills after which the worker count came back
    respawn_seconds: list[float] = field(default_factory=list)
    server_survived: bool = True
    db_check: str = ""
    db_check_ok: bool = False
    exit_code: int | None = None
    verdict: Verdict = field(default_factory=Verdict)
    ledger: Ledger = field(default_factory=Ledger)

    @property
    def ok(self) -> bool:
        return (self.server_survived and self.db_check_ok and self.verdict.ok and not self.ledger.wrong
                and self.respawned == self.worker_kills and self.exit_code == 0)

    def render(self) -> str:
        led, v = self.ledger, self.verdict
        internal = sum(n for m, n in led.answered.items() if "internal" in m)
        lines = [
            f"soak: {self.seconds / 60:.1f} min, {self.db_restarts} database restarts, "
            f"{self.worker_kills} worker kills ({self.respawned} replaced by the master"
            + (f", slowest {max(self.respawn_seconds):.1f} s" if self.respawn_seconds else "") + ")",
            f"acknowledged: {sum(led.acked.values())} {dict(led.acked)}",
            f"failed with an answer: {sum(led.answered.values())} (slowest answer {led.slowest_failure:.2f} s; "
            f"internal errors {internal}); connection cut: {sum(led.unanswered.values())}",
            f"verified at the end: {v.checked} objects ({v.intact} intact, {v.destroyed_ok} destroyed as "
            f"acknowledged); lost {len(v.lost)}, destroyed but readable {len(v.resurrected)}, "
            f"wrong material read {len(led.wrong)}",
            f"db check --open: {self.db_check.splitlines()[-1] if self.db_check else '-'}",
            f"server survived: {self.server_survived}; exit code on SIGTERM: {self.exit_code}",
        ]
        lines += [f"  {n} x {m}" for m, n in led.answered.most_common(8)]
        lines += [f"LOST {x}" for x in v.lost[:20]]
        lines.append("RESULT: " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)


def run(config: Path, client_conf: Path, seconds: float, cluster: PgCluster | None, clients: int = 4,
        db_restart_every: float = 60.0, db_down_seconds: float = 3.0, worker_kill_every: float = 45.0,
        log_path: Path | None = None, say: Callable[[str], None] = print) -> SoakReport:
    report = SoakReport()
    ledger = report.ledger
    server = ServerProcess(config, log_path)
    server.start()
    workers = len(server.workers())
    stop = threading.Event()
    threads = [
        threading.Thread(target=client_loop, args=(client_conf, ledger, stop, 1000 + i),
                         kwargs={"reconnect": True}, daemon=True)
        for i in range(clients)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    next_db = started + db_restart_every if cluster is not None else float("inf")
    next_kill = started + worker_kill_every
    try:
        while time.monotonic() - started < seconds:
            time.sleep(0.2)
            if not server.alive():
                report.server_survived = False
                say("server exited during the soak")
                break
            now = time.monotonic()
            if now >= next_db and cluster is not None:
                say(f"[{now - started:6.0f} s] database stop ({db_down_seconds:.0f} s down)")
                cluster.stop("fast")
                time.sleep(db_down_seconds)
                cluster.start()
                report.db_restarts += 1
                next_db = time.monotonic() + db_restart_every
            if now >= next_kill:
                pid = server.kill_worker()
                say(f"[{now - started:6.0f} s] kill -9 worker {pid}")
                report.worker_kills += 1
                killed_at = time.monotonic()
                back = _wait_for(lambda p=pid: len(server.workers()) == workers and p not in server.workers(), 120)
                if back:
                    report.respawned += 1
                    report.respawn_seconds.append(time.monotonic() - killed_at)
                next_kill = time.monotonic() + worker_kill_every
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
        report.seconds = time.monotonic() - started
    if report.server_survived:
        report.verdict = verify(client_conf, ledger)
        report.exit_code = server.stop()
    else:
        server.kill9()
    check = cli("db", "check", "--open", "--config", str(config))
    report.db_check, report.db_check_ok = check.stdout + check.stderr, check.returncode == 0
    return report


def _wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False
