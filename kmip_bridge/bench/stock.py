"""The stock PyKMIP server (``pykmip-server``) as the comparison target.

It gets its own temporary folder, port, SQLite database and a dev PKI of its own (from
``kmip_bridge.admin.pki``: ECDSA P-256 certificates). Its ``Basic`` auth suite offers only RSA key
exchange ciphers on TLS 1.0, which modern OpenSSL refuses; the ``TLS1.2`` suite negotiates
ECDHE-ECDSA with these certificates. It logs at WARNING so that its per-request INFO lines are
not what is measured (our server keeps its default INFO audit log; see docs/performance.md).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..admin import pki
from ..client import RawClient, client_context
from .loadgen import Endpoint
from .servers import TargetError, descendants, free_port, stop_group


def wait_for_tls(ep: Endpoint, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Ready means a mutual-TLS handshake completes (it logs nothing at WARNING when it listens)."""
    ctx = client_context(ep.ca, ep.cert, ep.key)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            RawClient(ep.host, ep.port, ctx, timeout=5).close()
            return
        except OSError as exc:
            last = exc
            time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise TargetError(f"pykmip-server did not get ready (exit code {proc.poll()}, last error {last}):\n{tail}")


def pykmip_server_command() -> list[str]:
    script = Path(sys.executable).parent / "pykmip-server"
    if script.exists():
        return [str(script)]
    found = shutil.which("pykmip-server")
    if found:
        return [found]
    raise TargetError("pykmip-server not found: install PyKMIP (pip install pykmip)")


class StockServer:
    label = "pykmip"

    def __init__(self, workdir: Path, logging_level: str = "WARNING") -> None:
        self.dir = workdir
        self.logging_level = logging_level
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "server.log"

    def _pki(self) -> tuple[Path, Path, Path]:
        d = self.dir / "pki"
        ca, ca_key = d / "ca.pem", d / "ca.key"
        pki.make_ca(ca, ca_key, "pykmip bench CA")
        pki.issue(ca, ca_key, d / "server.pem", d / "server.key", "pykmip server", server=True,
                  hosts=("127.0.0.1", "localhost"))
        pki.issue(ca, ca_key, d / "client.pem", d / "client.key", "bench", server=False)
        return ca, d / "client.pem", d / "client.key"

    def start(self) -> Endpoint:
        ca, cert, key = self._pki()
        policies = self.dir / "policies"
        policies.mkdir(parents=True, exist_ok=True)
        port = free_port()
        conf = self.dir / "server.conf"
        conf.write_text(
            "[server]\n"
            "hostname=127.0.0.1\n"
            f"port={port}\n"
            f"certificate_path={self.dir / 'pki' / 'server.pem'}\n"
            f"key_path={self.dir / 'pki' / 'server.key'}\n"
            f"ca_path={ca}\n"
            "auth_suite=TLS1.2\n"
            f"policy_path={policies}\n"
            "enable_tls_client_auth=True\n"
            f"logging_level={self.logging_level}\n"
            f"database_path={self.dir / 'pykmip.db'}\n"
        )
        app_log = self.dir / "pykmip-server.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*pykmip_server_command(), "-f", str(conf), "-l", str(app_log)],
                stdout=out, stderr=out, start_new_session=True,
            )
        endpoint = Endpoint("127.0.0.1", port, ca, cert, key)
        wait_for_tls(endpoint, self.proc, self.log, 60)
        return endpoint

    def pids(self) -> list[int]:
        # The server and its multiprocessing Manager (which holds the operation policies).
        return descendants(self.proc.pid) if self.proc else []

    def database_pids(self) -> list[int]:
        return []

    def describe(self) -> dict[str, object]:
        return {"database": "sqlite", "server": "pykmip-server (PyKMIP 0.11)", "auth_suite": "TLS1.2",
                "logging_level": self.logging_level}

    def stop(self) -> None:
        if self.proc is not None:
            # SIGINT raises KeyboardInterrupt in its accept loop; SIGTERM waits out a 10 s timeout.
            stop_group(self.proc, signal.SIGINT, timeout=30)
