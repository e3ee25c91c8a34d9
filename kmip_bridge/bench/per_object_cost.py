"""``python -m kmip_bridge.bench.per_object_cost``: what keyhsm.per_object costs in the Key HSM
layer, one thread, no KMIP around it, as the token fills up.

A fresh instance (SQLite, aes-kwp KEK, in process). At each token size (per-object keys on the
token) it measures: seal with the shared KEK; seal with a per-object key (key generation + wrap);
open of a per-object record from a cold handle cache (a label search over the token) and warm;
destroy of a per-object key. Then the key-pair kinds the issue names as alternatives, generation
only: EC P-256 and RSA-2048/3072 pairs on the token. The full-server figures are
``python -m kmip_bridge.bench --per-object both``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pkcs11 import Attribute, KeyType, MechanismFlag

from .. import config
from ..app import token_settings
from ..keyhsm import KeyHsm
from .servers import OurServer

MATERIAL = bytes(range(64))


def _ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1e3:.2f}"


def _timed(call: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kmip_bridge.bench.per_object_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="0,1000,3000", help="per-object keys on the token at each step")
    p.add_argument("--calls", type=int, default=50, help="samples per figure (default 50)")
    p.add_argument("--workdir", type=Path)
    args = p.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    base = Path(tempfile.mkdtemp(prefix="kmip-per-object-cost-", dir=args.workdir))
    server = OurServer(base / "kb", "sqlite", "aes-kwp", None, "inprocess", per_object=True)
    try:
        server.prepare()
        settings = config.load(server.config)
        ts = token_settings(settings)
        hsm = KeyHsm(ts, settings.keyhsm.kek, per_object_keks=frozenset({"own"}))
        print("| per-object keys on the token | seal, shared KEK (ms) | seal, per-object (ms) | "
              "open, per-object, cold (ms) | open, warm (ms) | destroy key (ms) |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        on_token = 0
        try:
            for size in sizes:
                while on_token < size:  # fill: keys that stay (as live objects' keys would)
                    hsm.seal(f"fill-{on_token}", MATERIAL, "bench", kek_name="own")
                    on_token += 1
                shared = _timed(lambda: hsm.seal("s", MATERIAL, "bench"), args.calls)
                records = []
                t_seal = []
                for i in range(args.calls):
                    t0 = time.perf_counter()
                    records.append((f"m-{size}-{i}", hsm.seal(f"m-{size}-{i}", MATERIAL, "bench", kek_name="own")))
                    t_seal.append(time.perf_counter() - t0)
                cold_hsm = KeyHsm(ts, settings.keyhsm.kek)  # empty handle caches
                try:
                    cold = [_timed(lambda r=r, h=cold_hsm: h.open(r[0], r[1], "bench"), 1)[0] for r in records]
                    warm = [_timed(lambda r=r, h=cold_hsm: h.open(r[0], r[1], "bench"), 1)[0] for r in records]
                finally:
                    cold_hsm.close()
                gone = [_timed(lambda r=r: hsm.destroy_object_key(r[1].kek_label), 1)[0] for r in records]
                print(f"| {size} | {_ms(shared)} | {_ms(t_seal)} | {_ms(cold)} | {_ms(warm)} | {_ms(gone)} |")
            print()
            print("| key-pair kind (generation on the token, then destroyed) | median ms |")
            print("| --- | ---: |")
            with hsm._token.admin() as session:  # a measurement, not an API
                for name, kind, arg in (("EC P-256", KeyType.EC, None), ("RSA-2048", KeyType.RSA, 2048),
                                        ("RSA-3072", KeyType.RSA, 3072)):
                    n = 3 if kind == KeyType.RSA else args.calls
                    samples = []
                    for _ in range(n):
                        t0 = time.perf_counter()
                        if kind == KeyType.EC:
                            from pkcs11.util.ec import encode_named_curve_parameters

                            curve = {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}
                            params = session.create_domain_parameters(KeyType.EC, curve, local=True)
                            pub, priv = params.generate_keypair(store=True, label="bench-pair")
                        else:
                            pub, priv = session.generate_keypair(
                                kind, arg, store=True, label="bench-pair",
                                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                            )
                        samples.append(time.perf_counter() - t0)
                        pub.destroy()
                        priv.destroy()
                    print(f"| {name} ({n} samples) | {_ms(samples)} |")
        finally:
            hsm.close()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
