"""``python -m kmip_bridge.bench``: start the target(s), drive the workload, report.

Per target: start (or reach) the server, fork the client processes, let them connect and create
their warm set, then start every process at the same instant: ``--warmup`` seconds unmeasured,
``--duration`` seconds measured. The parent only sleeps and samples CPU counters meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from . import profile, report, scale, sweep
from .idle import IdleHolder, raise_fd_limit
from .loadgen import Endpoint, ProcessSpec, spread, start_processes
from .servers import OurServer, RunningServer, TargetError, cpu_seconds, machine_cpu, rss_bytes
from .stock import StockServer
from .workloads import WORKLOADS, needs

SETUP_TIMEOUT = 600.0


class Target(Protocol):
    label: str

    def start(self) -> Endpoint: ...
    def pids(self) -> list[int]: ...
    def database_pids(self) -> list[int]: ...
    def describe(self) -> dict[str, object]: ...
    def stop(self) -> None: ...


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kmip_bridge.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=WORKLOADS, default="create-get")
    p.add_argument("--clients", type=int, default=16, help="concurrent connections (default 16)")
    p.add_argument("--processes", type=int, default=2, help="client processes (default 2)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds (default 20)")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first (default 3)")
    p.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--kek-kind", choices=("aes-kwp", "rsa-oaep"), default="aes-kwp")
    p.add_argument("--server-workers", type=int, help="our server's worker processes (default: its config)")
    p.add_argument("--target", help="HOST:PORT of a running kmip-bridge instead of a fresh one")
    p.add_argument("--client-conf", type=Path, help="client folder or pykmip.conf for --target")
    p.add_argument("--compare", action="store_true", help="also run the stock PyKMIP server, back to back")
    p.add_argument("--stock-only", action="store_true", help="run only the stock PyKMIP server")
    p.add_argument("--stock-logging-level", default="WARNING", help="pykmip-server logging_level (default WARNING)")
    p.add_argument("--kmip-version", default="1.2", help="protocol version of the requests (default 1.2)")
    p.add_argument("--warm-keys", type=int, default=256, help="keys created first for get/mixed")
    p.add_argument("--names", type=int, default=64, help="named keys created first for locate/mixed")
    p.add_argument("--json", type=Path, help="write the results as JSON to this file")
    p.add_argument("--samples", type=Path, help="write every latency sample (µs, per operation) as JSON here")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                   help="before each target, wait up to S seconds for the machine to be idle (shared hosts)")
    p.add_argument("--workdir", type=Path, help="parent folder for the temporary instances")
    p.add_argument("--keep", action="store_true", help="keep the temporary instances (and their logs)")
    p.add_argument("--py-spy", type=Path, metavar="DIR", help="profile the server processes into DIR")
    p.add_argument("--py-spy-native", action="store_true", help="with --py-spy: include native frames")
    p.add_argument("--py-spy-idle", action="store_true", help="with --py-spy: also sample waiting threads")
    p.add_argument("--keyhsm-mode", choices=("inprocess", "socket", "both"), default="inprocess",
                   help="our server's keyhsm.mode; 'both' runs the two back to back (cost of the socket)")
    p.add_argument("--idle-connections", type=int, default=0, metavar="N",
                   help="hold N idle mutual-TLS connections open through the run; each must answer afterwards")
    p.add_argument("--per-object", choices=("off", "on", "both"), default="off",
                   help="keyhsm.per_object of our server: a token key per object (both: back to back)")
    p.add_argument("--db-writer", choices=("process", "inline", "both"), default="process",
                   help="our server's database.writer; 'both' runs the two back to back")
    p.add_argument("--max-connections", type=int, help="our server's server.max_connections (default: its config)")
    p.add_argument("--server-metrics", action="store_true",
                   help="turn on our server's /metrics and report writes per commit and how busy SQLite's "
                        "write lock was over the measured window (adds the metrics' own cost)")
    p.add_argument("--scale", metavar="SIZES",
                   help="e.g. 1000,1000000: bulk-load each number of objects in turn and measure get-locate "
                        "at each size (--warm-keys sampled objects)")
    p.add_argument("--sweep", metavar="CLIENTS", nargs="?", const=sweep.DEFAULT,
                   help=f"run each number of clients in turn (default {sweep.DEFAULT}) against kmip-bridge and "
                        "stock PyKMIP; writes sweep.svg (ops/s and p99 against clients) and sweep.json")
    p.add_argument("--sweep-out", type=Path, default=Path("bench-sweep"), metavar="DIR",
                   help="folder for --sweep's sweep.svg and sweep.json (default ./bench-sweep)")
    return p


def _recv(conn: Any, timeout: float, what: str) -> Any:
    if not conn.poll(timeout):
        raise TargetError(f"client process gave no {what} within {timeout:.0f} s")
    message = conn.recv()
    if message[0] == "error":
        raise TargetError(f"client process failed: {message[1]}")
    return message[1]


def _sleep_until(t_ns: int) -> None:
    while (left := t_ns - time.perf_counter_ns()) > 0:
        time.sleep(left / 1e9)


def run_load(ep: Endpoint, args: argparse.Namespace, target: Target, tag: str,
             given: tuple[list[bytes], list[str]] | None = None) -> dict[str, Any]:
    """``given``: ids and names of objects that exist already (--scale); nothing is created first."""
    version = tuple(int(x) for x in args.kmip_version.split("."))
    warm, named = needs(args.workload) if given is None else (False, False)
    per_clients = spread(args.clients, args.processes)
    per_warm = spread(args.warm_keys if warm else 0, args.processes)
    specs, first = [], 0
    for i, n in enumerate(per_clients):
        if n == 0:
            continue
        names = [f"bench-{tag}-{i}-{k}" for k in range(args.names // args.processes)] if named else []
        specs.append(ProcessSpec(ep, args.workload, version, n, first, per_warm[i], names,  # type: ignore[arg-type]
                                 *(given or ([], []))))
        first += n
    rss: dict[str, float] = {}
    holder = idle_info = None
    if args.idle_connections:
        rss["before_idle"] = _rss_mb(target)
        holder = IdleHolder(ep, args.idle_connections, version)  # type: ignore[arg-type]
        idle_info = holder.opened()
        rss["idle_open"] = _rss_mb(target)
        print(f"{target.label}: {idle_info['opened']} idle connections open ({idle_info['open_s']} s)",
              file=sys.stderr)
    try:
        result = _drive(args, target, specs, rss)
        if holder is not None:
            assert idle_info is not None
            checked = holder.check()
            errors = {**idle_info["errors"], **checked["errors"]}
            result["idle"] = {"requested": args.idle_connections, "opened": idle_info["opened"],
                              "open_s": idle_info["open_s"], "answered_after": checked["answered"],
                              "errors": errors}
            for label, n in errors.items():
                result["errors"][f"idle {label}"] = n
            result["errors_total"] = sum(result["errors"].values())
    finally:
        if holder is not None:
            holder.close()
    result["server_rss_mb"] = rss or None
    return result


def _rss_mb(target: Target) -> float:
    return round(rss_bytes(target.pids()) / 2**20, 1)


def _drive(args: argparse.Namespace, target: Target, specs: list[ProcessSpec], rss: dict[str, float]) -> dict[str, Any]:
    procs = start_processes(specs)
    try:
        t_setup = time.monotonic()
        infos = [_recv(conn, SETUP_TIMEOUT, "ready signal") for _, conn in procs]
        setup_s = time.monotonic() - t_setup
        start = time.perf_counter_ns() + 200_000_000
        warm_end = start + int(args.warmup * 1e9)
        end = warm_end + int(args.duration * 1e9)
        for _, conn in procs:
            conn.send(("go", start, warm_end, end))
        _sleep_until(warm_end)
        pids, db_pids = target.pids(), target.database_pids()
        counters = getattr(target, "write_counters", lambda: None)
        cpu0, db0, m0, w0 = cpu_seconds(pids), cpu_seconds(db_pids), machine_cpu(), counters()
        spies = []
        if args.py_spy:
            spies = profile.start(
                pids, args.duration, args.py_spy / target.label, args.py_spy_native, args.py_spy_idle
            )
        _sleep_until(end)
        cpu1, db1, m1, w1 = cpu_seconds(pids), cpu_seconds(db_pids), machine_cpu(), counters()
        if pids:
            rss["end"] = round(rss_bytes(target.pids()) / 2**20, 1)
        parts = [_recv(conn, args.duration + 60, "results") for _, conn in procs]
        for spy in spies:
            spy.wait(timeout=60)
    finally:
        for proc, conn in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
            conn.close()
    result = report.merge(parts, args.duration, sum(s.clients for s in specs))
    if args.samples:
        result["_samples_us"] = report.samples_us(parts)
    ops = result["ops"]
    result["server"] = report.cpu_block(cpu1 - cpu0, args.duration, ops, processes=len(pids)) if pids else None
    if db_pids:
        result["database_cpu"] = report.cpu_block(db1 - db0, args.duration, ops, backends=len(db_pids))
    busy, steal = m1[0] - m0[0], m1[1] - m0[1]
    ours = (cpu1 - cpu0) + (db1 - db0) + result["generator"]["cpu_s"]
    result["machine"] = {
        "busy_cores": round(busy / args.duration, 2),
        "steal_cores": round(steal / args.duration, 2),
        # CPU used by anything but the server, its database backends and the generator
        "other_cores": round((busy - ours) / args.duration, 2) if pids else None,
    }
    if pids and busy - ours > 0.15 * args.duration:
        print(f"{target.label}: warning: other processes used {(busy - ours) / args.duration:.2f} cores "
              "during the measurement; the numbers are disturbed", file=sys.stderr)
    if w0 is not None and w1 is not None:
        result["db_writes"] = report.write_block({k: w1[k] - w0[k] for k in w0}, args.duration)
    if args.workload == "create-get":
        result["pairs_per_s"] = round(result["ops_by_kind"].get("get", 0) / args.duration, 1)
    result["tls"] = " ".join(infos[0]["tls"])
    result["setup_s"] = round(setup_s, 2)
    if args.py_spy:
        summary = profile.summarise(sorted((args.py_spy / target.label).glob("pid-*.txt")))
        result["profile"] = summary
        print(f"{target.label}: " + profile.render(summary), file=sys.stderr)
    return result


def wait_idle(limit: float, label: str, threshold: float = 0.15) -> None:
    """Waits (up to ``limit`` s) until the machine's busy CPU over 3 s is under ``threshold`` cores."""
    deadline = time.monotonic() + limit
    while True:
        m0 = machine_cpu()
        time.sleep(3.0)
        busy = (machine_cpu()[0] - m0[0]) / 3.0
        if busy < threshold:
            return
        if time.monotonic() > deadline:
            print(f"{label}: machine still busy ({busy:.2f} cores); measuring anyway", file=sys.stderr)
            return


def bench(target: Target, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    print(f"{target.label}: starting", file=sys.stderr)
    ep = target.start()
    try:
        print(f"{target.label}: {ep.host}:{ep.port}; {args.clients} clients in {args.processes} processes, "
              f"{args.workload}, {args.warmup:g} s warm-up + {args.duration:g} s", file=sys.stderr)
        if args.wait_idle > 0:
            wait_idle(args.wait_idle, target.label)
        result = run_load(ep, args, target, tag)
    finally:
        target.stop()
    result["target"] = target.label
    result["config"] = {
        "workload": args.workload, "clients": args.clients, "processes": args.processes,
        "duration_s": args.duration, "warmup_s": args.warmup, "kmip_version": args.kmip_version,
        **target.describe(),
    }
    return result


def _source_version() -> str | None:
    """The commit measured, with '+N' for N uncommitted changes in the working tree."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                               timeout=10, check=True).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+{len(dirty)}" if dirty else head


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.clients < 1 or args.processes < 1 or args.duration <= 0:
        print("--clients, --processes and --duration must be positive", file=sys.stderr)
        return 2
    if args.scale and (args.target or args.client_conf or args.compare or args.stock_only):
        print("--scale bulk-loads a fresh instance of its own: it takes no --target, --compare or --stock-only",
              file=sys.stderr)
        return 2
    if args.sweep:
        if args.scale:
            print("--sweep and --scale are separate runs", file=sys.stderr)
            return 2
        try:
            counts = sweep.parse_clients(args.sweep)
        except TargetError as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 2
        args.compare = True  # the curve is always drawn for both servers
        if args.max_connections is None and not (args.target or args.client_conf):
            args.max_connections = max(1024, 2 * counts[-1] + 64)  # split over the workers
        raise_fd_limit(counts[-1] + args.idle_connections)
    base = Path(tempfile.mkdtemp(prefix="kmip-bench-", dir=args.workdir))
    tag = base.name.rsplit("-", 1)[-1]
    targets: list[Target] = []
    if not args.stock_only:
        if args.target or args.client_conf:
            if not args.client_conf:
                print("--target needs --client-conf", file=sys.stderr)
                return 2
            targets.append(RunningServer(args.target, args.client_conf))
        else:
            if args.idle_connections and args.max_connections is None:
                # server.max_connections is split evenly over the workers (a full worker leaves new
                # connections to the others): make room for the idle set, the clients and headroom.
                args.max_connections = max(1024, args.idle_connections + args.clients + 64)
                print(f"server.max_connections set to {args.max_connections} for the idle connections",
                      file=sys.stderr)
            modes = ("inprocess", "socket") if args.keyhsm_mode == "both" else (args.keyhsm_mode,)
            shreds = {"off": (False,), "on": (True,), "both": (False, True)}[args.per_object]
            writers = ("process", "inline") if args.db_writer == "both" else (args.db_writer,)
            for mode in modes:
                for shred in shreds:
                    for writer in writers:
                        # short names: the instance's default socket paths must fit a Unix socket
                        name = {("inprocess", False): "kmip-bridge", ("socket", False): "kb-socket",
                                ("inprocess", True): "kb-po", ("socket", True): "kb-sock-po"}[(mode, shred)]
                        if writer != "process":  # short: the socket paths must still fit
                            name = "kb-il" if name == "kmip-bridge" else f"{name}-il"
                        folder = base / name
                        targets.append(OurServer(folder, args.database, args.kek_kind, args.server_workers, mode,
                                                 args.max_connections, args.server_metrics, per_object=shred,
                                                 db_writer=writer))
    if args.compare or args.stock_only:
        targets.append(StockServer(base / "pykmip", args.stock_logging_level))
    if args.idle_connections:
        # one descriptor per idle connection here and one in the server, which inherits the limit
        soft, hard = raise_fd_limit(args.idle_connections + args.clients)
        print(f"open-files limit: soft {soft}, hard {hard}", file=sys.stderr)
    results = []
    try:
        if args.scale:
            results = scale.run(args, base, run_load)
        elif args.sweep:
            results = sweep.run(args, targets, tag, run_load, wait_idle)
        else:
            for t in targets:
                results.append(bench(t, args, tag))
    except TargetError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"instances kept in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    if args.samples:
        args.samples.write_text(json.dumps({r["target"]: r.pop("_samples_us") for r in results}))
    print(report.markdown(results))
    meta = {"argv": sys.argv[1:] if argv is None else argv, "python": platform.python_version(),
            "cpus": os.cpu_count(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": _source_version()}
    if args.sweep:
        json_path, svg_path = sweep.write(args.sweep_out, results, meta)
        print("\n" + sweep.table(sweep.points(results)))
        print(f"sweep: {svg_path} and {json_path} written", file=sys.stderr)
    if args.json:
        report.write_json(args.json, results, meta)
    return 0 if all(r["errors_total"] == 0 for r in results) else 3
