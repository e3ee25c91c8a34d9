"""What a multi-part stream costs per part now that it lives in the database (issue 13).

Runs a fresh instance (two workers) and, from one connection, times one-part Hash requests against
the parts of a Hash stream of ``--parts`` parts of ``--size`` bytes (each part reads the sealed
stream, adds its input and writes the whole stream back). Prints the median and 90th percentile
per request kind, in milliseconds.

    .venv/bin/python scripts/bench_streams.py --sqlite
    .venv/bin/python scripts/bench_streams.py --database-url postgresql://postgres@127.0.0.1/DB
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kmip.core.enums import HashingAlgorithm, Operation, ResultStatus
from kmip.core.enums import Tags as T

from kmip_bridge.bench.servers import free_port
from kmip_bridge.client import RawClient, client_context, request
from kmip_bridge.protocol import ttlv
from kmip_bridge.protocol.ttlv import Item
from tools.reliability import harness

SHA256 = ttlv.struct_(T.CRYPTOGRAPHIC_PARAMETERS, [ttlv.enum(T.HASHING_ALGORITHM, HashingAlgorithm.SHA_256)])


def _timed(client: RawClient, *fields: Item) -> tuple[float, Item]:
    msg = request([(Operation.HASH.value, ttlv.struct_(T.REQUEST_PAYLOAD, list(fields)))], version=(2, 1))
    started = time.perf_counter()
    item = client.call(msg).all(T.BATCH_ITEM.value)[0]
    elapsed = (time.perf_counter() - started) * 1000
    assert item.value_of(T.RESULT_STATUS.value) == ResultStatus.SUCCESS.value, item.value_of(T.RESULT_MESSAGE.value)
    return elapsed, item.get(T.RESPONSE_PAYLOAD.value)  # type: ignore[return-value]


def _corr(payload: Item) -> Item:
    return ttlv.bytes_(T.CORRELATION_VALUE, payload.value_of(T.CORRELATION_VALUE.value))  # type: ignore[arg-type]


def _summary(name: str, times: list[float]) -> str:
    p90 = statistics.quantiles(times, n=10)[-1]
    return f"{name:<34} n={len(times):<5} median {statistics.median(times):7.2f} ms   p90 {p90:7.2f} ms"


def _parallel(port: int, ctx: object, clients: int, parts: int, chunk: Item) -> float:
    """Parts per second of ``clients`` connections each running one stream of ``parts`` parts."""
    conns = [RawClient("127.0.0.1", port, ctx, timeout=300) for _ in range(clients)]  # type: ignore[arg-type]
    barrier = threading.Barrier(clients + 1)

    def run(c: RawClient) -> None:
        barrier.wait()
        _, out = _timed(c, SHA256, chunk, ttlv.boolean(T.INIT_INDICATOR, True))
        for _ in range(parts - 2):
            _, out = _timed(c, chunk, _corr(out))
        _timed(c, chunk, _corr(out), ttlv.boolean(T.FINAL_INDICATOR, True))

    threads = [threading.Thread(target=run, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    for c in conns:
        c.close()
    return clients * parts / elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    db = p.add_mutually_exclusive_group(required=True)
    db.add_argument("--sqlite", action="store_true")
    db.add_argument("--database-url")
    p.add_argument("--parts", type=int, default=200, help="parts per stream")
    p.add_argument("--size", type=int, default=1024, help="bytes per part")
    p.add_argument("--streams", type=int, default=3)
    p.add_argument("--clients", type=int, default=8, help="connections streaming at once")
    args = p.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="kmip-bridge-streams-"))
    config = harness.make_instance(folder / "instance", free_port(), args.database_url, workers=2)
    server = harness.ServerProcess(config)
    server.start()
    try:
        import yaml

        port = yaml.safe_load(config.read_text())["server"]["port"]
        clients = folder / "instance" / "clients" / "admin"
        ctx = client_context(folder / "instance" / "pki" / "ca.pem", clients / "cert.pem", clients / "key.pem")
        client = RawClient("127.0.0.1", port, ctx, timeout=120)
        chunk = ttlv.bytes_(T.DATA, b"s" * args.size)
        one_part = [_timed(client, SHA256, chunk)[0] for _ in range(args.parts * args.streams)]
        init, middle, final = [], [], []
        for _ in range(args.streams):
            t, out = _timed(client, SHA256, chunk, ttlv.boolean(T.INIT_INDICATOR, True))
            init.append(t)
            for _ in range(args.parts - 2):
                t, out = _timed(client, chunk, _corr(out))
                middle.append(t)
            t, _ = _timed(client, chunk, _corr(out), ttlv.boolean(T.FINAL_INDICATOR, True))
            final.append(t)
        client.close()
        parallel = _parallel(port, ctx, args.clients, args.parts, chunk)
        print(f"database {'sqlite' if args.sqlite else args.database_url}; {args.parts} parts of {args.size} bytes")
        print(_summary("one-part Hash", one_part))
        print(_summary("stream: Init part", init))
        print(_summary(f"stream: middle parts (1..{args.parts * args.size // 1024} KiB)", middle))
        print(_summary("stream: Final part", final))
        print(f"{args.clients} clients streaming at once: {parallel:.0f} parts/s in all")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
