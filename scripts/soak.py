"""Soak: mixed load for N minutes with faults on a schedule, then everything acknowledged checked.

    PYTHONPATH=. python scripts/soak.py --minutes 5 --own-postgres 16240          # PostgreSQL restarts + worker kills
    PYTHONPATH=. python scripts/soak.py --minutes 5 --sqlite                       # worker kills only

The database is a PostgreSQL cluster of the soak's own (initdb in a temporary folder, run as the
'postgres' user when root), so restarting it disturbs nothing else. Exit 0 only if the server
survived, the master replaced every killed worker, nothing acknowledged was lost, `db check --open`
passed and SIGTERM ended the server with exit 0.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tools/

from kmip_bridge.bench.servers import free_port
from tools.reliability import harness, pgcluster, soak


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--db-restart-every", type=float, default=60.0, help="seconds between database restarts")
    p.add_argument("--db-down", type=float, default=3.0, help="seconds the database stays down")
    p.add_argument("--worker-kill-every", type=float, default=45.0, help="seconds between worker kills")
    p.add_argument("--dir", type=Path, help="work folder (default: a new temporary folder)")
    p.add_argument("--port", type=int, help="KMIP port (default: a free one)")
    db = p.add_mutually_exclusive_group(required=True)
    db.add_argument("--own-postgres", type=int, metavar="PORT", help="run a throwaway PostgreSQL cluster on PORT")
    db.add_argument("--sqlite", action="store_true", help="SQLite (no database restarts)")
    args = p.parse_args(argv)

    folder = args.dir or Path(tempfile.mkdtemp(prefix="kmip-bridge-soak-"))
    cluster = None
    url = None
    if args.own_postgres:
        try:
            cluster, url = pgcluster.start_throwaway(args.own_postgres, "kmip_bridge_soak")
        except RuntimeError as exc:
            print(f"soak: cannot run PostgreSQL: {exc}", file=sys.stderr)
            return 2
    try:
        config = harness.make_instance(folder / "instance", args.port or free_port(), url, args.workers)
        print(f"instance {config} database {url or 'sqlite'}; server log {folder / 'server.log'}", flush=True)
        report = soak.run(
            config, config.parent / "clients" / "admin" / "pykmip.conf", args.minutes * 60, cluster,
            args.clients, args.db_restart_every, args.db_down, args.worker_kill_every, folder / "server.log",
            say=lambda s: print(s, flush=True),
        )
        print(report.render())
        return 0 if report.ok else 1
    finally:
        if cluster is not None:
            cluster.destroy()


if __name__ == "__main__":
    sys.exit(main())
