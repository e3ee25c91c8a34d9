"""Times `kmip-bridge db backup` and `db restore` over N objects (default 10,000) in a throwaway
instance, and checks that the restored database holds every object. Usage:
    PYTHONPATH=. python scripts/bench_backup.py [--objects N] [--database-url URL]
(the URL must name an EMPTY database of its own: the script creates the tables in it and
restores over them)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_rewrap import CLI, load_objects


def _timed(*args: str) -> float:
    t0 = time.monotonic()
    subprocess.run([*CLI, *args], check=True, capture_output=True, text=True)
    return time.monotonic() - t0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--objects", type=int, default=10_000)
    p.add_argument("--database-url", help="an EMPTY database of its own")
    args = p.parse_args()
    from kmip_bridge.admin.instance import init_instance
    from kmip_bridge.config import load
    from kmip_bridge.store.backup import object_count

    with tempfile.TemporaryDirectory() as tmp:
        settings = load(init_instance(Path(tmp) / "inst", 16396, args.database_url, "aes-kwp").path)
        print(f"loaded {args.objects} objects in {load_objects(settings, args.objects):.1f} s", file=sys.stderr)
        cfg, out = str(settings.path), Path(tmp) / "backup"
        backup = _timed("db", "backup", "--config", cfg, "--output", str(out))
        restore = _timed("db", "restore", "--force", "--config", cfg, "--input", str(out))
        restored = object_count(settings.database.url)
        kind = "sqlite" if not args.database_url else "postgresql"
        print(f"{args.objects} objects ({kind}): backup {backup:.1f} s wall ({out.stat().st_size / 1e6:.1f} MB), "
              f"restore {restore:.1f} s wall (incl. the KEK check); {restored} objects after restore")
        return 0 if restored == args.objects else 1


if __name__ == "__main__":
    sys.exit(main())
