"""Merging the processes' samples into one result per target, and printing it (JSON, markdown)."""

from __future__ import annotations

import json
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

from .latency import PAIR, accounted_share, summary


def _by_kind(parts: list[dict[str, Any]], key: str) -> dict[str, array]:
    out: dict[str, array] = {}
    for part in parts:
        for kind, raw in part.get(key, {}).items():
            arr = array("q")
            arr.frombytes(raw)
            out.setdefault(kind, array("q")).extend(arr)
    return out


def _table(by_kind: dict[str, array]) -> dict[str, dict[str, float]]:
    """``all`` (every operation pooled; the pair cycle is not an operation) and each kind."""
    everything = array("q")
    for kind, arr in by_kind.items():
        if kind != PAIR:
            everything.extend(arr)
    return {"all": summary(everything)} | {k: summary(v) for k, v in sorted(by_kind.items())}


def merge(parts: list[dict[str, Any]], duration: float, clients: int = 0) -> dict[str, Any]:
    """One target's result from its client processes' reports.

    ``latency_ms`` is the per-operation latency a client sees (every request sent in the measured
    window, its response waited for); ``latency_ms_legacy`` the method of the figures before
    issue 15 (responses that arrived before the end only). See ``latency``."""
    by_kind = _by_kind(parts, "latencies")
    errors: Counter[str] = Counter()
    samples: dict[str, str] = {}
    for part in parts:
        errors.update(part["errors"])
        for k, v in part["error_samples"].items():
            samples.setdefault(k, v)
    ops = sum(len(v) for k, v in by_kind.items() if k != PAIR)
    gen_cpu = sum(p["cpu_window_s"] for p in parts)
    gen_wall = max((p["cpu_window_wall_s"] for p in parts), default=0.0) or duration
    table = _table(by_kind)
    gaps = sum(p.get("gaps", 0) for p in parts)
    gap_ms = sum(p.get("gap_ns", 0) for p in parts) / gaps / 1e6 if gaps else None
    ops_per_s = ops / duration
    return {
        "ops": ops,
        "ops_per_s": round(ops_per_s, 1),
        "ops_by_kind": {k: len(v) for k, v in sorted(by_kind.items()) if k != PAIR},
        "latency_method": "client: per operation, every request sent in the measured window, "
                          "from just before send to the end of its response",
        "latency_ms": table,
        "latency_ms_legacy": _table(_by_kind(parts, "legacy_latencies")),
        # what a closed-loop client does between a response and its next request (not latency)
        "client_gap_ms_mean": round(gap_ms, 4) if gap_ms is not None else None,
        "latency_accounted": accounted_share(table["all"].get("mean", 0.0), ops_per_s, clients),
        "errors": dict(errors),
        "error_samples": samples,
        "errors_total": sum(errors.values()),
        "warmup_errors": sum(p["warmup_errors"] for p in parts),
        "generator": {
            "processes": len(parts),
            "cpu_s": round(gen_cpu, 3),
            "cores": round(gen_cpu / gen_wall, 3),
            "us_per_op": round(gen_cpu / ops * 1e6, 1) if ops else None,
        },
    }


def samples_us(parts: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Every latency sample, per operation, in microseconds (for ``--samples``)."""
    out: dict[str, list[int]] = {}
    for part in parts:
        for kind, raw in part["latencies"].items():
            arr = array("q")
            arr.frombytes(raw)
            out.setdefault(kind, []).extend(v // 1000 for v in arr)
    return out


def cpu_block(seconds: float, duration: float, ops: int, **extra: object) -> dict[str, object]:
    return {
        "cpu_s": round(seconds, 2),
        "cores": round(seconds / duration, 3),
        "ms_per_op": round(seconds / ops * 1e3, 3) if ops else None,
        **extra,
    }


def _fmt(v: object, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


COLUMNS = (
    "target", "workload", "db", "KEK", "clients", "ops/s", "pairs/s", "p99 ms per operation (client)",
    "pooled p50 / p99 ms (old method)", "errors",
    "generator CPU (cores, µs/op)", "server CPU (cores, ms/op)", "machine busy (other) cores",
)


def row(r: dict[str, Any]) -> list[str]:
    cfg, old = r["config"], (r.get("latency_ms_legacy") or {}).get("all", {})
    gen, srv = r["generator"], r.get("server") or {}
    db = cfg.get("database", "?")
    if r.get("database_cpu"):
        db += f" (+{r['database_cpu']['cores']:.2f} cores)"
    return [
        r["target"], cfg["workload"], db, cfg.get("kek_kind", "-"), str(cfg["clients"]),
        _fmt(r["ops_per_s"]), _fmt(r.get("pairs_per_s")),
        per_op_p99(r), f"{_fmt(old.get('p50'), 2)} / {_fmt(old.get('p99'), 2)}",
        str(r["errors_total"]),
        f"{gen['cores']:.2f}, {_fmt(gen['us_per_op'], 0)}",
        f"{srv['cores']:.2f}, {_fmt(srv['ms_per_op'], 2)}" if srv else "-",
        _machine(r.get("machine") or {}),
    ]


def per_op_p99(r: dict[str, Any]) -> str:
    return ", ".join(f"{k} {_fmt(v['p99'], 2)}" for k, v in r["latency_ms"].items() if k != "all" and v["count"])


def worst_p99(r: dict[str, Any]) -> tuple[str, float | None]:
    """The operation with the highest p99 (the pair cycle is not an operation) and that p99."""
    ops = [(v["p99"], k) for k, v in r["latency_ms"].items() if k not in ("all", PAIR) and v.get("count")]
    if not ops:
        return "-", None
    p99, kind = max(ops)
    return kind, p99


def _machine(m: dict[str, Any]) -> str:
    text = _fmt(m.get("busy_cores"), 2)
    return text + (f" ({m['other_cores']:.2f})" if m.get("other_cores") is not None else "")


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(r)) + " |" for r in results]
    lines += ["", "Latency per operation as a client sees it (every request sent in the measured window, "
              "send to full response; `pair` = Create sent to its Get answered). The last column is the p99 "
              "of the method used before issue 15 (responses that arrived before the end only).", "",
              "| target | operation | count | mean ms | p50 ms | p90 ms | p99 ms | max ms | p99 ms (old method) |",
              "|" + "---|" * 9]
    for r in results:
        legacy = r.get("latency_ms_legacy") or {}
        for kind, lat in r["latency_ms"].items():
            if lat["count"]:
                cells = [str(lat["count"])] + [_fmt(lat[k], 2) for k in ("mean", "p50", "p90", "p99", "max")]
                cells.append(_fmt(legacy.get(kind, {}).get("p99"), 2))
                lines.append(f"| {r['target']} | {kind} | " + " | ".join(cells) + " |")
        if r.get("latency_accounted") is not None:
            lines.append(f"\n{r['target']}: mean latency * ops/s / clients = {r['latency_accounted']:.3f} "
                         f"(1.0: the samples cover the clients' whole time; mean client gap between a response "
                         f"and the next request {r['client_gap_ms_mean']} ms)")
    for line in [*ratios(results), *mode_costs(results), *connection_lines(results), *write_lines(results)]:
        lines.append("")
        lines.append(line)
    lines += scale_table(results)
    for r in results:
        for label, n in sorted(r["errors"].items()):
            lines.append(f"\n{r['target']} error {label}: {n} (e.g. {r['error_samples'].get(label, '')!r})")
    return "\n".join(lines)


def ratios(results: list[dict[str, Any]]) -> list[str]:
    stock = [r for r in results if r["target"] == "pykmip"]
    out = []
    for s in stock:
        for r in results:
            same = all(r["config"].get(k) == s["config"].get(k) for k in ("workload", "clients"))
            if r is not s and r["target"] != "pykmip" and same and s["ops_per_s"]:
                ratio = r["ops_per_s"] / s["ops_per_s"]
                r["ratio_vs_stock"] = round(ratio, 2)
                out.append(
                    f"**{r['target']} / stock PyKMIP ({r['config']['workload']}): {ratio:.1f}x** "
                    f"({r['ops_per_s']:.1f} vs {s['ops_per_s']:.1f} ops/s; worst per-operation p99 "
                    f"{'{} {}'.format(*worst_p99(r))} vs {'{} {}'.format(*worst_p99(s))} ms)"
                )
    return out


def mode_costs(results: list[dict[str, Any]]) -> list[str]:
    """Socket-mode Key HSM against in-process, same workload: what privilege separation costs."""
    inproc = [r for r in results if r["config"].get("keyhsm_mode") == "inprocess"]
    out = []
    for s in (r for r in results if r["config"].get("keyhsm_mode") == "socket"):
        for r in inproc:
            if r["config"]["workload"] != s["config"]["workload"] or not r["ops_per_s"]:
                continue
            cpu_in, cpu_s = (r.get("server") or {}).get("ms_per_op"), (s.get("server") or {}).get("ms_per_op")
            parts = [f"**keyhsm socket / inprocess ({s['config']['workload']}): "
                     f"{s['ops_per_s'] / r['ops_per_s']:.2f}x ops/s** ({s['ops_per_s']:.1f} vs {r['ops_per_s']:.1f})"]
            for kind, lat in s["latency_ms"].items():
                base = r["latency_ms"].get(kind, {})
                if kind != "all" and lat.get("count") and base.get("count"):
                    delta = lat["p50"] - base["p50"]
                    parts.append(f"{kind} p50 {delta:+.2f} ms ({base['p50']:.2f} -> {lat['p50']:.2f})")
            if cpu_in and cpu_s:
                parts.append(f"server CPU {cpu_in:.2f} -> {cpu_s:.2f} ms/op (key HSM process included)")
            out.append("; ".join(parts))
    return out


def connection_lines(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        idle, rss = r.get("idle"), r.get("server_rss_mb") or {}
        if idle:
            out.append(
                f"{r['target']}: idle connections: {idle['opened']} of {idle['requested']} opened in "
                f"{idle['open_s']} s, held through the run; {idle['answered_after']} answered a request afterwards; "
                f"{sum(idle['errors'].values())} errors"
            )
        if rss:
            size = f" at {r['scale']['objects']:,} objects" if r.get("scale") else ""
            out.append(f"{r['target']}{size}: server RSS (master + workers" + (" + key HSM" if r["config"].get(
                "keyhsm_mode") == "socket" else "") + "), MiB: " + ", ".join(f"{k} {v}" for k, v in rss.items()))
    return out


def write_block(delta: dict[str, float], seconds: float) -> dict[str, Any]:
    """Group commit and SQLite write-lock figures over the measured window (--server-metrics)."""
    writes, transactions = delta["writes"], delta["transactions"]
    return {
        "writes_per_s": round(writes / seconds, 1),
        "commits_per_s": round(transactions / seconds, 1),
        "writes_per_commit": round(writes / transactions, 2) if transactions else None,
        # SQLite: the share of the window some worker held the one writer's lock (1.0 = never free)
        "write_lock_held_share": round(delta["lock_held_s"] / seconds, 3),
        "write_lock_held_ms_per_commit": round(delta["lock_held_s"] / transactions * 1e3, 2) if transactions else None,
        "write_lock_wait_s": round(delta["lock_wait_s"], 2),
    }


def write_lines(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        w = r.get("db_writes")
        if w:
            line = (f"{r['target']}: {w['writes_per_s']} writes/s in {w['commits_per_s']} commits/s "
                    f"({w['writes_per_commit']} writes per commit)")
            if w["write_lock_held_share"]:
                line += (f"; SQLite write lock held {w['write_lock_held_share']:.0%} of the measured time, "
                         f"{w['write_lock_held_ms_per_commit']} ms per commit")
            out.append(line)
    return out


def scale_table(results: list[dict[str, Any]]) -> list[str]:
    """Get and Locate latency per store size, and the largest size against the smallest."""
    rows = [r for r in results if r.get("scale")]
    if not rows:
        return []
    head = ("objects", "load s (objects/s)", "Get p50 / p95 / p99 ms", "Locate p50 / p95 / p99 ms", "ops/s", "errors")
    lines = ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def trio(lat: dict[str, Any]) -> str:
        return " / ".join(_fmt(lat.get(k), 2) for k in ("p50", "p95", "p99"))

    for r in rows:
        sc, lat = r["scale"], r["latency_ms"]
        lines.append(f"| {sc['objects']:,} | {sc['loaded_s']} ({_fmt(sc['load_rate_per_s'], 0)}) | "
                     f"{trio(lat.get('get', {}))} | {trio(lat.get('locate', {}))} | {_fmt(r['ops_per_s'])} | "
                     f"{r['errors_total']} |")
    small, big = rows[0], rows[-1]
    if big is not small:
        cells = []
        for kind in ("get", "locate"):
            a, b = small["latency_ms"].get(kind, {}), big["latency_ms"].get(kind, {})
            if a.get("count") and b.get("count"):
                cells.append(f"{kind} " + " / ".join(f"{b[k] / a[k]:.2f}x" for k in ("p50", "p95", "p99")))
        lines += ["", f"**{big['scale']['objects']:,} vs {small['scale']['objects']:,} objects (p50 / p95 / p99):** "
                  + "; ".join(cells)]
    for r in rows:
        for kind, plan in r["scale"]["plans"].items():
            lines.append(f"\nplan at {r['scale']['objects']:,} objects, {kind}: " + " | ".join(p.strip() for p in plan))
    return lines


def write_json(path: Path, results: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
