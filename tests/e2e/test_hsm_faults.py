"""Key HSM faults: an absent token, a dead session, an unusable token at start-up. Each is a clear
KMIP error (never "irretrievable"), and the server recovers without a restart once the token is
back."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kmip.core import enums
from kmip.pie import objects
from kmip.pie.client import ProxyKmipClient
from kmip.pie.exceptions import KmipOperationFailure

from kmip_bridge.app import open_keyhsm
from kmip_bridge.config import load

from .conftest import CLI, Instance, Server, eventually, free_port, make_instance


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Instance:
    return make_instance(tmp_path_factory.mktemp("hsm-faults"), None)


@pytest.fixture(scope="module")
def server(instance: Instance) -> Iterator[Server]:
    srv = instance.start()
    yield srv
    assert srv.stop() == 0, "".join(srv.log[-20:])


def _client(server: Server) -> ProxyKmipClient:
    c = ProxyKmipClient(config="admin", config_file=str(server.client_conf()))
    c.open()
    return c




def test_absent_token_is_a_clear_error_and_the_server_recovers(server: Server, instance: Instance) -> None:
    tokens = instance.dir / "token" / "tokens"
    c = _client(server)
    try:
        uid = c.create(enums.CryptographicAlgorithm.AES, 256)
        secret = c.register(objects.SecretData(b"kept across an outage", enums.SecretDataType.PASSWORD))
        value = c.get(uid).value
        os.rename(tokens, tokens.with_name("tokens.away"))
        try:
            for call in (lambda: c.get(uid), lambda: c.create(enums.CryptographicAlgorithm.AES, 128)):
                with pytest.raises(KmipOperationFailure) as err:
                    call()
                assert err.value.status == enums.ResultStatus.OPERATION_FAILED
                assert err.value.reason == enums.ResultReason.GENERAL_FAILURE
                assert "key HSM unavailable" in err.value.message
                assert "not present" in err.value.message
                # An absent token must never be reported as a revoked KEK.
                assert "revoked" not in err.value.message and "irretrievable" not in err.value.message
        finally:
            os.rename(tokens.with_name("tokens.away"), tokens)
        assert eventually(lambda: c.get(uid).value) == value
        assert eventually(lambda: c.get(secret).value) == b"kept across an outage"
        fresh = eventually(lambda: c.create(enums.CryptographicAlgorithm.AES, 128))
        assert len(c.get(fresh).value) == 16
    finally:
        c.close()
    # every worker is back: fresh connections (spread over the workers) all succeed
    for _ in range(6):
        other = _client(server)
        try:
            assert eventually(lambda: other.get(uid).value) == value  # noqa: B023 - called at once
        finally:
            other.close()
    assert server.alive()
    assert server.saw("is back; logged in again")


def test_a_dead_pooled_session_is_replaced(instance: Instance) -> None:
    settings = load(instance.config)
    with open_keyhsm(settings) as hsm:
        sealed = hsm.seal("obj-1", b"material", "ctx")
        assert hsm.open("obj-1", sealed, "ctx") == b"material"
        # Kill the idle pooled session behind the pool's back (as a token reset would).
        idle = list(hsm._token._idle.queue)
        assert idle
        for ps in idle:
            ps.session.close()
        assert hsm.open("obj-1", sealed, "ctx") == b"material"
        assert hsm.open("obj-1", hsm.seal("obj-1", b"again", "ctx"), "ctx") == b"again"


def _serve_once(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "serve", "--config", str(config)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"token_label": "no-such-token"}, "no token 'no-such-token'"),
        ({"module": "/usr/lib/softhsm/nothing.so"}, "PKCS#11 module /usr/lib/softhsm/nothing.so does not exist"),
        ({"kek": "missing"}, "no version of KEK 'missing' exists on the token"),
        # A tenant KEK is checked like the default one (issue 12): not first at the tenant's Create.
        ({"tenants": {"blue": "missing-tenant"}},
         "keyhsm.tenants.blue: no version of KEK 'missing-tenant' exists on the token"),
    ],
)
def test_serve_refuses_an_unusable_token_precisely(
    tmp_path: Path, instance: Instance, change: dict[str, str], expected: str
) -> None:
    cfg = yaml.safe_load(instance.config.read_text())
    cfg["keyhsm"].update(change)
    # absolute paths, so the copy in tmp_path uses the instance's files
    for section, keys in {"tls": ("ca", "cert", "key"), "keyhsm": ("softhsm2_conf", "pin_file")}.items():
        for key in keys:
            cfg[section][key] = str(instance.dir / cfg[section][key])
    cfg["database"]["url"] = instance.database_url
    cfg["server"]["port"] = free_port()  # the module's server holds the instance's port
    cfg["policy"]["directory"] = str(instance.dir / "policies")
    config = tmp_path / "server.yaml"
    config.write_text(yaml.safe_dump(cfg))
    result = _serve_once(config)
    assert result.returncode == 1
    assert "server cannot start" in result.stderr
    assert expected in result.stderr
