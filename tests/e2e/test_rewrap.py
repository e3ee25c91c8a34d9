"""KEK rotation without loss: rotate, `keyhsm rewrap` online (and resumed after a kill), revoke.
Rewrap moves only the wrapped DEK of envelope-format-2 rows (the material ciphertext stays byte for
byte) and re-seals format-1 rows once. On SoftHSM2 (aes KEK) and on openCryptoki's soft token (rsa
KEK: it has no AES wrap mechanism)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from kmip.core import enums
from kmip.pie import objects
from kmip.pie.client import ProxyKmipClient

from kmip_bridge.store.store import normalise_url

from .conftest import CLI, Instance, Server, make_instance, run_cli
from .tokens import OPENCRYPTOKI, SOFTHSM2

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=[(SOFTHSM2, "aes"), (OPENCRYPTOKI, "rsa")], ids=lambda p: "-".join(p))
def token(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param


@pytest.fixture(scope="module")
def instance(backend: str, token: tuple[str, str], tmp_path_factory: pytest.TempPathFactory,
             request: pytest.FixtureRequest) -> Instance:
    url = request.getfixturevalue("pg_database")() if backend == "postgresql" else None
    implementation, kind = token
    return make_instance(tmp_path_factory.mktemp(f"rw-{backend}-{implementation}"), url, kind, token=implementation)


def _client(server: Server) -> ProxyKmipClient:
    c = ProxyKmipClient(config="admin", config_file=str(server.client_conf()))
    c.open()
    return c


def _listing(instance: Instance) -> dict[str, list[str]]:
    out = run_cli("keyhsm", "list", "--config", str(instance.config)).stdout.splitlines()
    return {line.split()[0]: line.split()[1:] for line in out}


def _current(instance: Instance) -> str:
    return max(_listing(instance), key=lambda label: int(label.rsplit("-v", 1)[1]))


ENVELOPE = ("kek_label", "envelope_format", "nonce", "ciphertext", "wrapped_dek")


def _plain(value: object) -> object:
    return bytes(value) if isinstance(value, memoryview) else value


def _envelopes(instance: Instance, uids: list[str]) -> dict[str, dict[str, object]]:
    """What the database holds for each object: KEK label, envelope format, nonce, ciphertext..."""
    engine = sa.create_engine(normalise_url(instance.database_url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(f"SELECT uid, {', '.join(ENVELOPE)} FROM objects WHERE uid IN :uids")
                .bindparams(sa.bindparam("uids", expanding=True)), {"uids": uids},
            )
            return {r.uid: {c: _plain(getattr(r, c)) for c in ENVELOPE} for r in rows}
    finally:
        engine.dispose()


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
        # Destroyed objects keep their KEK label but have nothing to rewrap: they must not hold
        # the rewrap (or the count that allows the revoke) back.
        destroyed = list(made)[:5]
        for uid in destroyed:
            c.destroy(uid)
            del made[uid]
        before = _envelopes(instance, list(made))
        assert {e["kek_label"] for e in before.values()} == {"default-v1"}
        assert {e["envelope_format"] for e in before.values()} == {2}
        assert "default-v2" in run_cli("keyhsm", "rotate", "--config", cfg).stdout
        with Traffic(server) as traffic:
            result = run_cli("keyhsm", "rewrap", "--batch", "25", "--config", cfg)
        assert not traffic.errors, traffic.errors[:5]
        assert len(traffic.made) > 0
        assert result.returncode == 0
        assert f"rewrapped {len(made)} objects" in result.stdout and "0 left" in result.stdout
        assert "re-sealed" not in result.stdout  # format 2: DEKs only
        assert re.search(r"rewrap: \d+/\d+ objects \(.*%\), \d+/s, .*ETA", result.stderr)
        listing = _listing(instance)
        assert listing["default-v1"][-1] == "0"
        # Only the wrapped DEK moved: material nonce and ciphertext are byte-for-byte the same.
        after = _envelopes(instance, list(made))
        for uid, old in before.items():
            new = after[uid]
            assert (new["kek_label"], new["envelope_format"]) == ("default-v2", 2)
            assert (new["nonce"], new["ciphertext"]) == (old["nonce"], old["ciphertext"])
            assert new["wrapped_dek"] != old["wrapped_dek"]
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
        current = _current(instance)
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


def test_format_1_rows_still_open_and_rewrap_converts_them_once(server: Server, instance: Instance) -> None:
    """Rows written before envelope format 2 (material bound to the KEK) keep opening; rewrap
    re-seals them into format 2, after which the old KEK version can go."""
    cfg = str(instance.config)
    c = _client(server)
    try:
        made = _make_objects(c, 12, "c")
        old_label = _current(instance)
        # Turn them into format-1 rows, as the previous release wrote them (same material), in a
        # process of its own (tests/legacy_envelope.make_format_1 says why).
        done = subprocess.run(
            [sys.executable, "-m", "tests.legacy_envelope", cfg, instance.database_url, *made],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        before = _envelopes(instance, list(made))
        assert {e["envelope_format"] for e in before.values()} == {1}
        for uid, value in made.items():  # old rows open as they are
            assert c.get(uid).value == value

        run_cli("keyhsm", "rotate", "--config", cfg)
        result = run_cli("keyhsm", "rewrap", "--config", cfg)
        # Earlier tests' objects move too (DEK only); exactly these twelve are re-sealed.
        assert f"({len(made)} of envelope format 1 re-sealed)" in result.stdout
        after = _envelopes(instance, list(made))
        for uid, old in before.items():
            assert after[uid]["envelope_format"] == 2 and after[uid]["kek_label"] != old_label
            assert after[uid]["ciphertext"] != old["ciphertext"]  # re-sealed, once
        run_cli("keyhsm", "revoke", old_label, "--config", cfg)
        for uid, value in made.items():
            assert c.get(uid).value == value
    finally:
        c.close()
    assert server.alive()
