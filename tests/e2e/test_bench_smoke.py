"""Smoke runs of the benchmark harness (``python -m kmip_bridge.bench``): it starts its targets,
drives them and reports without errors. Short runs; no speed is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from kmip.core.enums import Operation, ResultReason, ResultStatus
from kmip.core.enums import Tags as T

from kmip_bridge.bench import workloads
from kmip_bridge.client import request
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.messages import Response, Result, build_response

from .conftest import Server

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SHORT = ["--clients", "2", "--processes", "2", "--duration", "2", "--warmup", "0.5", "--warm-keys", "8", "--names", "4"]


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _bench(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "kmip_bridge.bench", *SHORT, "--workdir", str(tmp_path), "--json", str(out), *args],
        capture_output=True, text=True, timeout=600, cwd=ROOT, check=False,
    )
    assert done.returncode == 0, f"bench failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-4000:]}"
    assert "| target |" in done.stdout  # the markdown table
    return json.loads(out.read_text())


def _check(result: dict, kinds: set[str]) -> None:
    assert result["errors_total"] == 0, result["errors"]
    assert result["warmup_errors"] == 0
    assert result["ops"] > 0
    assert set(result["ops_by_kind"]) == kinds
    lat = result["latency_ms"]["all"]
    assert lat["count"] == result["ops"] and 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    for kind in kinds:  # per operation, as the client saw it, and the old method beside it
        op = result["latency_ms"][kind]
        assert op["count"] == result["ops_by_kind"][kind]
        assert 0 < op["p50"] <= op["p90"] <= op["p99"] <= op["max"]
        assert 0 < result["latency_ms_legacy"][kind]["count"] <= op["count"]
    assert result["latency_accounted"] > 0
    assert result["generator"]["processes"] == 2 and result["generator"]["cpu_s"] > 0


def test_request_templates_and_response_scanning() -> None:
    """The pre-encoded pieces equal a full encoding; the scanner reads what the codec wrote."""
    uid = "5d1e4f0c-0000-4000-8000-000000000001"
    get = workloads.IdMessages(Operation.GET, (1, 2))
    payload = ttlv.struct_(T.REQUEST_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, uid)])
    assert get(uid.encode()) == ttlv.encode(request([(Operation.GET.value, payload)], version=(1, 2)))
    assert get(b"7") == ttlv.encode(request([(Operation.GET.value, ttlv.struct_(
        T.REQUEST_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, "7")])), ], version=(1, 2)))
    ok = Result(Operation.CREATE.value, None, ttlv.struct_(T.RESPONSE_PAYLOAD, [ttlv.text(T.UNIQUE_IDENTIFIER, uid)]))
    data = ttlv.encode(build_response(Response((1, 2), [ok])))
    assert workloads.status_of(data) == (True, 0) and workloads.uid_of(data) == uid.encode()
    bad = Result(Operation.GET.value, None, status=ResultStatus.OPERATION_FAILED.value,
                 reason=ResultReason.ITEM_NOT_FOUND.value, message="no such object")
    data = ttlv.encode(build_response(Response((1, 2), [bad])))
    assert workloads.status_of(data) == (False, ResultReason.ITEM_NOT_FOUND.value)
    assert workloads.message_of(data) == "no such object"
    for name in workloads.WORKLOADS:  # every request decodes as a well-formed message
        kit = workloads.Kit((1, 4), names=["n"], warm_ids=[uid.encode()])
        kit.prepare()
        prog = workloads.PROGRAMS[name](kit, 0)
        kind, msg = next(prog)
        assert ttlv.decode(msg).tag == T.REQUEST_MESSAGE.value, kind


def test_create_get_on_a_fresh_sqlite_instance(tmp_path: Path) -> None:
    data = _bench(tmp_path, "--workload", "create-get", "--database", "sqlite", "--server-metrics")
    (result,) = data["results"]
    assert result["target"] == "kmip-bridge" and result["config"]["database"] == "sqlite"
    _check(result, {"create", "get"})
    assert result["pairs_per_s"] > 0 and result["server"]["cpu_s"] > 0
    # Every Create and every first Get is one grouped write; the lock was held for them.
    writes = result["db_writes"]
    assert writes["writes_per_s"] * result["config"]["duration_s"] == pytest.approx(result["ops"], rel=0.2)
    assert writes["writes_per_commit"] >= 1
    assert 0 < writes["write_lock_held_share"] <= 1
    assert not list(tmp_path.glob("kmip-bench-*")), "temporary instance left behind"


def test_mixed_against_a_running_server(tmp_path: Path, server: Server) -> None:
    data = _bench(tmp_path, "--workload", "mixed", "--target", f"127.0.0.1:{server.port}",
                  "--client-conf", str(server.dir / "clients" / "admin"))
    _check(data["results"][0], {"create", "get", "locate", "register"})
    assert server.alive()


def test_compare_with_stock_pykmip(tmp_path: Path) -> None:
    """Stock pykmip-server starts in about a second, so the comparison is part of the smoke run."""
    data = _bench(tmp_path, "--workload", "mixed", "--compare")
    ours, stock = data["results"]
    assert (ours["target"], stock["target"]) == ("kmip-bridge", "pykmip")
    for r in (ours, stock):
        _check(r, {"create", "get", "locate", "register"})
    assert ours["ratio_vs_stock"] > 0


def test_scale_measures_get_and_locate_at_each_size(tmp_path: Path) -> None:
    """--scale bulk-loads the instance (sealed through the Key HSM, inserted through the store)
    and measures Get and Locate by Name at each size; Locate's plan starts from the index."""
    data = _bench(tmp_path, "--scale", "20,200")
    small, big = data["results"]
    assert (small["scale"]["objects"], big["scale"]["objects"]) == (20, 200)
    assert big["scale"]["database_bytes"] > small["scale"]["database_bytes"]  # the load went in
    for r in (small, big):
        _check(r, {"get", "locate"})
        assert r["scale"]["sampled"] == 8 and r["scale"]["database_bytes"] > 0
        locate_plan = " ".join(r["scale"]["plans"]["locate"])
        assert "ix_attributes_name_search" in locate_plan and "SCAN objects" not in locate_plan
        assert "SCAN objects" not in " ".join(r["scale"]["plans"]["get"])


def test_scale_on_postgresql_plans_use_the_indexes(tmp_path: Path, pg_database) -> None:  # type: ignore[no-untyped-def]
    """--scale on PostgreSQL: the bulk load (COPY) goes in, Get and Locate by Name answer without
    errors, and the statements the store issues (captured as they run, after ANALYZE) are served by
    the primary key and the name index. With 20 objects a sequential scan is the cheaper plan, so the
    plans checked are those made with sequential scans disabled: a statement that no index serves
    would still show one."""
    pg_database()  # skips loudly (fails on CI) when PostgreSQL is not reachable; the bench makes its own
    data = _bench(tmp_path, "--scale", "20,300", "--database", "postgresql")
    small, big = data["results"]
    assert (small["scale"]["objects"], big["scale"]["objects"]) == (20, 300)
    assert big["scale"]["database_bytes"] > small["scale"]["database_bytes"]
    for r in (small, big):
        _check(r, {"get", "locate"})
        assert r["config"]["database"] == "postgresql" and r["scale"]["sampled"] == 8
        get_plan, locate_plan = (" | ".join(r["scale"]["index_plans"][k]) for k in ("get", "locate"))
        assert "Index Scan using objects_pkey on objects" in get_plan, get_plan
        assert "Index Scan using ix_attributes_name_search on attributes" in locate_plan, locate_plan
        assert "Index Cond: (((name)::text = 'Name'::text) AND ((search)::text = " in locate_plan, locate_plan
        assert "Seq Scan" not in get_plan + locate_plan


def test_idle_connections_stay_open_and_answer(tmp_path: Path) -> None:
    data = _bench(tmp_path, "--idle-connections", "60")
    (result,) = data["results"]
    _check(result, {"create", "get"})
    idle = result["idle"]
    assert (idle["opened"], idle["answered_after"], idle["errors"]) == (60, 60, {})
    rss = result["server_rss_mb"]
    assert 0 < rss["before_idle"] and 0 < rss["idle_open"] and 0 < rss["end"]


def test_keyhsm_socket_mode_beside_inprocess(tmp_path: Path) -> None:
    data = _bench(tmp_path, "--keyhsm-mode", "both")
    inproc, sock = data["results"]
    assert (inproc["config"]["keyhsm_mode"], sock["config"]["keyhsm_mode"]) == ("inprocess", "socket")
    assert sock["target"] == "kmip-bridge-socket"
    for r in (inproc, sock):
        _check(r, {"create", "get"})
    # the Key HSM service's process is counted with the server's
    assert sock["server"]["processes"] == inproc["server"]["processes"] + 1


def test_database_writer_process_beside_inline(tmp_path: Path) -> None:
    data = _bench(tmp_path, "--db-writer", "both", "--server-metrics")
    writer, inline = data["results"]
    assert (writer["config"]["db_writer"], inline["config"]["db_writer"]) == ("process", "inline")
    assert (writer["target"], inline["target"]) == ("kmip-bridge", "kmip-bridge-inline-writer")
    for r in (writer, inline):
        _check(r, {"create", "get"})
        # every Create and first Get is one grouped write, whichever process commits it
        writes = r["db_writes"]
        assert writes["writes_per_s"] * r["config"]["duration_s"] == pytest.approx(r["ops"], rel=0.2)
    # the writer is one more process of the server's own
    assert writer["server"]["processes"] == inline["server"]["processes"] + 1


def test_keyhsm_cost_per_seal_and_open(tmp_path: Path) -> None:
    """The one-thread comparison of KeyHsm and RemoteKeyHsm runs, round-trips its material, cleans up."""
    done = subprocess.run(
        [sys.executable, "-m", "kmip_bridge.bench.keyhsm_cost", "--calls", "20", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| inprocess |", "| socket |"))]
    assert len(rows) == 2
    assert "socket mode adds" in done.stdout
    assert not list(tmp_path.iterdir()), "temporary instance left behind"


def test_sweep_draws_both_servers(tmp_path: Path) -> None:
    """A minimal --sweep (1 and 2 clients): sweep.json has every point of both servers, sweep.svg
    is well-formed XML with an ops/s and a p99 series for each, drawn from those numbers."""
    out = tmp_path / "curve"
    data = _bench(tmp_path, "--sweep", "1,2", "--sweep-out", str(out))
    assert [(r["target"], r["config"]["clients"]) for r in data["results"]] == [
        ("kmip-bridge", 1), ("kmip-bridge", 2), ("pykmip", 1), ("pykmip", 2)]
    for r in data["results"]:
        assert r["errors_total"] == 0 and set(r["ops_by_kind"]) == {"create", "get"}
        assert r["generator"]["processes"] == r["config"]["processes"] == min(2, r["config"]["clients"])
        assert 0 < r["latency_ms"]["create"]["p99"] and 0 < r["latency_ms"]["pair"]["p99"]
    sweep = json.loads((out / "sweep.json").read_text())
    assert set(sweep["points"]) == {"kmip-bridge", "pykmip"}
    for points in sweep["points"].values():
        assert [p["clients"] for p in points] == [1, 2]
        for p in points:
            assert p["ops_per_s"] > 0 and p["p99_ms"] > 0 and p["errors_total"] == 0
            assert p["p99_operation"] in ("create", "get")
    ns = "{http://www.w3.org/2000/svg}"
    root = ET.parse(out / "sweep.svg").getroot()
    assert root.tag == f"{ns}svg"
    drawn = {}
    for g in root.iter(f"{ns}g"):
        if g.get("class") == "series":
            drawn[(g.get("data-target"), g.get("data-metric"))] = [
                (int(c.get("data-clients")), float(c.get("data-value"))) for c in g.iter(f"{ns}circle")]
    for target, points in sweep["points"].items():
        assert drawn[(target, "ops/s")] == [(p["clients"], p["ops_per_s"]) for p in points]
        assert drawn[(target, "p99 ms (slowest operation)")] == [(p["clients"], p["p99_ms"]) for p in points]
    assert len(drawn) == 4


def test_per_object_beside_shared_kek(tmp_path: Path) -> None:
    data = _bench(tmp_path, "--per-object", "both")
    shared, own = data["results"]
    assert (shared["config"]["per_object"], own["config"]["per_object"]) == (False, True)
    assert own["target"] == "kmip-bridge-per-object"
    for r in (shared, own):
        _check(r, {"create", "get"})  # no false "irretrievable" under create-get either


def test_per_object_cost(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kmip_bridge.bench.per_object_cost", "--sizes", "0,5", "--calls", "3",
         "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=ROOT, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    sizes = [ln.split("|")[1].strip() for ln in done.stdout.splitlines() if ln.startswith(("| 0 |", "| 5 |"))]
    assert sizes == ["0", "5"]
    assert "| EC P-256" in done.stdout and "| RSA-3072" in done.stdout
    assert not list(tmp_path.iterdir()), "temporary instance left behind"
