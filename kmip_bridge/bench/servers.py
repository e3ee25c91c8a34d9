"""Targets: a fresh kmip-bridge instance started here, or one already running; CPU accounting.

A fresh instance is made by ``kmip-bridge init`` in a temporary folder and served by
``kmip-bridge serve``; it is ready when its JSON log says ``"msg": "ready"``. Its log goes to a
file, so the harness never has to drain a pipe while it generates load.
"""

from __future__ import annotations

import configparser
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from .loadgen import Endpoint

CLI = [sys.executable, "-m", "kmip_bridge.cli"]
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
_TICK = os.sysconf("SC_CLK_TCK")


class TargetError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_line(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise TargetError(f"server did not get ready (exit code {proc.poll()}):\n{tail}")


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Signals the server we started (its own process group) and waits; SIGKILL if it hangs."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:  # stragglers in the group (e.g. a multiprocessing manager)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return int(proc.returncode)


# -- PostgreSQL ---------------------------------------------------------------------------------------
def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg2

    conn = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    conn.autocommit = True
    return conn


def create_pg_database() -> tuple[str, str]:
    name = f"kmip_bridge_bench_{secrets.token_hex(4)}"
    conn = _pg_admin()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return name, f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{name}"


def drop_pg_database(name: str) -> None:
    conn = _pg_admin()
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    conn.close()


def pg_backend_pids(name: str) -> list[int]:
    conn = _pg_admin()
    with conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,))
        pids = [int(r[0]) for r in cur.fetchall()]
    conn.close()
    return pids


# -- CPU accounting -----------------------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from 'state' on (field 3)


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(int(st[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        st = _stat(pid)
        if st is not None:
            total += int(st[11]) + int(st[12])  # utime, stime
    return total / _TICK


def machine_cpu() -> tuple[float, float, float]:
    """(busy, steal, total) CPU seconds of the whole machine since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    steal = fields[7] if len(fields) > 7 else 0
    total = sum(fields[:8])
    return (total - idle - steal) / _TICK, steal / _TICK, total / _TICK


# -- our server ---------------------------------------------------------------------------------------
class OurServer:
    """A fresh kmip-bridge instance in ``workdir``, served on a free port.

    ``keyhsm_mode`` socket runs ``kmip-bridge keyhsm serve`` beside it (its CPU counts as the
    server's). ``prepare`` (init) and ``serve``/``halt`` are separate so that the scale run can
    bulk-load the stopped instance between measurements; ``stop`` also drops a PostgreSQL database.
    """

    def __init__(self, workdir: Path, database: str, kek_kind: str, workers: int | None,
                 keyhsm_mode: str = "inprocess", max_connections: int | None = None,
                 metrics: bool = False, per_object: bool = False, db_writer: str = "process") -> None:
        self.dir = workdir
        self.db_writer = db_writer
        self.per_object = per_object
        self.database = database
        self.kek_kind = kek_kind
        self.workers = workers
        self.keyhsm_mode = keyhsm_mode
        self.max_connections = max_connections
        self.label = "kmip-bridge" if keyhsm_mode == "inprocess" else f"kmip-bridge-{keyhsm_mode}"
        if per_object:
            self.label += "-per-object"
        if db_writer != "process":
            self.label += f"-{db_writer}-writer"
        self.pg_name: str | None = None
        self.keep_database = False  # --keep: the PostgreSQL database stays with the kept instance
        self.proc: subprocess.Popen[bytes] | None = None
        self.keyhsm: subprocess.Popen[bytes] | None = None
        self.log = workdir / "server.log"
        self.keyhsm_log = workdir / "keyhsm.log"
        self.port = 0
        self.socket_dir: Path | None = None
        self.metrics_port = free_port() if metrics else 0

    @property
    def config(self) -> Path:
        return self.dir / "server.yaml"

    def prepare(self) -> None:
        """``kmip-bridge init`` (once) and the settings this run needs."""
        if self.port:
            return
        url = None
        if self.database == "postgresql":
            self.pg_name, url = create_pg_database()
        self.port = free_port()
        args = [*CLI, "init", "--dir", str(self.dir), "--kek-kind", self.kek_kind, "--port", str(self.port)]
        if url:
            args += ["--database-url", url]
        done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise TargetError(f"kmip-bridge init failed:\n{done.stdout}\n{done.stderr}")
        cfg = yaml.safe_load(self.config.read_text())
        if self.workers is not None:
            cfg["server"]["workers"] = self.workers
        if self.max_connections is not None:
            cfg["server"]["max_connections"] = self.max_connections
        cfg["keyhsm"]["mode"] = self.keyhsm_mode
        cfg["keyhsm"]["per_object"] = self.per_object  # a token key per object (keyhsm/per_object.py)
        cfg["database"]["writer"] = self.db_writer
        if self.metrics_port:
            cfg["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": self.metrics_port}
        if self.keyhsm_mode == "socket":
            # a short path of its own (0700 folder): a Unix socket path has at most 107 bytes
            self.socket_dir = Path(tempfile.mkdtemp(prefix="kb-"))
            cfg["keyhsm"]["socket"] = str(self.socket_dir / "keyhsm.sock")
        self.config.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def serve(self) -> Endpoint:
        if self.keyhsm_mode == "socket":
            with self.keyhsm_log.open("wb") as log:  # a restart waits for its own "ready"
                self.keyhsm = subprocess.Popen(
                    [*CLI, "keyhsm", "serve", "--config", str(self.config)],
                    stdout=log, stderr=log, start_new_session=True,
                )
            wait_for_line(self.keyhsm_log, '"msg": "keyhsm service ready"', self.keyhsm, 60)
        self.log.unlink(missing_ok=True)  # a restart waits for its own "ready"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*CLI, "serve", "--config", str(self.config), "--port", str(self.port)],
                stdout=log, stderr=log, start_new_session=True,
            )
        wait_for_line(self.log, '"msg": "ready"', self.proc, 120)
        admin = self.dir / "clients" / "admin"
        return Endpoint("127.0.0.1", self.port, self.dir / "pki" / "ca.pem", admin / "cert.pem", admin / "key.pem")

    def start(self) -> Endpoint:
        self.prepare()
        return self.serve()

    def pids(self) -> list[int]:
        out = descendants(self.proc.pid) if self.proc else []
        return out + (descendants(self.keyhsm.pid) if self.keyhsm else [])

    def database_pids(self) -> list[int]:
        return pg_backend_pids(self.pg_name) if self.pg_name else []

    def describe(self) -> dict[str, object]:
        return {"database": self.database, "kek_kind": self.kek_kind, "workers": self.workers or os.cpu_count(),
                "keyhsm_mode": self.keyhsm_mode, "metrics": bool(self.metrics_port), "per_object": self.per_object,
                "db_writer": self.db_writer}

    def write_counters(self) -> dict[str, float] | None:
        """With metrics on: group commit's writes and transactions, and the seconds write
        transactions waited for / held SQLite's write lock, summed over the workers so far."""
        if not self.metrics_port:
            return None
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        wanted = {"kmip_bridge_group_commit_writes_total": "writes",
                  "kmip_bridge_group_commit_transactions_total": "transactions"}
        out = dict.fromkeys(("writes", "transactions", "lock_wait_s", "lock_held_s"), 0.0)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in wanted:
                    out[wanted[sample.name]] += sample.value
                elif sample.name == "kmip_bridge_db_write_lock_seconds_total":
                    out[f"lock_{sample.labels['phase']}_s"] += sample.value
        return out

    def halt(self) -> None:
        """Stops the server (and the Key HSM service); the instance and its database stay."""
        for proc, log in ((self.proc, self.log), (self.keyhsm, self.keyhsm_log)):
            if proc is not None:
                code = stop_group(proc)
                if code != 0:
                    print(f"warning: {self.label} exited with {code}; log: {log}", file=sys.stderr)
        self.proc = self.keyhsm = None

    def stop(self) -> None:
        try:
            self.halt()
        finally:
            if self.socket_dir is not None:
                shutil.rmtree(self.socket_dir, ignore_errors=True)
            if self.pg_name and self.keep_database:
                print(f"database kept: {self.pg_name}", file=sys.stderr)
            elif self.pg_name:
                drop_pg_database(self.pg_name)
                self.pg_name = None


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of these processes, summed (shared pages count once per process)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class RunningServer:
    """A server somebody else runs: host:port and a client folder (cert.pem, key.pem, pykmip.conf)."""

    label = "kmip-bridge"

    def __init__(self, target: str | None, client_conf: Path) -> None:
        conf = client_conf / "pykmip.conf" if client_conf.is_dir() else client_conf
        parser = configparser.ConfigParser()
        if not parser.read(conf):
            raise TargetError(f"cannot read client configuration {conf}")
        section = parser[parser.sections()[0]]
        host, port = section.get("host", "127.0.0.1"), section.getint("port", 5696)
        if target:
            host, _, p = target.rpartition(":")
            port = int(p)
        self.endpoint = Endpoint(
            host, port, Path(section["ca_certs"]), Path(section["certfile"]), Path(section["keyfile"])
        )

    def start(self) -> Endpoint:
        return self.endpoint

    def pids(self) -> list[int]:
        return []

    def database_pids(self) -> list[int]:
        return []

    def describe(self) -> dict[str, object]:
        return {"target": f"{self.endpoint.host}:{self.endpoint.port}"}

    def stop(self) -> None:
        pass
