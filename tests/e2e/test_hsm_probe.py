"""Mechanism discovery end to end, on both PKCS#11 implementations: 'keyhsm probe' says what each
token offers and what kmip-bridge uses; a KEK kind or a forced mechanism the token cannot do stops
'init' and 'serve' with one line naming what is missing."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from kmip_bridge.admin.instance import _default_config

from .conftest import CLI, free_port, make_instance, run_cli
from .tokens import OPENCRYPTOKI, SOFTHSM2, opencryptoki_token

pytestmark = pytest.mark.e2e

EXPECTED = {
    # implementation: (lines probe must print, lines it must not)
    SOFTHSM2: (["uses     aes KEKs: aes-gcm (CKM_AES_GCM", "uses     rsa KEKs: rsa-oaep-sha1 (",
                "rsa      rsa-oaep-sha256: refused by the token (ArgumentsBad)", "aes      aes-wrap-pad: ok",
                "aes      aes-wrap-kwp: AES_KEY_WRAP_KWP not offered", "kek      default-v1 (rsa): rsa-oaep-sha1"],
               []),
    OPENCRYPTOKI: (["uses     rsa KEKs: rsa-oaep-sha256 (", "rsa      rsa-oaep-sha1: ok",
                    "aes      aes-gcm: AES_GCM not offered", "aes      aes-wrap: AES_KEY_WRAP not offered",
                    "uses     aes KEKs: none: kmip-bridge refuses to start with such a KEK",
                    "kek      default-v1 (rsa): rsa-oaep-sha256", "library  Meta PKCS11 LIBRARY"],
                   ["aes-gcm: ok"]),
}


@pytest.mark.parametrize("implementation", [SOFTHSM2, OPENCRYPTOKI])
def test_probe_prints_what_each_token_offers_and_what_is_used(
    implementation: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    inst = make_instance(tmp_path_factory.mktemp(f"probe-{implementation}"), None, "rsa", token=implementation)
    result = run_cli("keyhsm", "probe", "--config", str(inst.config))
    print(result.stdout)  # the report quotes it (pytest -s)
    lines = result.stdout.splitlines()
    must, must_not = EXPECTED[implementation]
    for want in must:
        assert any(line.startswith(want) for line in lines), f"missing {want!r} in:\n{result.stdout}"
    for unwanted in must_not:
        assert unwanted not in result.stdout


def _ock_config(folder: Path, kek_kind: str) -> Path:
    cfg = _default_config(free_port(), None, kek_kind)
    cfg["keyhsm"].update(opencryptoki_token(folder / "token", "kb-refuse"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "server.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "server.yaml"


def test_an_aes_kek_on_a_token_without_aes_wrapping_is_refused(tmp_path: Path) -> None:
    config = _ock_config(tmp_path / "inst", "aes")
    init = run_cli("init", "--dir", str(config.parent), check=False)
    assert init.returncode != 0
    assert "no wrap mechanism for aes KEKs" in init.stderr and "AES_GCM not offered" in init.stderr
    probe = run_cli("keyhsm", "probe", "--config", str(config), check=False)
    assert probe.returncode == 1
    assert "keyhsm.kek_kind aes: the token has no usable wrap mechanism" in probe.stderr
    # control: the same token with an rsa KEK
    cfg = yaml.safe_load(config.read_text())
    cfg["keyhsm"]["kek_kind"] = "rsa"
    config.write_text(yaml.safe_dump(cfg))
    run_cli("init", "--dir", str(config.parent))
    assert run_cli("keyhsm", "probe", "--config", str(config)).returncode == 0


def test_serve_refuses_to_start_when_the_kek_has_no_usable_mechanism(tmp_path_factory: pytest.TempPathFactory) -> None:
    inst = make_instance(tmp_path_factory.mktemp("refuse"), None, "aes")
    cfg = yaml.safe_load(inst.config.read_text())
    cfg["keyhsm"]["wrap_mechanisms"] = ["aes-wrap-kwp"]  # SoftHSM2 2.6 does not have it
    inst.config.write_text(yaml.safe_dump(cfg))
    done = subprocess.run([*CLI, "serve", "--config", str(inst.config)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    want = "no usable wrap mechanism for aes KEK 'default-v1' (aes-wrap-kwp: AES_KEY_WRAP_KWP not offered)"
    assert want in done.stderr
    # control: with a mechanism it has, the same instance starts and serves
    cfg["keyhsm"]["wrap_mechanisms"] = ["aes-wrap-kwp", "aes-wrap-pad"]
    inst.config.write_text(yaml.safe_dump(cfg))
    server = inst.start()
    try:
        assert server.alive()
    finally:
        assert server.stop() == 0
