"""A `kmip-bridge serve` process that can be started, killed -9 (master and workers at once, or
one worker) and started again, and an instance made by `kmip-bridge init`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

CLI = [sys.executable, "-m", "kmip_bridge.cli"]


def make_instance(folder: Path, port: int, database_url: str | None = None, workers: int = 2) -> Path:
    """``kmip-bridge init`` + settings for fault runs; returns the config path."""
    args = [*CLI, "init", "--dir", str(folder), "--port", str(port)]
    if database_url:
        args += ["--database-url", database_url]
    subprocess.run(args, check=True, capture_output=True, text=True, timeout=300)
    config = folder / "server.yaml"
    cfg = yaml.safe_load(config.read_text())
    cfg["server"]["workers"] = workers
    config.write_text(yaml.safe_dump(cfg))
    return config


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


class ServerProcess:
    def __init__(self, config: Path, log_path: Path | None = None) -> None:
        self.config = config
        self.log_path = log_path
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    def start(self, timeout: float = 120.0) -> None:
        # Its own session (process group): kill9() then takes master and workers in one signal.
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--config", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        ready = threading.Event()
        proc = self.proc
        sink = open(self.log_path, "a") if self.log_path else None

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                self.lines.append(line)
                if sink is not None:
                    sink.write(line)
                    sink.flush()
                if '"msg": "ready"' in line:
                    ready.set()
            if sink is not None:
                sink.close()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.kill9()
                raise RuntimeError("server did not start:\n" + "".join(self.lines[-20:]))

    def workers(self) -> list[int]:
        """The master's children: its workers and the database writer (killing it is a fault too)."""
        assert self.proc is not None
        out: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            try:
                out += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                pass
        return out

    def kill9(self) -> None:
        """SIGKILL to the master and every worker at the same instant."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def kill_worker(self) -> int | None:
        """SIGKILL to one worker; the master should replace it. Its pid, or None if none."""
        pids = self.workers()
        if not pids:
            return None
        os.kill(pids[0], signal.SIGKILL)
        return pids[0]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill9()
            return -9
