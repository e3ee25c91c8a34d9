"""The bench's latency accounting (kmip_bridge/bench/latency.py, report.merge) driven by a fake
clock: which requests count, per-operation and pair samples, nearest-rank percentiles, the
Little's-law check, and the sweep's SVG. No sockets, no server, no wall clock."""

from __future__ import annotations

import heapq
import itertools
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest

from kmip_bridge.bench import plot, report, sweep
from kmip_bridge.bench.latency import PAIR, Recorder, accounted_share, nearest_rank, summary
from kmip_bridge.bench.servers import TargetError

MS = 1_000_000  # ns


# -- percentiles ------------------------------------------------------------------------------------
def test_nearest_rank_on_known_values() -> None:
    values = list(range(1, 101))  # 1..100
    assert [nearest_rank(values, p) for p in (1, 50, 90, 99, 100)] == [1, 50, 90, 99, 100]
    ten = list(range(1, 11))
    # p99 of 10 samples is the largest: no interpolation below a value some request had
    assert (nearest_rank(ten, 50), nearest_rank(ten, 90), nearest_rank(ten, 99)) == (5, 9, 10)
    assert nearest_rank([7], 99.9) == 7
    with pytest.raises(ValueError):
        nearest_rank([], 50)


def test_summary_in_milliseconds_from_unsorted_samples() -> None:
    samples = [5 * MS] * 98 + [40 * MS, 2 * MS]  # unsorted on purpose
    s = summary(samples)
    assert s["count"] == 100
    assert (s["p50"], s["p90"], s["p99"], s["max"]) == (5.0, 5.0, 5.0, 40.0)
    assert s["mean"] == pytest.approx((98 * 5 + 40 + 2) / 100)
    s = summary([5 * MS] * 98 + [40 * MS, 41 * MS])  # two slow ones: the 99th is one of them
    assert (s["p99"], s["max"]) == (40.0, 41.0)
    assert summary([]) == {"count": 0}


# -- which requests count ---------------------------------------------------------------------------
def test_window_rules_client_and_legacy() -> None:
    rec = Recorder(warm_end=100 * MS, end=200 * MS)
    assert not rec.response("get", 90 * MS, 110 * MS)  # sent in the warm-up: never counts
    assert rec.response("get", 150 * MS, 180 * MS)  # inside: both methods
    assert rec.response("get", 190 * MS, 260 * MS)  # straddles the end: client only
    assert not rec.response("get", 200 * MS, 201 * MS)  # sent at the end: outside
    assert list(rec.client["get"]) == [30 * MS, 70 * MS]
    assert list(rec.legacy["get"]) == [30 * MS]


def test_pair_is_create_send_to_get_response_inside_the_window() -> None:
    rec = Recorder(warm_end=100 * MS, end=200 * MS, pairs=True)
    rec.response("create", 120 * MS, 130 * MS)
    rec.response("get", 131 * MS, 170 * MS, pair_t0=120 * MS)
    assert list(rec.client[PAIR]) == [50 * MS]
    assert list(rec.client["create"]) == [10 * MS] and list(rec.client["get"]) == [39 * MS]
    # a Create sent in the warm-up: its Get counts, its pair does not (half of it is unmeasured)
    rec.response("get", 101 * MS, 105 * MS, pair_t0=95 * MS)
    assert list(rec.client[PAIR]) == [50 * MS] and len(rec.client["get"]) == 2
    # without pairs (other workloads), no pair series at all
    plain = Recorder(warm_end=0, end=10 * MS)
    plain.response("get", 1 * MS, 2 * MS, pair_t0=0)
    assert PAIR not in plain.client


# -- a simulated closed loop on a fake clock --------------------------------------------------------
def simulate(clients: int, service: Callable[[int, int, str], int], warm_end: int, end: int,
             gap: int = 0) -> tuple[Recorder, int]:
    """Closed-loop create-get clients on a fake clock: each sends, waits ``service(client, n, kind)``
    ns, then after ``gap`` ns sends the next, until a response arrives at or after ``end``; the
    same rules as ``loadgen.run_loop``. Returns the recorder and the responses received."""
    rec = Recorder(warm_end, end, pairs=True)
    # (response time, client, n, kind, sent at, pair start)
    events: list[tuple[int, int, int, str, int, int | None]] = []
    for c in range(clients):
        heapq.heappush(events, (service(c, 0, "create"), c, 0, "create", 0, 0))
    received = 0
    while events:
        t1, c, n, kind, t0, pair_t0 = heapq.heappop(events)
        received += 1
        rec.response(kind, t0, t1, pair_t0 if kind == "get" else None)
        if t1 >= end:
            continue  # this client stops; the others finish what they sent
        nxt = "get" if kind == "create" else "create"
        t_send = t1 + gap
        rec.gap(t1, t_send)
        heapq.heappush(events, (t_send + service(c, n + 1, nxt), c, n + 1, nxt, t_send,
                                pair_t0 if nxt == "get" else t_send))
    return rec, received


def _merged(rec: Recorder, duration_s: float, clients: int) -> dict:
    part = {**rec.export(), "errors": {}, "error_samples": {}, "warmup_errors": 0,
            "cpu_window_s": 0.0, "cpu_window_wall_s": duration_s}
    return report.merge([part], duration_s, clients)


def test_constant_service_gives_exact_per_operation_numbers() -> None:
    """Create takes 4 ms, Get 1 ms, 4 clients, 1 s warm-up, 2 s measured: every number is known."""
    rec, _ = simulate(4, lambda c, n, kind: (4 if kind == "create" else 1) * MS, 1000 * MS, 3000 * MS)
    r = _merged(rec, 2.0, 4)
    lat = r["latency_ms"]
    assert (lat["create"]["p50"], lat["create"]["p99"], lat["create"]["max"]) == (4.0, 4.0, 4.0)
    assert (lat["get"]["p50"], lat["get"]["p99"], lat["get"]["max"]) == (1.0, 1.0, 1.0)
    assert (lat[PAIR]["p50"], lat[PAIR]["max"]) == (5.0, 5.0)
    # 2 s / 5 ms = 400 cycles per client, 4 clients; the pair is not counted as an operation
    assert r["ops_by_kind"] == {"create": 1600, "get": 1600} and r["ops"] == 3200
    assert lat["all"]["count"] == 3200
    # pooled, half the operations are the 1 ms Get: the pooled median hides the Create entirely
    assert lat["all"]["p50"] == 1.0
    assert r["latency_accounted"] == pytest.approx(1.0, abs=0.01)
    assert r["client_gap_ms_mean"] == 0.0


def test_the_old_method_drops_the_slow_requests_in_flight_at_the_end() -> None:
    """A stall near the end: every client's request takes 500 ms from 2.9 s on. The old method
    only kept responses that arrived before the end, so the stall vanished from its numbers."""
    end = 3000 * MS
    rec = Recorder(1000 * MS, end)
    for _client in range(2):
        t = 0
        while t < end:  # closed loop on the client's own clock, stopping after the end
            t1 = t + (500 * MS if t >= 2900 * MS else 1 * MS)
            rec.response("get", t, t1)
            t = t1
    r = _merged(rec, 2.0, 2)
    assert r["latency_ms"]["get"]["max"] == 500.0
    assert r["latency_ms_legacy"]["get"]["max"] == 1.0  # the old method never saw it
    assert r["latency_ms"]["get"]["count"] == r["latency_ms_legacy"]["get"]["count"] + 2


def test_a_slow_tail_shows_in_the_operation_that_has_it() -> None:
    """Every 20th Create takes 60 ms (a commit stall), everything else 2 ms. Create's own p99 shows
    the stall; pooled with the fast Gets, the 99th percentile of all operations falls on it only
    when the slow share is above 1% of all operations."""
    def service(c: int, n: int, kind: str) -> int:
        if kind == "create" and n % 40 == 0:  # n counts both kinds: every 20th Create
            return 60 * MS
        return 2 * MS

    rec, _ = simulate(2, service, 0, 4000 * MS)
    r = _merged(rec, 4.0, 2)
    create, get, pooled = r["latency_ms"]["create"], r["latency_ms"]["get"], r["latency_ms"]["all"]
    assert create["p99"] == 60.0 and create["p90"] == 2.0
    assert get["max"] == 2.0
    assert pooled["p99"] == 60.0 and pooled["p90"] == 2.0  # 2.5% of all operations are slow
    assert r["latency_ms"][PAIR]["p99"] == 62.0


def test_time_between_requests_is_not_latency_and_is_reported() -> None:
    """5 ms service and a 5 ms client gap: the samples cover half the clients' time."""
    rec, _ = simulate(2, lambda c, n, kind: 5 * MS, 0, 1000 * MS, gap=5 * MS)
    r = _merged(rec, 1.0, 2)
    assert r["latency_ms"]["all"]["p99"] == 5.0
    assert r["client_gap_ms_mean"] == 5.0
    assert r["latency_accounted"] == pytest.approx(0.5, abs=0.01)
    assert accounted_share(10.0, 0, 2) is None and accounted_share(10.0, 200.0, 0) is None


def test_ratios_pair_each_stock_point_with_the_same_client_count() -> None:
    def res(target: str, clients: int, ops: float) -> dict:
        return {"target": target, "ops_per_s": ops, "config": {"workload": "create-get", "clients": clients},
                "latency_ms": {"all": {"count": 1, "p99": 1.0}, "create": {"count": 1, "p99": 2.0}}}

    results = [res("kmip-bridge", 1, 100.0), res("kmip-bridge", 4, 400.0), res("pykmip", 1, 50.0),
               res("pykmip", 4, 80.0)]
    lines = report.ratios(results)
    assert len(lines) == 2
    assert results[0]["ratio_vs_stock"] == 2.0 and results[1]["ratio_vs_stock"] == 5.0


# -- the sweep's picture ----------------------------------------------------------------------------
def test_nice_ticks_cover_the_top() -> None:
    assert plot.nice_ticks(93.0) == [0, 20, 40, 60, 80, 100]
    assert plot.nice_ticks(1234.0)[-1] >= 1234.0
    assert plot.nice_ticks(0.0) == [0.0, 1.0]


def test_sweep_svg_is_well_formed_with_one_series_per_target_and_metric() -> None:
    ops = {"kmip-bridge": [(1, 500.0), (4, 900.0), (16, 1100.0)], "pykmip": [(1, 150.0), (4, 140.0), (16, 138.0)]}
    p99 = {"kmip-bridge": [(1, 2.0), (4, 9.0), (16, 40.0)], "pykmip": [(1, 10.0), (4, 60.0), (16, 193.0)]}
    root = ET.fromstring(plot.sweep_svg("t & <title>", ops, p99, "p99 ms"))
    ns = {"s": "http://www.w3.org/2000/svg"}
    series = root.findall(".//s:g[@class='series']", ns)
    assert sorted((g.get("data-target"), g.get("data-metric")) for g in series) == [
        ("kmip-bridge", "ops/s"), ("kmip-bridge", "p99 ms"), ("pykmip", "ops/s"), ("pykmip", "p99 ms")]
    for g in series:
        source = (ops if g.get("data-metric") == "ops/s" else p99)[g.get("data-target")]
        got = [(int(c.get("data-clients")), float(c.get("data-value"))) for c in g.findall("s:circle", ns)]
        assert got == source
        ys = [float(c.get("cy")) for c in g.findall("s:circle", ns)]
        values = [v for _, v in source]
        # higher value, higher on the picture (smaller y)
        assert [a < b for a, b in itertools.pairwise(ys)] == [a > b for a, b in itertools.pairwise(values)]
    xs = sorted({float(c.get("cx")) for c in root.iter("{http://www.w3.org/2000/svg}circle")})
    assert len(xs) == 6  # three client counts in each of two panels


def test_sweep_client_list_is_checked() -> None:
    assert sweep.parse_clients("16,1,4,4") == [1, 4, 16]
    assert sweep.parse_clients(sweep.DEFAULT) == [1, 4, 16, 64, 256]
    for bad in ("", "0,4", "a,b"):
        with pytest.raises(TargetError):
            sweep.parse_clients(bad)
