"""End-to-end fixtures: real instances (dev PKI, SoftHSM2 token, SQLite or PostgreSQL) and the
real server as a subprocess on a free port."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest
import yaml
from kmip.pie.exceptions import KmipOperationFailure

from .tokens import SOFTHSM2, opencryptoki_token

PG_HOST, PG_PORT = "127.0.0.1", 5432
CLI = [sys.executable, "-m", "kmip_bridge.cli"]
# socket: instances use keyhsm.mode socket, and start() runs 'keyhsm serve' before 'serve'.
KEYHSM_MODE = os.environ.get("KMIP_BRIDGE_TEST_KEYHSM_MODE", "inprocess")


T = TypeVar("T")


def eventually(call: Callable[[], T], attempts: int = 40) -> T:
    """The call's result once it stops failing with a KMIP error (a server recovering from a
    database or token fault: each worker recovers on its own next request, and a fresh
    connection may land on either worker); 0.25 s between attempts."""
    last: Exception | None = None
    for _ in range(attempts):
        try:
            return call()
        except KmipOperationFailure as exc:
            last = exc
            time.sleep(0.25)
    raise AssertionError(f"still failing after {attempts} attempts: {last}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=180)
    if check and result.returncode != 0:
        raise AssertionError(f"kmip-bridge {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def postgres_available() -> str | None:
    """None when reachable, else why not."""
    try:
        import psycopg2

        psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres", connect_timeout=3).close()
        return None
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT} ({type(exc).__name__}: {exc})"


def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres")
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def pg_database() -> Iterator[Callable[[], str]]:
    """Makes fresh PostgreSQL databases for this run and drops them afterwards."""
    why = postgres_available()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the PostgreSQL tests: {why}")
        pytest.skip(f"SKIPPING POSTGRESQL TESTS LOUDLY: {why}")
    created: list[str] = []

    def make() -> str:
        name = f"kmip_bridge_test_{secrets.token_hex(4)}"
        admin = _pg_admin()
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        admin.close()
        created.append(name)
        return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}"

    yield make
    admin = _pg_admin()
    with admin.cursor() as cur:
        for name in created:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.close()


@dataclass
class Server:
    config: Path
    port: int
    proc: subprocess.Popen[str]
    log: list[str] = field(default_factory=list)  # the server's stderr (and the Key HSM service's)
    keyhsm: subprocess.Popen[str] | None = None  # 'keyhsm serve' started for this server

    @property
    def dir(self) -> Path:
        return self.config.parent

    def client_conf(self, name: str = "admin") -> Path:
        return self.dir / "clients" / name / "pykmip.conf"

    def saw(self, text: str, timeout: float = 10.0) -> bool:
        """Whether the server logged ``text`` (waiting a little: its log arrives through a pipe)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.log):
                return True
            time.sleep(0.05)
        return False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def children(self) -> set[int]:
        """The master's child processes now: the workers and the database writer."""
        out: set[int] = set()
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            out |= {int(p) for p in (task / "children").read_text().split()}
        return out

    def writer_pids(self) -> list[int]:
        """Every pid the server logged "database writer ready" with, oldest first."""
        return [json.loads(line)["pid"] for line in list(self.log) if '"msg": "database writer ready"' in line]

    def worker_pids(self) -> set[int]:
        return self.children() - set(self.writer_pids())

    def stop(self) -> int:
        """SIGTERM to the server, then to its Key HSM service; the first non-zero exit code."""
        codes = [_terminate(p) for p in (self.proc, self.keyhsm) if p is not None]
        return next((c for c in codes if c), 0)


def _terminate(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def start_keyhsm_service(
    config: Path, log: list[str], env: dict[str, str] | None = None
) -> subprocess.Popen[str] | None:
    """Runs 'kmip-bridge keyhsm serve' for a keyhsm.mode socket instance; None if one already
    listens on its socket (another server of the same instance started it)."""
    from kmip_bridge.config import load

    path = load(config).keyhsm.socket
    assert path is not None
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
            return None
        except OSError:
            pass
    proc = subprocess.Popen(
        [*CLI, "keyhsm", "serve", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            if '"msg": "keyhsm service ready"' in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 60
    while not ready.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            _terminate(proc)
            raise AssertionError("keyhsm service did not start:\n" + "".join(log[-30:]))
    return proc


@dataclass
class Instance:
    config: Path
    database_url: str

    @property
    def dir(self) -> Path:
        return self.config.parent

    def start(self, **server_overrides: object) -> Server:
        port = free_port()
        cfg = yaml.safe_load(self.config.read_text())
        cfg["server"].update({"port": port, "workers": 2, **server_overrides})
        self.config.write_text(yaml.safe_dump(cfg))
        # Client configs carry the port: reissue them for the new one.
        for conf in (self.dir / "clients").glob("*/pykmip.conf"):
            text = conf.read_text()
            lines = [f"port={port}" if ln.startswith("port=") else ln for ln in text.splitlines()]
            conf.write_text("\n".join(lines) + "\n")
        log: list[str] = []
        keyhsm = start_keyhsm_service(self.config, log) if cfg["keyhsm"].get("mode") == "socket" else None
        proc = subprocess.Popen(
            [*CLI, "serve", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        server = Server(self.config, port, proc, log=log, keyhsm=keyhsm)
        ready = threading.Event()

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                server.log.append(line)
                if '"msg": "ready"' in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 90
        while not ready.is_set():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                if keyhsm is not None:
                    _terminate(keyhsm)
                time.sleep(0.2)
                raise AssertionError("server did not start:\n" + "".join(server.log[-30:]))
            ready.wait(0.1)
        return server

    def client(self, name: str, *groups: str) -> Path:
        args = ["certs", "client", name, "--config", str(self.config)]
        for g in groups:
            args += ["--group", g]
        return Path(run_cli(*args).stdout.strip())


def make_instance(
    base: Path, database_url: str | None, kek_kind: str = "aes", keyhsm_mode: str | None = None,
    token: str = SOFTHSM2,
) -> Instance:
    port = free_port()
    if token != SOFTHSM2:
        # 'init' keeps a config it finds: this one names the other implementation's token.
        from kmip_bridge.admin.instance import _default_config

        cfg = _default_config(port, database_url, kek_kind)
        cfg["keyhsm"].update(opencryptoki_token(base / "token", "kb-e2e"))
        base.mkdir(parents=True, exist_ok=True)
        (base / "server.yaml").write_text(yaml.safe_dump(cfg))
    args = ["init", "--dir", str(base), "--kek-kind", kek_kind, "--port", str(port)]
    if database_url:
        args += ["--database-url", database_url]
    run_cli(*args)
    config = base / "server.yaml"
    cfg = yaml.safe_load(config.read_text())
    # Rotation and revocation by the CLI must be visible to the running server at once.
    cfg["keyhsm"]["kek_refresh_seconds"] = 0
    if (keyhsm_mode or KEYHSM_MODE) == "socket":
        cfg["keyhsm"]["mode"] = "socket"
    config.write_text(yaml.safe_dump(cfg))
    from kmip_bridge.config import load

    return Instance(config, load(config).database.url)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def instance(backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Instance:
    url = request.getfixturevalue("pg_database")() if backend == "postgresql" else None
    return make_instance(tmp_path_factory.mktemp(f"inst-{backend}"), url)


@pytest.fixture(scope="module")
def server(instance: Instance) -> Iterator[Server]:
    srv = instance.start()
    yield srv
    code = srv.stop()
    assert code == 0, "server did not exit cleanly on SIGTERM:\n" + "".join(srv.log[-20:])


def start_node(instance: Instance, port: int) -> Server:
    """Another node of an already started instance: the same config (token, KEK, database), its
    own port (``serve --port``). Client configs keep the first node's port: connect by port."""
    proc = subprocess.Popen(
        [*CLI, "serve", "--config", str(instance.config), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    server = Server(instance.config, port, proc)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            server.log.append(line)
            if '"msg": "ready"' in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 90
    while not ready.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise AssertionError("node did not start:\n" + "".join(server.log[-30:]))
    return server
