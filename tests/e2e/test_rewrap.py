"""KEK rotation without loss: rotate, `keyhsm rewrap` online (and resumed after a kill), revoke."""

from __future__ import annotations

import re
import signal
import subprocess
import threading

import pytest
from kmip.core import enums
from kmip.pie import objects
from kmip.pie.client import ProxyKmipClient

from .conftest import CLI, Instance, Server, run_cli

pytestmark = pytest.mark.e2e


def _client(server: Server) -> ProxyKmipClient:
    c = ProxyKmipClient(config="admin", config_file=str(server.client_conf()))
    c.open()
    return c


def _listing(instance: Instance) -> dict[str, list[str]]:
    out = run_cli("keyhsm", "list", "--config", str(instance.config)).stdout.splitlines()
    return {line.split()[0]: line.split()[1:] for line in out}


def _make_objects(c: ProxyKmipClient, n: int, tag: str) -> dict[str, bytes]:
    made: dict[str, bytes] = {}
    for i in range(n):
        if i % 3 == 2:
            uid = c.register(objects.SecretData(f"{tag}-{i}".encode(), enums.SecretDataType.PASSWORD))
        else:
            uid = c.create(enums.CryptographicAlgorithm.AES, 256)
        made[uid] = c.get(uid).value
    return made


class Traffic:
    """A client thread creating and reading objects for as long as the rewrap runs."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.stop = threading.Event()
        self.made: dict[str, bytes] = {}
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        c = _client(self.server)
        try:
            while not self.stop.is_set():
                try:
                    uid = c.create(enums.CryptographicAlgorithm.AES, 128)
                    self.made[uid] = c.get(uid).value
                    for old in list(self.made)[-5:]:
                        if c.get(old).value != self.made[old]:
                            self.errors.append(f"{old}: material changed")
                except Exception as exc:  # noqa: BLE001
                    self.errors.append(repr(exc))
        finally:
            c.close()

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def test_rotate_rewrap_online_then_revoke_loses_nothing(server: Server, instance: Instance) -> None:
    cfg = str(instance.config)
    c = _client(server)
    try:
        made = _make_objects(c, 300, "a")
        assert "default-v2" in run_cli("keyhsm", "rotate", "--config", cfg).stdout
        with Traffic(server) as traffic:
            result = run_cli("keyhsm", "rewrap", "--batch", "25", "--config", cfg)
        assert not traffic.errors, traffic.errors[:5]
        assert len(traffic.made) > 0
        assert "rewrapped" in result.stdout and "0 left" in result.stdout
        assert re.search(r"rewrap: \d+/\d+ objects \(.*%\), \d+/s, .*ETA", result.stderr)
        listing = _listing(instance)
        assert listing["default-v1"][-1] == "0"
        run_cli("keyhsm", "revoke", "default-v1", "--config", cfg)
        for uid, value in {**made, **traffic.made}.items():
            assert c.get(uid).value == value
        # Nothing left to do: a second run is a no-op.
        assert "rewrapped 0 objects" in run_cli("keyhsm", "rewrap", "--config", cfg).stdout
    finally:
        c.close()
    assert server.alive()


def test_rewrap_killed_halfway_resumes(server: Server, instance: Instance) -> None:
    cfg = str(instance.config)
    c = _client(server)
    try:
        made = _make_objects(c, 200, "b")
        current = max(_listing(instance), key=lambda label: int(label.rsplit("-v", 1)[1]))
        run_cli("keyhsm", "rotate", "--config", cfg)
        before = int(_listing(instance)[current][-1])
        assert before >= 200
        proc = subprocess.Popen([*CLI, "keyhsm", "rewrap", "--batch", "10", "--pause", "0.1", "--config", cfg],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            m = re.match(r"rewrap: (\d+)/", line)
            if m and int(m[1]) >= 50:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        half = int(_listing(instance)[current][-1])
        assert 0 < half < before
        result = run_cli("keyhsm", "rewrap", "--config", cfg)
        assert f"rewrapped {half} objects" in result.stdout
        assert _listing(instance)[current][-1] == "0"
        run_cli("keyhsm", "revoke", current, "--config", cfg)
        for uid, value in made.items():
            assert c.get(uid).value == value
    finally:
        c.close()
    assert server.alive()
