"""Crash consistency: kill -9 the server during a create/register/destroy storm, again and again.

    PYTHONPATH=. python scripts/crash_loop.py --kills 20                       # SQLite
    PYTHONPATH=. python scripts/crash_loop.py --kills 20 --own-postgres 16230  # a PostgreSQL cluster of its own
    PYTHONPATH=. python scripts/crash_loop.py --kills 20 --database-url postgresql://postgres@127.0.0.1/emptydb

Makes a fresh instance in --dir (default: a temporary folder), then per round: clients storm, the
whole server (master and workers) is killed -9 at a random moment, `db check --open` must pass on
what the crash left, the server is restarted, and every acknowledged object must read back with
its material, every acknowledged Destroy must have held. Exit 0 only if every round passed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tools/

from kmip_bridge.bench.servers import free_port
from tools.reliability import crashloop, harness, pgcluster


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--min-storm", type=float, default=0.5, help="shortest storm before a kill (s)")
    p.add_argument("--max-storm", type=float, default=3.0, help="longest storm before a kill (s)")
    p.add_argument("--dir", type=Path, help="instance folder (default: a new temporary folder)")
    p.add_argument("--port", type=int, help="KMIP port (default: a free one)")
    db = p.add_mutually_exclusive_group()
    db.add_argument("--database-url", help="an empty PostgreSQL database (default: SQLite)")
    db.add_argument("--own-postgres", type=int, metavar="PORT", help="run a throwaway PostgreSQL cluster on PORT")
    args = p.parse_args(argv)

    folder = args.dir or Path(tempfile.mkdtemp(prefix="kmip-bridge-crash-"))
    cluster = None
    url = args.database_url
    if args.own_postgres:
        try:
            cluster, url = pgcluster.start_throwaway(args.own_postgres, "kmip_bridge_crash")
        except RuntimeError as exc:
            print(f"crash_loop: cannot run PostgreSQL: {exc}", file=sys.stderr)
            return 2
    try:
        config = harness.make_instance(folder / "instance", args.port or free_port(), url, args.workers)
        print(f"instance {config} database {url or 'sqlite'}; server log {folder / 'server.log'}", flush=True)
        summary = crashloop.run(
            config, config.parent / "clients" / "admin" / "pykmip.conf", args.kills, args.clients, args.seed,
            (args.min_storm, args.max_storm), folder / "server.log", say=lambda s: print(s, flush=True),
        )
        print(summary.render())
        return 0 if summary.ok else 1
    finally:
        if cluster is not None:
            cluster.destroy()


if __name__ == "__main__":
    sys.exit(main())
