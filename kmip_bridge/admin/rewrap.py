"""`kmip-bridge keyhsm rewrap`: moves every object sealed under a retired KEK version to the
current version of its KEK name, online, in batches, so that the old version can be revoked.

The Key HSM layer does the token work (KeyHsm.rewrap): for envelope format 2 it rewraps only the
DEK, so nonce and ciphertext stay byte for byte; a format-1 row (material bound to its KEK) is
re-sealed once into format 2. Neither DEK nor material reaches this module. Resumable by
construction: each run selects the rows still under a retired version. A row changed meanwhile
(row_version or KEK moved) is skipped and retried in a later pass.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from ..keyhsm import IntegrityError
from ..operations.objects import _aad_context, sealed_columns, sealed_of
from ..store import Store

MAX_PASSES = 5


@dataclass
class Outcome:
    retired: list[str]
    total: int = 0  # objects under a retired version when the run started
    rewrapped: int = 0
    resealed: int = 0  # of which format-1 rows, converted by re-sealing (format 2 keeps its ciphertext)
    raced: int = 0  # skipped because the row changed meanwhile (retried in a later pass)
    failed: dict[str, str] = field(default_factory=dict)  # uid -> why (e.g. tampered with)
    remaining: int = 0  # still under a retired version at the end
    seconds: float = 0.0


def retired_labels(keks: Iterable[Any], names: Iterable[str]) -> list[str]:
    """Every version but the newest of each KEK name in ``names``."""
    wanted = set(names)
    latest: dict[str, int] = {}
    mine = [k for k in keks if k.name in wanted]
    for k in mine:
        latest[k.name] = max(latest.get(k.name, 0), k.version)
    return sorted(k.label for k in mine if k.version < latest[k.name])


def _fmt_eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 else (
        f"{seconds // 60}m{seconds % 60:02d}s"
    )


def rewrap(hsm: Any, store: Store, names: Iterable[str], batch: int = 200, progress: IO[str] | None = None,
           pause: float = 0.0) -> Outcome:
    """Rewraps every object under a retired version of the KEK ``names``; ``pause`` seconds
    between batches throttle it on a busy server."""
    start = time.monotonic()
    out = Outcome(retired_labels(hsm.list_keks(), names))
    counts = store.count_by_kek()
    out.total = sum(counts.get(label, 0) for label in out.retired)

    def report(final: bool = False) -> None:
        if progress is None:
            return
        elapsed = max(time.monotonic() - start, 1e-9)
        rate = out.rewrapped / elapsed
        left = max(out.total - out.rewrapped - len(out.failed), 0)
        eta = _fmt_eta(left / rate) if rate > 0 else "?"
        pct = 100.0 * out.rewrapped / out.total if out.total else 100.0
        word = "done" if final else f"ETA {eta}"
        print(
            f"rewrap: {out.rewrapped}/{out.total} objects ({pct:.1f}%), {rate:.0f}/s, "
            f"{out.raced} raced, {len(out.failed)} failed, {word}",
            file=progress, flush=True,
        )

    if progress is not None:
        under = ", ".join(out.retired) or "none"
        print(f"rewrap: {out.total} objects under retired KEK versions ({under})", file=progress, flush=True)
    for pass_no in range(MAX_PASSES):
        after, raced = "", 0
        while True:
            rows = store.sealed_under(out.retired, after, batch)
            if not rows:
                break
            after = rows[-1].uid
            # Token work first, outside any transaction; then one short transaction per batch.
            updates = []
            for row in rows:
                if row.uid in out.failed:
                    continue
                try:
                    new = hsm.rewrap(row.uid, sealed_of(row), _aad_context(row.object_type))
                except IntegrityError as exc:
                    out.failed[row.uid] = str(exc)
                    continue
                if new.kek_label != row.kek_label:
                    updates.append((row, new))
            with store.unit_of_work():
                for row, new in updates:
                    values = sealed_columns(new)
                    if store.replace_sealed(row.uid, row.row_version, row.kek_label or "", values):
                        out.rewrapped += 1
                        out.resealed += row.envelope_format != new.format
                    else:
                        raced += 1
            report()
            if pause:
                time.sleep(pause)
        out.raced += raced
        if not raced:
            break
        time.sleep(0.2 * (pass_no + 1))
    counts = store.count_by_kek()
    out.remaining = sum(counts.get(label, 0) for label in out.retired)
    out.seconds = time.monotonic() - start
    report(final=True)
    return out
