"""docs/getting-started.md, walked through: its marked blocks are extracted from the page and run in
order in a fresh folder laid out like a clone (scripts/, .venv and the package metadata linked from
this checkout), against the real server started by scripts/dev-server.sh, SoftHSM2, SQLite and
then PostgreSQL. The page's "How this page is tested" section describes the markers and the three
values replaced (ports, database name) so that the walk can run next to other servers."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import _pg_admin, free_port, postgres_available

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "getting-started.md"
LINKED = ("scripts", ".venv", "setup.cfg", "pyproject.toml", ".cache")
BLOCK = re.compile(r"<!-- test: (\w+)(?: \(([^)]*)\))? -->\n```(\w+)\n(.*?)\n```", re.DOTALL)
FENCE = re.compile(r"^```(sh|python)$", re.MULTILINE)


@dataclass
class Block:
    kind: str  # server, run, python, output, skip
    why: str | None
    lang: str
    text: str
    line: int


def blocks(text: str) -> list[Block]:
    return [Block(m.group(1), m.group(2), m.group(3), m.group(4), text.count("\n", 0, m.start()) + 1)
            for m in BLOCK.finditer(text)]


def test_every_command_block_is_marked() -> None:
    text = DOC.read_text()
    found = blocks(text)
    assert len(FENCE.findall(text)) == len([b for b in found if b.lang in ("sh", "python")])
    assert {b.kind for b in found} == {"server", "run", "python", "output", "skip"}
    assert [b.text for b in found if b.kind == "skip"] == ["scripts/test.sh"]
    for b in found:
        assert (b.kind == "python") == (b.lang == "python"), b
        assert (b.kind == "output") == (b.lang == "text"), b
    # The walk-through covers what it promises.
    commands = "\n".join(b.text for b in found if b.kind in ("run", "server"))
    for step in ("scripts/dev-server.sh", "certs client alice --group", "certs sign --csr", "metrics:",
                 "createdb", "db upgrade", "keyhsm rotate", "keyhsm rewrap", "keyhsm revoke"):
        assert step in commands, step


class Walk:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.server: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    def start_server(self, command: str) -> None:
        self.stop_server()
        self.log = []
        # Its own session: SIGINT to the group, as Ctrl-C in a terminal.
        proc = subprocess.Popen(["bash", "-c", command], cwd=self.root, env=self.env, text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self.server = proc
        ready = threading.Event()

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                self.log.append(line)
                if '"msg": "ready"' in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 180
        while not ready.wait(0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop_server()
                raise AssertionError(f"{command} did not become ready:\n" + "".join(self.log[-30:]))

    def stop_server(self) -> None:
        proc, self.server = self.server, None
        if proc is None:
            return
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert proc.returncode == 0, "server did not stop cleanly on Ctrl-C:\n" + "".join(self.log[-20:])

    def run(self, block: Block) -> str:
        if block.kind == "python":
            argv, stdin = [str(self.root / ".venv" / "bin" / "python"), "-"], block.text
        else:
            argv, stdin = ["bash", "-euo", "pipefail", "-c", block.text], None
        out = subprocess.run(argv, input=stdin, cwd=self.root, env=self.env, capture_output=True, text=True,
                             timeout=300)
        both = out.stdout + out.stderr
        assert out.returncode == 0, f"docs/getting-started.md line {block.line} failed:\n{block.text}\n---\n{both}"
        return both


def test_getting_started_walk_through(tmp_path: Path) -> None:
    why = postgres_available()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the walk-through (its step 6 needs PostgreSQL): {why}")
        pytest.skip(f"SKIPPING THE GETTING-STARTED WALK-THROUGH LOUDLY: {why}")
    kmip_port, metrics_port = free_port(), free_port()
    database = f"kmip_bridge_walk_{secrets.token_hex(4)}"
    text = (DOC.read_text().replace("5696", str(kmip_port)).replace("9696", str(metrics_port))
            .replace("kmip_bridge_demo", database))
    root = tmp_path / "clone"
    root.mkdir()
    for name in LINKED:
        if (REPO / name).exists():
            (root / name).symlink_to(REPO / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMIP_BRIDGE_")}
    subprocess.run([str(root / ".venv" / "bin" / "kmip-bridge"), "init", "--dir", "var/instance",
                    "--port", str(kmip_port)], cwd=root, env=env, check=True, capture_output=True, timeout=180)
    walk = Walk(root, env)
    output = ""
    ran = 0
    try:
        for block in blocks(text):
            if block.kind == "server":
                walk.start_server(block.text)
            elif block.kind in ("run", "python"):
                output = walk.run(block)
            elif block.kind == "output":
                for line in filter(None, block.text.splitlines()):
                    assert line in output, f"line {block.line}: {line!r} not in the output:\n{output}"
            ran += block.kind != "skip"
    finally:
        try:
            walk.stop_server()
        finally:
            admin = _pg_admin()
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{database}"')
            admin.close()
    assert ran >= 20
    # What the walk left behind: the appliance's certificate, a config pointing at PostgreSQL.
    assert (root / "var" / "instance" / "clients" / "vcenter" / "cert.pem").exists()
    assert database in (root / "var" / "instance" / "server.yaml").read_text()
