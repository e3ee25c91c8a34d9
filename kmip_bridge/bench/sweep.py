"""``--sweep 1,4,16,64,256``: the same workload at each number of clients, against each target
(kmip-bridge and stock PyKMIP), drawn as ops/s and p99 against clients (``sweep.svg``) with the
numbers beside it (``sweep.json``).

Each target is started once and measured at every client count in turn (ascending), with the
usual warm-up before each measured window; the clients of one point are closed before the next
point's connect. The p99 plotted is the per-operation p99 of the slowest operation of the
workload (for create-get usually Create), by the client method of ``latency``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import plot, report
from .servers import TargetError

DEFAULT = "1,4,16,64,256"
P99_LABEL = "p99 ms (slowest operation)"


def parse_clients(text: str) -> list[int]:
    try:
        counts = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise TargetError(f"--sweep {text!r}: give client counts separated by commas, e.g. {DEFAULT}") from None
    if not counts or counts[0] < 1:
        raise TargetError("--sweep: every client count must be at least 1")
    return counts


def run(args: argparse.Namespace, targets: list[Any], tag: str,
        run_load: Callable[..., dict[str, Any]], wait_idle: Callable[[float, str], None]) -> list[dict[str, Any]]:
    counts = parse_clients(args.sweep)
    results = []
    for target in targets:
        print(f"{target.label}: starting (sweep {','.join(map(str, counts))} clients)", file=sys.stderr)
        ep = target.start()
        try:
            for n in counts:
                point = copy.copy(args)
                point.clients, point.processes = n, min(args.processes, n)
                print(f"{target.label}: {n} clients in {point.processes} processes, {args.workload}, "
                      f"{args.warmup:g} s warm-up + {args.duration:g} s", file=sys.stderr)
                if args.wait_idle > 0:
                    wait_idle(args.wait_idle, target.label)
                result = run_load(ep, point, target, f"{tag}c{n}")
                result["target"] = target.label
                result["config"] = {
                    "workload": args.workload, "clients": n, "processes": point.processes,
                    "duration_s": args.duration, "warmup_s": args.warmup, "kmip_version": args.kmip_version,
                    **target.describe(),
                }
                results.append(result)
        finally:
            target.stop()
    return results


def points(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The numbers the curve is drawn from, per target, ascending clients."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        kind, p99 = report.worst_p99(r)
        out.setdefault(r["target"], []).append({
            "clients": r["config"]["clients"],
            "ops_per_s": r["ops_per_s"],
            "pairs_per_s": r.get("pairs_per_s"),
            "p99_ms": p99,
            "p99_operation": kind,
            "latency_ms": r["latency_ms"],
            "pooled_p99_ms_old_method": (r.get("latency_ms_legacy") or {}).get("all", {}).get("p99"),
            "errors_total": r["errors_total"],
            "machine": r.get("machine"),
        })
    for pts in out.values():
        pts.sort(key=lambda p: p["clients"])
    return out


def table(by_target: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| target | clients | ops/s | p99 ms (slowest operation) | errors |", "|---|---|---|---|---|"]
    for target, pts in by_target.items():
        for p in pts:
            lines.append(f"| {target} | {p['clients']} | {p['ops_per_s']:.1f} | "
                         f"{p['p99_operation']} {p['p99_ms']} | {p['errors_total']} |")
    return "\n".join(lines)


def write(out_dir: Path, results: list[dict[str, Any]], meta: dict[str, Any]) -> tuple[Path, Path]:
    """``sweep.json`` (the points, then every result in full) and ``sweep.svg``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_target = points(results)
    cfg = results[0]["config"] if results else {}
    title = (f"{cfg.get('workload', '?')}, {cfg.get('database', 'sqlite')}, {cfg.get('kek_kind', '-')}, "
             f"{cfg.get('duration_s', '?')} s per point" + (f", {meta['source']}" if meta.get("source") else ""))
    svg = plot.sweep_svg(
        title,
        {t: [(p["clients"], p["ops_per_s"]) for p in pts] for t, pts in by_target.items()},
        {t: [(p["clients"], p["p99_ms"]) for p in pts] for t, pts in by_target.items()},
        P99_LABEL,
    )
    json_path, svg_path = out_dir / "sweep.json", out_dir / "sweep.svg"
    json_path.write_text(json.dumps({"meta": meta, "title": title, "points": by_target, "results": results},
                                    indent=2) + "\n")
    svg_path.write_text(svg)
    return json_path, svg_path
