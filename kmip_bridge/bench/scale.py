"""``--scale 1000,1000000``: Get and Locate-by-name latency as the store grows.

One fresh instance. For each size in turn, the stopped instance is bulk-loaded up to that many
objects (``preload``), the server is started, a blocking Locate checks that a sampled name finds
exactly its object, the ``get-locate`` workload runs on objects sampled from the last load, and
the server is stopped again. The query plans of Get and Locate-by-name, as the store issues them,
are recorded at every size (EXPLAIN), so a plan that scans is visible, not only slow.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from kmip.core.enums import State
from sqlalchemy import event

from .. import config
from ..client import RawClient, client_context
from ..store import Store
from . import preload, workloads
from .servers import OurServer, TargetError

_DESTROYED = (State.DESTROYED.value, State.DESTROYED_COMPROMISED.value)


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(x.replace("_", "")) for x in text.split(",") if x.strip()})
    except ValueError:
        raise TargetError(f"--scale {text!r}: give object counts separated by commas, e.g. 1000,1000000") from None
    if not sizes or sizes[0] < 1:
        raise TargetError("--scale: every size must be at least 1")
    return sizes


def explain(config_path: Path, uid: str, name: str, seqscan: bool = True) -> dict[str, list[str]]:
    """The database's plan for the statements that Store.load_object (Get: its SQL on the driver
    cursor, Store.hot) and Store.locate (Locate by Name, admin scope, captured as it runs) issue.
    ``seqscan=False`` (PostgreSQL): planned with sequential scans disabled, which shows the index
    that serves each statement even where a table is still small enough to scan more cheaply."""
    store = Store(config.load(config_path).database.url)
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        seen.append((statement, params))

    event.listen(store.engine, "before_cursor_execute", capture)
    plans: dict[str, list[str]] = {}
    try:
        if store.load_object(uid) is None:
            raise RuntimeError(f"the sampled object {uid} is not in the database")
        for label, call in (
            ("get", lambda: seen.append((store.hot.load_object, (uid,)))),
            ("locate", lambda: store.locate(owner=None, other_types=None, attribute_filters=[("Name", name)],
                                            exclude_states=_DESTROYED)),
        ):
            seen.clear()
            call()
            statement, params = seen[-1]
            sqlite = store.engine.dialect.name == "sqlite"
            with store.engine.connect() as conn:
                if not sqlite and not seqscan:
                    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
                rows = conn.exec_driver_sql(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + statement, params)
                plans[label] = [str(r[-1]) for r in rows]
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
        store.close()
    return plans


def analyze(config_path: Path) -> None:
    """PostgreSQL: refresh the planner's statistics after a bulk load, as autovacuum would soon
    do on its own (SQLite's planner needs none for these plans)."""
    store = Store(config.load(config_path).database.url)
    try:
        if store.engine.dialect.name == "postgresql":
            with store.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    finally:
        store.close()


def _check_locate(server: OurServer, uid: str, name: str) -> None:
    ep_dir = server.dir
    ctx = client_context(ep_dir / "pki" / "ca.pem", ep_dir / "clients/admin/cert.pem", ep_dir / "clients/admin/key.pem")
    client = RawClient("127.0.0.1", server.port, ctx)
    try:
        resp = client.send_raw(workloads.locate_message((1, 2), name))
    finally:
        client.close()
    found = workloads.uid_of(resp) if resp is not None else None
    if resp is None or not workloads.status_of(resp)[0] or found != uid.encode() or resp.count(workloads._UID) != 1:
        raise TargetError(f"Locate of {name!r} did not return exactly its object {uid}")


def run(args: argparse.Namespace, base: Path, run_load: Any) -> list[dict[str, Any]]:
    sizes = parse_sizes(args.scale)
    args.workload = "get-locate"
    server = OurServer(base / "kmip-bridge", args.database, args.kek_kind, args.server_workers,
                       args.keyhsm_mode if args.keyhsm_mode != "both" else "inprocess", args.max_connections)
    server.keep_database = args.keep
    results = []
    try:
        server.prepare()
        cert = server.dir / "clients" / "admin" / "cert.pem"
        loaded, load_s = 0, 0.0
        for size in sizes:
            got = preload.load(server.config, cert, size - loaded, first=loaded, sample=args.warm_keys)
            loaded, load_s = size, load_s + got.seconds
            analyze(server.config)
            uid, name = got.sample[0]
            plans = explain(server.config, uid, name)
            index_plans = explain(server.config, uid, name, seqscan=False) if args.database == "postgresql" else plans
            ep = server.serve()
            try:
                _check_locate(server, uid, name)
                given = ([u.encode() for u, _ in got.sample], [n for _, n in got.sample])
                result = run_load(ep, args, server, "scale", given)
            finally:
                server.halt()
            result["target"] = server.label
            result["config"] = {
                "workload": args.workload, "clients": args.clients, "processes": args.processes,
                "duration_s": args.duration, "warmup_s": args.warmup, "kmip_version": args.kmip_version,
                **server.describe(),
            }
            result["scale"] = {
                "objects": size, "loaded_s": round(got.seconds, 1), "total_load_s": round(load_s, 1),
                "load_rate_per_s": round(got.loaded / got.seconds, 0) if got.seconds else None,
                "insert_s": round(got.insert_s, 1), "sampled": len(got.sample), "plans": plans,
                "index_plans": index_plans,
                "database_bytes": _database_size(server.config),
            }
            results.append(result)
    finally:
        server.stop()
    return results


def _database_size(config_path: Path) -> int | None:
    url = config.load(config_path).database.url
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    store = Store(url)
    try:
        with store.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one())
    finally:
        store.close()
