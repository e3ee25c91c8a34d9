#!/usr/bin/env python3
"""Long mutation-fuzzing runs of the request path (no hypothesis: a plain, fast loop).

In process (default): mutated valid messages, random bytes and deep nesting through the TTLV
decoder and the request parser; any exception other than TtlvError / KmipError is a crash.

    PYTHONPATH=. python scripts/fuzz.py --count 1000000
    PYTHONPATH=. python scripts/fuzz.py --seconds 600 --seed 7

Against a live server (``--target host:port --client-conf DIR``, DIR holding the client's
pykmip.conf or cert.pem/key.pem, over mutual TLS): each mutated message is sent on a connection
(reopened whenever the server closes it); after every batch a well-formed Query on a fresh
connection must succeed, else the run stops with exit 1.

    PYTHONPATH=. python scripts/fuzz.py --target 127.0.0.1:5696 \\
        --client-conf var/instance/clients/admin --count 20000

Prints inputs, rate, outcomes and crashes; exit 0 when there were none.
"""

from __future__ import annotations

import argparse
import configparser
import random
import socket
import ssl
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kmip.core.enums import Operation, ResultStatus
from kmip.core.enums import Tags as T

from kmip_bridge.client import RawClient, client_context, request
from kmip_bridge.protocol import ttlv
from tools import fuzz


def _inputs(rng: random.Random, corpus: list[bytes]):  # type: ignore[no-untyped-def]
    while True:
        r = rng.random()
        if r < 0.9:
            yield fuzz.mutate(rng.choice(corpus), rng, corpus)
        elif r < 0.97:
            yield fuzz.fix_length(rng.randbytes(rng.randrange(8, 200)))
        else:
            yield fuzz.nested(rng.choice((2, 32, 33, 500, 5000)))


def run_local(count: int, seconds: float, seed: int, max_batch_items: int) -> int:
    rng = random.Random(seed)
    corpus = fuzz.seeds()
    outcomes: Counter[str] = Counter()
    crashes = 0
    slowest = 0.0
    start = time.perf_counter()
    n = 0
    for data in _inputs(rng, corpus):
        if n >= count or (seconds and time.perf_counter() - start > seconds):
            break
        t0 = time.perf_counter()
        try:
            outcomes[fuzz.check(data, max_batch_items=max_batch_items)] += 1
        except Exception:  # noqa: BLE001 - that is what we are looking for
            crashes += 1
            if crashes <= 5:
                print(f"CRASH on input {data.hex()}", file=sys.stderr)
                traceback.print_exc()
        slowest = max(slowest, time.perf_counter() - t0)
        n += 1
    elapsed = time.perf_counter() - start
    print(f"mode=local inputs={n} seconds={elapsed:.1f} rate={n / elapsed:,.0f}/s crashes={crashes} "
          f"slowest={slowest * 1000:.1f}ms outcomes={dict(outcomes)}")
    return 1 if crashes else 0


def _client_context(folder: Path) -> ssl.SSLContext:
    conf = folder / "pykmip.conf"
    if conf.exists():
        cp = configparser.ConfigParser()
        cp.read(conf)
        section = cp[cp.sections()[0]]
        return client_context(Path(section["ca_certs"]), Path(section["certfile"]), Path(section["keyfile"]))
    return client_context(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")


def query_ok(host: str, port: int, ctx: ssl.SSLContext) -> bool:
    try:
        with RawClient(host, port, ctx, timeout=10) as c:
            response = c.call(request([(Operation.QUERY.value, None)]))
        bi = response.get(T.BATCH_ITEM.value)
        return bi is not None and bi.value_of(T.RESULT_STATUS.value) == ResultStatus.SUCCESS.value
    except (OSError, ssl.SSLError, ConnectionError, ttlv.TtlvError):
        return False


def run_socket(target: str, conf: Path, count: int, seconds: float, seed: int, batch: int) -> int:
    host, _, port_s = target.rpartition(":")
    port = int(port_s)
    ctx = _client_context(conf)
    rng = random.Random(seed)
    corpus = fuzz.seeds()
    outcomes: Counter[str] = Counter()
    client: RawClient | None = None
    start = time.perf_counter()
    n = 0
    failures = 0
    for data in _inputs(rng, corpus):
        if n >= count or (seconds and time.perf_counter() - start > seconds):
            break
        # A short header or a lying outer length only waits out read_timeout (the e2e slowloris
        # test covers that): frame every input correctly and fuzz what is inside.
        data = fuzz.fix_length(data.ljust(8, b"\0"))
        try:
            if client is None:
                client = RawClient(host, port, ctx, timeout=10)
            reply = client.send_raw(data)
        except (OSError, ssl.SSLError):
            reply = None
        if reply is None:
            outcomes["closed"] += 1
            if client is not None:
                client.close()
            client = None
        else:
            outcomes["answered"] += 1
        n += 1
        if n % batch == 0 and not query_ok(host, port, ctx):
            failures += 1
            print(f"after {n} inputs a well-formed Query FAILED", file=sys.stderr)
            break
    if client is not None:
        client.close()
    if failures == 0 and not query_ok(host, port, ctx):
        failures += 1
        print("final well-formed Query FAILED", file=sys.stderr)
    elapsed = time.perf_counter() - start
    print(f"mode=socket inputs={n} seconds={elapsed:.1f} rate={n / elapsed:,.0f}/s "
          f"query_failures={failures} outcomes={dict(outcomes)}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1_000_000, help="inputs to try (default 1,000,000)")
    ap.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: no limit)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-batch-items", type=int, default=1000)
    ap.add_argument("--target", help="host:port of a live server (socket mode)")
    ap.add_argument("--client-conf", type=Path, help="client folder (pykmip.conf or ca/cert/key.pem)")
    ap.add_argument("--batch", type=int, default=100, help="socket mode: inputs between Query checks")
    args = ap.parse_args(argv)
    if args.target:
        if args.client_conf is None:
            ap.error("--target needs --client-conf")
        return run_socket(args.target, args.client_conf, args.count, args.seconds, args.seed, args.batch)
    return run_local(args.count, args.seconds, args.seed, args.max_batch_items)


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    sys.exit(main())
