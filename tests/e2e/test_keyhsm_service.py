"""keyhsm.mode socket end to end: the server's workers reach the token only through
'kmip-bridge keyhsm serve' — they load no PKCS#11 module and have no PIN anywhere — and survive
the service restarting; without the service the server refuses to start. Also: a PIN written in
the YAML draws a startup warning that does not contain it."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kmip.core import enums
from kmip.pie.client import ProxyKmipClient
from kmip.pie.exceptions import KmipOperationFailure

from .conftest import Instance, Server, _terminate, make_instance, run_cli, start_keyhsm_service

pytestmark = pytest.mark.e2e


class Service:
    """'keyhsm serve' with the PIN in its environment only (the config names no PIN at all)."""

    def __init__(self, instance: Instance, pin: str) -> None:
        self.instance = instance
        self.pin = pin
        self.log: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = {**os.environ, "KMIP_BRIDGE_TOKEN_PIN": self.pin}
        self.proc = start_keyhsm_service(self.instance.config, self.log, env=env)
        assert self.proc is not None

    def stop(self) -> int:
        assert self.proc is not None
        return _terminate(self.proc)


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Instance:
    inst = make_instance(tmp_path_factory.mktemp("ksock"), None, keyhsm_mode="socket")
    cfg = yaml.safe_load(inst.config.read_text())
    del cfg["keyhsm"]["pin_file"]  # the server (and this config) never hold the PIN
    inst.config.write_text(yaml.safe_dump(cfg))
    return inst


@pytest.fixture(scope="module")
def pin(instance: Instance) -> str:
    return (instance.dir / "token" / "user.pin").read_text().strip()


@pytest.fixture(scope="module")
def service(instance: Instance, pin: str) -> Iterator[Service]:
    svc = Service(instance, pin)
    svc.start()
    yield svc
    assert svc.stop() == 0, "".join(svc.log[-20:])


@pytest.fixture(scope="module")
def server(instance: Instance, service: Service) -> Iterator[Server]:
    srv = instance.start()  # finds the service listening and leaves it alone
    assert srv.keyhsm is None
    yield srv
    assert srv.stop() == 0, "".join(srv.log[-20:])


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[ProxyKmipClient]:
    c = ProxyKmipClient(config="admin", config_file=str(server.client_conf()))
    c.open()
    yield c
    c.close()


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def _maps_softhsm(pid: int) -> bool:
    return "softhsm" in Path(f"/proc/{pid}/maps").read_text()


def test_workers_never_load_the_token_module_nor_see_a_pin(
    client: ProxyKmipClient, server: Server, service: Service, instance: Instance, pin: str
) -> None:
    uid = client.create(enums.CryptographicAlgorithm.AES, 256)
    assert len(client.get(uid).value) == 32
    if "KMIP_BRIDGE_TOKEN_PIN" in os.environ:
        pytest.skip("KMIP_BRIDGE_TOKEN_PIN is set for the whole test run")
    workers = server.worker_pids()
    assert len(workers) == 2
    writer = server.writer_pids()  # the database writer (database.writer: process) too
    assert len(writer) == 1 and writer[0] in _children(server.proc.pid)
    for pid in [server.proc.pid, *workers, *writer]:
        assert not _maps_softhsm(pid), f"process {pid} of the KMIP server loaded the PKCS#11 module"
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"KMIP_BRIDGE_TOKEN_PIN" not in environ
        assert pin.encode() not in environ
    assert service.proc is not None and _maps_softhsm(service.proc.pid)
    assert pin not in instance.config.read_text()
    sock = instance.dir / "keyhsm.sock"
    mode = sock.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600 and sock.stat().st_uid == os.getuid()


def test_kek_commands_go_through_the_service(client: ProxyKmipClient, instance: Instance) -> None:
    # No PIN in the config nor in this CLI's environment: only the service can answer.
    if "KMIP_BRIDGE_TOKEN_PIN" in os.environ:
        pytest.skip("KMIP_BRIDGE_TOKEN_PIN is set for the whole test run")
    lines = run_cli("keyhsm", "list", "--config", str(instance.config)).stdout.splitlines()
    assert lines and lines[0].startswith("default-v1 aes current")


def test_the_server_survives_a_service_restart(client: ProxyKmipClient, server: Server, service: Service) -> None:
    uid = client.create(enums.CryptographicAlgorithm.AES, 128)
    value = client.get(uid).value
    assert service.stop() == 0
    with pytest.raises(KmipOperationFailure) as err:
        client.get(uid)
    assert err.value.reason == enums.ResultReason.GENERAL_FAILURE
    assert "key HSM unavailable" in err.value.message and "not reachable" in err.value.message
    assert server.alive()
    service.start()
    for _ in range(6):  # whichever worker answers, its pooled connections predate the restart
        assert client.get(uid).value == value
    assert client.get(client.create(enums.CryptographicAlgorithm.AES, 128)).value


def test_serve_refuses_to_start_without_the_service(tmp_path: Path) -> None:
    inst = make_instance(tmp_path / "i", None, keyhsm_mode="socket")
    result = run_cli("serve", "--config", str(inst.config), check=False)
    assert result.returncode == 1
    assert "key HSM service" in result.stderr and "not reachable" in result.stderr
    assert "kmip-bridge keyhsm serve" in result.stderr


def test_a_pin_in_the_yaml_draws_a_warning(tmp_path: Path) -> None:
    inst = make_instance(tmp_path / "i", None, keyhsm_mode="inprocess")
    pin = (inst.dir / "token" / "user.pin").read_text().strip()
    cfg = yaml.safe_load(inst.config.read_text())
    del cfg["keyhsm"]["pin_file"]
    cfg["keyhsm"]["pin"] = pin
    inst.config.write_text(yaml.safe_dump(cfg))
    server = inst.start()
    try:
        assert server.saw("keyhsm.pin: the token PIN is written in the config file")
        assert not any(pin in line for line in server.log)
    finally:
        assert server.stop() == 0
