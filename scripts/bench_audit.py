"""Times audit log appends (kmip_bridge/audit.py) without a server: P processes x T threads append
records like a batch item's to one anchored log (a checkpoint every 100 records, as configured by
default), then the log is verified. Reports records/s and CPU (user + system, all processes) per
record, context switches per record, and how often a process had to read the last record back
(another process had appended since its last write). Usage:
    PYTHONPATH=. python scripts/bench_audit.py [--processes P] [--threads T] [--records N] [--think-us U]
N is the number of records per process (split over its threads). With U > 0 each thread sleeps U
microseconds between appends, as a handler thread spends most of a request outside the GIL (token,
database): the processes then take turns at the file as in a server, where with --think-us 0 one
process often appends long runs alone.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import threading
import time
from pathlib import Path

from kmip_bridge.audit import Anchor, AuditLog, load_key, verify


def _fields(i: int) -> dict[str, object]:
    return {"identity": "client-1", "groups": ["admin"], "peer": f"127.0.0.1:{40000 + i % 20000}",
            "operation": "GET", "object": f"3f1c9a7e-0d4b-4c1e-9a57-{i:012d}", "status": "SUCCESS",
            "reason": None}


def _usage() -> tuple[float, int]:
    """CPU seconds (user + system) and context switches (voluntary + involuntary) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, usage.ru_nvcsw + usage.ru_nivcsw


def _worker(path: Path, anchor: Anchor, threads: int, records: int, think: float, go: mp.Event,
            out: mp.Queue) -> None:
    log = AuditLog(path, anchor)  # after fork, as each server worker does
    read_backs = [0]
    resync = log._resync

    def counted(size: int) -> int:
        read_backs[0] += 1
        return resync(size)

    log._resync = counted  # type: ignore[method-assign]
    go.wait()
    cpu, switches = _usage()
    per = records // threads

    def run(t: int) -> None:
        for i in range(per):
            log.write(_fields(t * per + i))
            if think:
                time.sleep(think)

    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    log.close()
    cpu_end, switches_end = _usage()
    out.put((cpu_end - cpu, switches_end - switches, read_backs[0]))


def run(processes: int, threads: int, records: int, think: float) -> None:
    ctx = mp.get_context("fork")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.jsonl"
        anchor = Anchor(Path(tmp) / "audit.key", Path(tmp) / "audit.jsonl.checkpoints", 100)
        AuditLog(path, anchor).close()  # the key and the empty log's checkpoint
        go, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(path, anchor, threads, records, think, go, out))
                 for _ in range(processes)]
        for p in procs:
            p.start()
        time.sleep(0.5)
        t0 = time.perf_counter()
        go.set()
        usage = [out.get() for _ in procs]
        wall = time.perf_counter() - t0
        cpu, switches, read_backs = (sum(u[k] for u in usage) for k in range(3))
        for p in procs:
            p.join()
        total = processes * (records // threads) * threads
        verdict = verify(path, load_key(anchor.key_file), anchor.checkpoints)
        assert verdict.intact and verdict.records == total, verdict
        print(f"{processes} proc x {threads} threads, {total} records: {total / wall:,.0f} records/s, "
              f"{cpu / total * 1e6:.1f} us CPU/record, {switches / total:.2f} context switches/record, "
              f"{read_backs / total:.2f} read-backs/record, wall {wall:.2f} s")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--records", type=int, default=20_000)
    p.add_argument("--think-us", type=float, default=0.0)
    args = p.parse_args()
    run(args.processes, args.threads, args.records, args.think_us / 1e6)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
