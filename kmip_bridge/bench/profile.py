"""Optional server profiling with py-spy during the measured window, and a summary of the samples.

``py-spy record --format raw`` writes collapsed stacks (``root;...;leaf count``). Each sample is
charged to the innermost frame that belongs to a known component (TLS, TTLV codec, SQLAlchemy,
the token, ...), which answers "where does a request's CPU time go" without a flame graph.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# (component, substrings of a frame). A sample goes to the innermost frame that names a component;
# generic native frames (libc, libcrypto, the interpreter) are passed over, so that a write() under
# SSL_write counts as TLS and an AES-GCM call under cryptography's bindings as cryptography.
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("TLS (ssl module / libssl)", ("/ssl.py", "libssl", "_ssl.c", "_ssl__")),
    ("SoftHSM2 / PKCS#11", ("softhsm", "pkcs11", "kmip_bridge/keyhsm/token.py", "kmip_bridge/keyhsm/library.py")),
    ("sqlite3 (C)", ("sqlite3", "libsqlite")),
    ("psycopg2 / libpq", ("psycopg2", "libpq")),
    ("SQLAlchemy", ("sqlalchemy",)),
    ("cryptography (AES-GCM, RSA)", ("cryptography/", "_rust.abi3")),
    ("logging / JSON", ("logging/", "json/", "kmip_bridge/logs.py")),
    ("TTLV codec", ("kmip_bridge/protocol/ttlv.py",)),
    ("KMIP messages/attributes", ("kmip_bridge/protocol/",)),
    ("envelope / KEK (ours)", ("kmip_bridge/keyhsm/",)),
    ("store (ours)", ("kmip_bridge/store/",)),
    ("operations (ours)", ("kmip_bridge/operations/", "kmip_bridge/policy/", "kmip_bridge/app.py")),
    ("server loop (ours)", ("kmip_bridge/server/",)),
    ("load generator", ("kmip_bridge/bench/",)),
    ("PyKMIP codec (kmip.core)", ("kmip/core/",)),
    ("PyKMIP engine/session", ("kmip/services/", "kmip/pie/")),
    ("multiprocessing manager IPC", ("multiprocessing/managers.py", "multiprocessing/connection.py")),
    ("select / epoll", ("selectors.py", "selectmodule")),
    ("threads / locks", ("threading.py", "pthread_cond", "futex", "take_gil", "drop_gil")),
)
_GENERIC = ("(libc.so", "(libcrypto.so", "(libpthread", "(python3", "(libpython", "(ld-linux", "ceval.c", "0x")
_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")


def start(
    pids: list[int], seconds: float, out_dir: Path, native: bool, idle: bool = False, rate: int = 100
) -> list[subprocess.Popen[bytes]]:
    exe = Path(sys.executable).parent / "py-spy"
    cmd = str(exe) if exe.exists() else shutil.which("py-spy")
    if cmd is None:
        raise RuntimeError("py-spy not found: pip install py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for pid in pids:
        args = [cmd, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", str(rate),
                "--format", "raw", "--output", str(out_dir / f"pid-{pid}.txt")]
        args.append("--native" if native else "--nonblocking")
        if idle:
            args.append("--idle")
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def _frame(f: str) -> str:
    return _FRAME_LINE.sub(")", f)


def _component(frames: list[str]) -> str:
    for f in reversed(frames):
        if f.startswith(_GENERIC) or any(g in f for g in _GENERIC[:-1]):
            continue
        for name, needles in COMPONENTS:
            if any(n in f for n in needles):
                return name
    return "other"


def summarise(paths: list[Path], top: int = 15) -> dict[str, object]:
    by_component: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            m = _LINE.match(line)
            if not m:
                continue
            frames = [f for f in m.group(1).split(";") if not f.startswith("process ") and not f.startswith("thread ")]
            n = int(m.group(2))
            total += n
            by_component[_component(frames)] += n
            if frames:
                leaf[_frame(frames[-1])] += n
            for f in {_frame(f) for f in frames}:
                inclusive[f] += n

    def pct(c: Counter[str], k: int) -> list[tuple[str, float]]:
        return [(name, round(100.0 * n / total, 1)) for name, n in c.most_common(k)] if total else []

    return {
        "samples": total,
        "components_pct": pct(by_component, len(by_component)),
        "self_pct": pct(leaf, top),
        # frames on (nearly) every stack - thread bootstrap, runpy - say nothing
        "inclusive_pct": [x for x in pct(inclusive, top * 3) if x[1] < 99.0][: top * 2],
    }


def render(summary: dict[str, object]) -> str:
    lines = [f"py-spy: {summary['samples']} on-CPU samples"]
    for title, key in (("by component", "components_pct"), ("self (leaf frame)", "self_pct"),
                       ("inclusive", "inclusive_pct")):
        lines.append(f"  {title}:")
        lines += [f"    {p:5.1f}%  {name}" for name, p in summary[key]]  # type: ignore[attr-defined]
    return "\n".join(lines)
