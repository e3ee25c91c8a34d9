"""Latency accounting of one client process, kept apart from the socket loop so that a fake clock
can drive it (tests/unit/test_bench_latency.py).

Two ways of counting a response, both kept so that old and new figures can be compared:

- **client** (the figure the bench reports since issue 15): every request *sent* inside the
  measured window counts, whenever its response arrives (the loop waits for it after the end).
  Each operation kind has its own samples; ``create-get`` also times the whole Create-then-Get
  cycle (``pair``), which is what an application that makes a key and reads it back waits for.
- **legacy** (the method of every figure in docs/performance.md before issue 15): only requests
  sent after the warm-up whose response arrived *before the end* count. The requests still in
  flight at the end are the slow ones more often than not (a long request is more likely to
  straddle any instant), so the old method dropped part of the tail.

A request sent during the warm-up never counts; a request sent after the end is never sent (the
client stops when a response arrives after the end).
"""

from __future__ import annotations

from array import array

PAIR = "pair"  # the create-get cycle: the Create's send to the Get's full response


class Recorder:
    """Per-kind latency samples (ns) of one client process, under both counting methods."""

    def __init__(self, warm_end: int, end: int, pairs: bool = False) -> None:
        self.warm_end = warm_end
        self.end = end
        self.pairs = pairs
        self.client: dict[str, array] = {}
        self.legacy: dict[str, array] = {}
        # time between a response and the same client's next request: not in any latency sample
        self.gap_ns = 0
        self.gaps = 0

    def _add(self, table: dict[str, array], kind: str, value: int) -> None:
        arr = table.get(kind)
        if arr is None:
            arr = table[kind] = array("q")
        arr.append(value)

    def in_window(self, t0: int) -> bool:
        return self.warm_end <= t0 < self.end

    def response(self, kind: str, t0: int, t1: int, pair_t0: int | None = None) -> bool:
        """One response: ``t0`` when its request was sent, ``t1`` when it was complete;
        ``pair_t0`` the send time of the Create a Get completes. True if it counts (client method)."""
        counted = self.in_window(t0)
        if counted:
            self._add(self.client, kind, t1 - t0)
            if self.pairs and pair_t0 is not None and self.in_window(pair_t0):
                self._add(self.client, PAIR, t1 - pair_t0)
        if t0 >= self.warm_end and t1 <= self.end:
            self._add(self.legacy, kind, t1 - t0)
        return counted

    def gap(self, t_response: int, t_next_send: int) -> None:
        if self.in_window(t_next_send):
            self.gap_ns += t_next_send - t_response
            self.gaps += 1

    def export(self) -> dict[str, object]:
        return {
            "latencies": {k: v.tobytes() for k, v in self.client.items()},
            "legacy_latencies": {k: v.tobytes() for k, v in self.legacy.items()},
            "gap_ns": self.gap_ns,
            "gaps": self.gaps,
        }


def nearest_rank(sorted_values: list[int] | array, p: float) -> int:
    """The nearest-rank ``p``-th percentile: the smallest value with at least p% of the values at or
    below it (no interpolation, so it is always a latency some request really had)."""
    n = len(sorted_values)
    if n == 0:
        raise ValueError("no samples")
    rank = -(-p * n // 100)  # ceil(p * n / 100)
    return sorted_values[min(n - 1, max(0, int(rank) - 1))]


def summary(samples_ns: array | list[int]) -> dict[str, float]:
    """count, mean, p50, p90, p95, p99, p99.9 and max, in milliseconds."""
    if not samples_ns:
        return {"count": 0}
    s = sorted(samples_ns)
    n = len(s)
    out: dict[str, float] = {"count": n, "mean": round(sum(s) / n / 1e6, 3)}
    for name, p in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p99.9", 99.9)):
        out[name] = round(nearest_rank(s, p) / 1e6, 3)
    out["max"] = round(s[-1] / 1e6, 3)
    return out


def accounted_share(mean_ms: float, ops_per_s: float, clients: int) -> float | None:
    """Little's law check for a closed loop: each client always has one request in flight, so
    ``clients = ops_per_s * (mean latency + mean client gap)``. The share of the clients' time the
    latency samples cover; well under 1 means time a client spent that no sample shows."""
    if not clients or not ops_per_s:
        return None
    return round(mean_ms / 1e3 * ops_per_s / clients, 3)
