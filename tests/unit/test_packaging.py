"""The systemd units in conf/: valid for systemd (systemd-analyze verify, when it is installed) and
hardened as docs/operations.md says."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = ("kmip-bridge.service", "kmip-bridge-keyhsm.service")
INSTALLED = "/opt/kmip-bridge/venv/bin/kmip-bridge"


def _service(unit: str) -> dict[str, list[str]]:
    """[Service] of a unit: each key with all its values (systemd keys may repeat)."""
    out: dict[str, list[str]] = {}
    section = None
    for line in (REPO / "conf" / unit).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_hardened(unit: str) -> None:
    s = _service(unit)
    assert s["User"] == ["kmip-bridge"]
    for key, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
        "CapabilityBoundingSet": "", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }.items():
        assert s[key] == [value], key
    assert "@system-service" in s["SystemCallFilter"]
    assert s["ReadWritePaths"] and s["LimitNOFILE"]
    assert s["ExecStart"][0].startswith(INSTALLED + " ")


def test_server_unit_reloads_with_sighup_and_drains_on_stop() -> None:
    s = _service("kmip-bridge.service")
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["KillSignal"] == ["SIGTERM"]
    assert s["ExecStart"] == [INSTALLED + " serve --config /etc/kmip-bridge/server.yaml"]
    assert _service("kmip-bridge-keyhsm.service")["ExecStart"] == [
        INSTALLED + " keyhsm serve --config /etc/kmip-bridge/server.yaml"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_has_nothing_to_say(tmp_path: Path) -> None:
    """Unknown keys, bad values and a missing executable are all reported by verify; the units are
    copied with ExecStart pointing at this checkout's installed command so that it exists."""
    here = Path(sys.executable).parent / "kmip-bridge"
    assert here.exists(), "pip install -e . first"
    copies = []
    for unit in UNITS:
        copy = tmp_path / unit
        copy.write_text((REPO / "conf" / unit).read_text().replace(INSTALLED, str(here)))
        copies.append(str(copy))
    result = subprocess.run(["systemd-analyze", "verify", *copies], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr
