"""Per-request CPU of the request path alone: ``Session.handle`` on pre-encoded Create and Get
requests, in one thread of one process (no TLS, no event loop, no other thread), on a fresh
SQLite instance with the ``inline`` writer. Prints wall and CPU time per operation, then (with
``--profile``) cProfile's own time per component, the ``fsync`` wait of COMMIT apart.

    PYTHONPATH=. python scripts/profile_request.py --pairs 3000 [--profile] [--dir /tmp/kb-prof]

docs/performance.md quotes its output ("Database writer process").
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from kmip.core.enums import Operation

# (component, substring of "file:function"); the first match wins.
COMPONENTS = (
    ("sqlite3 COMMIT (the fsync wait)", "'commit' of 'sqlite3"), ("sqlite3 statements (C)", "sqlite3"),
    ("SoftHSM2 / PKCS#11", "pkcs11"), ("SQLAlchemy", "sqlalchemy"), ("TTLV codec", "protocol/ttlv.py"),
    ("response gate", "protocol/gate.py"), ("KMIP messages", "protocol/"), ("audit record", "audit.py"),
    ("envelope / Key HSM (ours)", "keyhsm/"), ("store (ours)", "store/"),
    ("operations and dispatch (ours)", "operations/"), ("policy (ours)", "policy/"),
    ("cryptography", "cryptography"), ("enum lookups", "enum.py"), ("standard library", "python3."),
    ("built-ins", "{"),
)


def _instance(folder: Path) -> Path:
    config = folder / "server.yaml"
    if not config.exists():
        subprocess.run([sys.executable, "-m", "kmip_bridge.cli", "init", "--dir", str(folder), "--port", "15999"],
                       check=True, capture_output=True)
    cfg = yaml.safe_load(config.read_text())
    cfg["database"]["writer"] = "inline"  # no writer process here: the store commits in this thread
    config.write_text(yaml.safe_dump(cfg))
    return config


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=2000, help="Create+Get pairs measured (after 200 unmeasured)")
    p.add_argument("--profile", action="store_true", help="then the same again under cProfile, by component")
    p.add_argument("--dir", type=Path, help="instance folder (default: a new temporary one)")
    args = p.parse_args()

    from kmip_bridge.app import App
    from kmip_bridge.bench.workloads import IdMessages, create_message, uid_of
    from kmip_bridge.config import load

    config = _instance(args.dir or Path(tempfile.mkdtemp(prefix="kb-prof-")))
    app = App(load(config))
    cert = x509.load_pem_x509_certificate((config.parent / "clients" / "admin" / "cert.pem").read_bytes())
    session = app.open_session(cert.public_bytes(Encoding.DER), "127.0.0.1:1")
    create, get = create_message((1, 2)), IdMessages(Operation.GET, (1, 2))

    def pairs(n: int) -> None:
        for _ in range(n):
            uid = uid_of(session.handle(create))
            assert uid is not None
            session.handle(get(uid))

    pairs(200)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    pairs(args.pairs)
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    ops = 2 * args.pairs
    cpu = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    print(f"{ops} operations: wall {(t1 - t0) / ops * 1e3:.3f} ms, CPU {cpu / ops * 1e3:.3f} ms per operation")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        pairs(args.pairs)
        prof.disable()
        shares: dict[str, float] = {}
        for (path, _line, name), (_cc, _nc, own, _cum, _callers) in pstats.Stats(prof).stats.items():  # type: ignore[attr-defined]
            key = f"{path}:{name}"
            component = next((c for c, pattern in COMPONENTS if pattern in key), "other")
            shares[component] = shares.get(component, 0.0) + own
        total = sum(shares.values())
        rest = total - shares.get(COMPONENTS[0][0], 0.0)
        print(f"cProfile own time (inflated by the profiler): {total / ops * 1e3:.3f} ms per operation")
        print("share of all / share without the COMMIT wait, component")
        for name, own in sorted(shares.items(), key=lambda kv: -kv[1]):
            without = "" if name == COMPONENTS[0][0] else f"{own / rest * 100:5.1f}%"
            print(f"{own / total * 100:5.1f}%  {without:>6}  {name}")
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
