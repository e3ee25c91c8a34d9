"""Times `kmip-bridge keyhsm rewrap` over N objects (default 10,000) in a throwaway instance.

Set-up bulk-loads sealed rows through the Key HSM and store layers (not over KMIP), rotates the
KEK, then runs the real CLI and reports its wall time. Usage:
    PYTHONPATH=. python scripts/bench_rewrap.py [--objects N] [--kek-kind aes-kwp|rsa-oaep]
        [--database-url URL] [--batch N]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "kmip_bridge.cli"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_objects(settings: Any, n: int) -> float:
    """Seals and stores ``n`` objects (64 bytes of material, no attributes) straight through the
    Key HSM and store layers; returns the seconds it took."""
    from kmip_bridge.app import open_keyhsm
    from kmip_bridge.operations.objects import sealed_columns
    from kmip_bridge.store import ObjectRow, Store

    hsm, store = open_keyhsm(settings), Store(settings.database.url)
    try:
        t0 = time.monotonic()
        material = b"\x42" * 64
        with store.unit_of_work():
            for _ in range(n):
                uid = str(uuid.uuid4())
                s = hsm.seal(uid, material, "object-type:2")
                store.insert_object(ObjectRow(
                    uid=uid, object_type=2, state=1, owner="bench", created_at=time.time_ns() // 1000,
                    **sealed_columns(s)), [])  # type: ignore[arg-type]
        return time.monotonic() - t0
    finally:
        hsm.close()
        store.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--objects", type=int, default=10_000)
    p.add_argument("--kek-kind", default="aes-kwp")
    p.add_argument("--database-url", help="an EMPTY database of its own (tables are created in it)")
    p.add_argument("--batch", default="200")
    args = p.parse_args()
    from kmip_bridge.admin.instance import init_instance
    from kmip_bridge.config import load

    with tempfile.TemporaryDirectory() as tmp:
        settings = init_instance(Path(tmp) / "inst", 15696, args.database_url, args.kek_kind)
        settings = load(settings.path)
        seconds = load_objects(settings, args.objects)
        print(f"loaded {args.objects} objects in {seconds:.1f} s", file=sys.stderr)
        cfg = str(settings.path)
        subprocess.run([*CLI, "keyhsm", "rotate", "--config", cfg], check=True, capture_output=True)
        t0, cpu0 = time.monotonic(), _children_cpu()
        result = subprocess.run([*CLI, "keyhsm", "rewrap", "--batch", args.batch, "--config", cfg],
                                capture_output=True, text=True)
        wall, cpu = time.monotonic() - t0, _children_cpu() - cpu0
        print(result.stderr.strip().splitlines()[-1])
        print(result.stdout.strip())
        print(f"rewrap of {args.objects} objects ({args.kek_kind}, "
              f"{'sqlite' if not args.database_url else 'postgresql'}): {wall:.1f} s wall, "
              f"{cpu:.1f} s CPU in the rewrap process (user+sys; less sensitive to a busy machine), "
              f"exit {result.returncode}")
        return result.returncode


if __name__ == "__main__":
    sys.exit(main())
