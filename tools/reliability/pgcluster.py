"""A PostgreSQL cluster of our own, on its own port and folder, so that a test can stop and start
the database under a live server without touching the shared one.

PostgreSQL refuses to run as root; as root the cluster is owned by, and run as, the ``postgres``
user (runuser), in a folder of /tmp that user can reach.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

BIN_GLOB = "/usr/lib/postgresql/*/bin"


def find_bin() -> Path | None:
    """The newest PostgreSQL server binaries folder (with initdb and pg_ctl), or None."""
    found = sorted(glob.glob(BIN_GLOB), key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0)
    for folder in reversed(found):
        if os.access(os.path.join(folder, "initdb"), os.X_OK) and os.access(os.path.join(folder, "pg_ctl"), os.X_OK):
            return Path(folder)
    return None


def unavailable() -> str | None:
    """None if a cluster can be made here, else why not."""
    if find_bin() is None:
        return f"no PostgreSQL server binaries ({BIN_GLOB}/initdb, pg_ctl)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the cluster as"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing"
    return None


class PgCluster:
    def __init__(self, port: int, base: Path | None = None) -> None:
        folder = find_bin()
        if folder is None:
            raise RuntimeError(unavailable() or "no PostgreSQL binaries")
        self.bin = folder
        self.port = port
        self.base = base or Path(tempfile.mkdtemp(prefix="kmip-bridge-pg-", dir="/tmp"))
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self.base.chmod(0o700)

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin / cmd[0]), *cmd[1:]]
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {result.stdout}{result.stderr}")
        return result

    def init(self) -> PgCluster:
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                      "--no-sync")
        return self

    def start(self) -> None:
        # fsync stays on: the crash runs need an acknowledged commit to be a durable one.
        opts = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """fast: disconnects every client at once (what a database restart does to them);
        immediate: no shutdown checkpoint, like a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)

    def destroy(self) -> None:
        if self.data.exists():
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def start_throwaway(port: int, dbname: str) -> tuple[PgCluster, str]:
    """A started cluster on ``port`` holding an empty database ``dbname``, and that database's URL.
    Raises RuntimeError saying why when PostgreSQL's server binaries are not usable here."""
    why = unavailable()
    if why:
        raise RuntimeError(why)
    cluster = PgCluster(port).init()
    cluster.start()
    return cluster, cluster.create_database(dbname)
