"""``python -m kmip_bridge.bench.keyhsm_cost``: what one seal and one open cost in process and
through the Key HSM service (``keyhsm.mode: socket``), one thread, no KMIP around it.

A fresh instance; ``kmip-bridge keyhsm serve`` on its socket; N seal+open pairs through
``KeyHsm`` (this process opens the token) and N through ``RemoteKeyHsm`` (the service does).
Reports wall time per pair and CPU per pair, the service's CPU included for socket mode. The
full-server comparison is ``python -m kmip_bridge.bench --keyhsm-mode both``.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from .. import config
from ..app import open_keyhsm
from ..keyhsm import KeyHsm
from ..keyhsm.remote import RemoteKeyHsm
from .servers import CLI, OurServer, cpu_seconds, stop_group, wait_for_line

MATERIAL = bytes(range(64))  # about the size of an encoded AES-256 key object


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def measure(hsm: KeyHsm | RemoteKeyHsm, calls: int, service_pid: int | None) -> dict[str, float]:
    for i in range(50):  # warm: sessions, KEK lookup, connections
        hsm.open(f"warm-{i}", hsm.seal(f"warm-{i}", MATERIAL, "bench"), "bench")
    ext0 = cpu_seconds([service_pid]) if service_pid else 0.0
    t0, c0 = time.perf_counter(), _cpu()
    for i in range(calls):
        uid = f"obj-{i}"
        if hsm.open(uid, hsm.seal(uid, MATERIAL, "bench"), "bench") != MATERIAL:
            raise RuntimeError("open returned other bytes than were sealed")
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    service = (cpu_seconds([service_pid]) - ext0) if service_pid else 0.0
    return {"wall_us_per_pair": round(wall / calls * 1e6, 1),
            "cpu_us_per_pair": round((cpu + service) / calls * 1e6, 1),
            "service_cpu_us_per_pair": round(service / calls * 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kmip_bridge.bench.keyhsm_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=2000, help="seal+open pairs per mode (default 2000)")
    p.add_argument("--kek-kind", choices=("aes-kwp", "rsa-oaep"), default="aes-kwp")
    p.add_argument("--workdir", type=Path, help="parent folder for the temporary instance")
    args = p.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="kmip-keyhsm-cost-", dir=args.workdir))
    server = OurServer(base / "kb", "sqlite", args.kek_kind, None, "socket")
    service = None
    try:
        server.prepare()
        settings = config.load(server.config)
        with server.keyhsm_log.open("ab") as log:
            service = subprocess.Popen([*CLI, "keyhsm", "serve", "--config", str(server.config)],
                                       stdout=log, stderr=log, start_new_session=True)
        wait_for_line(server.keyhsm_log, '"msg": "keyhsm service ready"', service, 60)
        local = open_keyhsm(settings)
        remote = RemoteKeyHsm(settings.keyhsm.socket, settings.keyhsm.kek)  # type: ignore[arg-type]
        try:
            rows = {"inprocess": measure(local, args.calls, None), "socket": measure(remote, args.calls, service.pid)}
        finally:
            remote.close()
            local.close()
    finally:
        if service is not None:
            stop_group(service)
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"| keyhsm.mode ({args.kek_kind}, {args.calls} seal+open pairs, one thread) | wall µs/pair | "
          "CPU µs/pair | of which the service |")
    print("|---|---|---|---|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['wall_us_per_pair']} | {r['cpu_us_per_pair']} | {r['service_cpu_us_per_pair']} |")
    i, s = rows["inprocess"], rows["socket"]
    print(f"\nsocket mode adds {s['wall_us_per_pair'] - i['wall_us_per_pair']:.1f} µs wall and "
          f"{s['cpu_us_per_pair'] - i['cpu_us_per_pair']:.1f} µs CPU per seal+open pair")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
