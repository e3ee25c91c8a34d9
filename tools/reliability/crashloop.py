"""The kill loop: a create/register/destroy storm from several clients, kill -9 of the whole
server (master and workers) at a random moment, `db check --open` on what the crash left, restart,
and every acknowledged object read back (storm.verify). Repeated ``kills`` times."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .harness import ServerProcess, cli
from .storm import Ledger, client_loop, verify


@dataclass
class Summary:
    kills: int = 0
    checks_failed: list[str] = field(default_factory=list)  # db check reports that were not OK
    lost: list[str] = field(default_factory=list)
    resurrected: list[str] = field(default_factory=list)
    last_checked: int = 0  # objects read back after the last restart
    checked_total: int = 0  # object checks over every round
    seconds: float = 0.0
    ledger: Ledger = field(default_factory=Ledger)

    @property
    def ok(self) -> bool:
        return not (self.checks_failed or self.lost or self.resurrected or self.ledger.wrong)

    def render(self) -> str:
        led = self.ledger
        lines = [
            f"kills survived: {self.kills}   time: {self.seconds:.0f} s",
            f"acknowledged: {dict(led.acked)}",
            f"unanswered (connection cut by a kill): {sum(led.unanswered.values())} {dict(led.unanswered)}",
            f"objects: {len(led.live)} live, {len(led.destroyed)} destroyed; "
            f"checked after the last restart: {self.last_checked}, object checks in all: {self.checked_total}",
            f"lost: {len(self.lost)}   destroyed but readable: {len(self.resurrected)}   "
            f"wrong material read: {len(led.wrong)}   db check failures: {len(self.checks_failed)}",
        ]
        if led.answered:
            lines.append(f"answered failures: {dict(led.answered)}")
        lines += [f"LOST {x}" for x in self.lost[:20]]
        lines += [f"RESURRECTED {x}" for x in self.resurrected[:20]]
        lines += [f"DB CHECK {x}" for x in self.checks_failed[:5]]
        lines.append("RESULT: " + ("OK" if self.ok else "FAILED"))
        return "\n".join(lines)


def run(config: Path, client_conf: Path, kills: int, clients: int = 4, seed: int = 1,
        storm_seconds: tuple[float, float] = (0.5, 3.0), log_path: Path | None = None,
        say: Callable[[str], None] = print) -> Summary:
    rng = random.Random(seed)
    summary = Summary()
    ledger = summary.ledger
    server = ServerProcess(config, log_path)
    started = time.monotonic()
    server.start()
    try:
        for k in range(kills):
            stop = threading.Event()
            threads = [
                threading.Thread(target=client_loop, args=(client_conf, ledger, stop, seed * 100_003 + k * 101 + i),
                                 daemon=True)
                for i in range(clients)
            ]
            for t in threads:
                t.start()
            pause = rng.uniform(*storm_seconds)
            time.sleep(pause)
            server.kill9()
            stop.set()
            for t in threads:
                t.join(timeout=120)
            # The state the crash left, before the server touches it again.
            check = cli("db", "check", "--open", "--config", str(config))
            if check.returncode != 0:
                summary.checks_failed.append(f"after kill {k + 1}: {check.stdout.strip()} {check.stderr.strip()}")
            server.start()
            verdict = verify(client_conf, ledger)
            summary.kills += 1
            summary.last_checked = verdict.checked
            summary.checked_total += verdict.checked
            summary.lost += verdict.lost
            summary.resurrected += verdict.resurrected
            say(f"kill {k + 1}/{kills} after {pause:.1f} s: checked {verdict.checked} "
                f"(intact {verdict.intact}, destroyed {verdict.destroyed_ok}), lost {len(verdict.lost)}, "
                f"db check {'OK' if check.returncode == 0 else 'FAILED'}")
    finally:
        server.stop()
        summary.seconds = time.monotonic() - started
    return summary
