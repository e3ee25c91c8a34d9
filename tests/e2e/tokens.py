"""PKCS#11 implementations the end-to-end tests run on: SoftHSM2 (each instance makes its own
token folder) and openCryptoki's software token (one per machine: the slot daemon pkcsslotd serves
it, and each instance re-initialises it). What differs between them is handled in keyhsm/; the
tests only say which one to use."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

SOFTHSM2 = "softhsm2"
OPENCRYPTOKI = "opencryptoki"
IMPLEMENTATIONS = (SOFTHSM2, OPENCRYPTOKI)

OCK_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so"
OCK_SLOT = "3"  # the software token (libpkcs11_sw.so) in Debian's /etc/opencryptoki/opencryptoki.conf
# openCryptoki's factory SO PIN; test tokens never change it (the soft token refuses to set it again).
OCK_SO_PIN = "87654321"
OCK_PIN_LENGTH = 8  # its soft token takes PINs of 4-8 characters


def require(implementation: str) -> None:
    """Skips loudly when the implementation is missing here; under CI=true, fails."""
    why = None
    if implementation == OPENCRYPTOKI:
        if not os.path.exists(OCK_MODULE) or shutil.which("pkcsconf") is None or shutil.which("pkcsslotd") is None:
            why = "openCryptoki is not installed (scripts/bootstrap.sh installs the Debian package opencryptoki)"
        elif os.geteuid() != 0:
            why = "openCryptoki's slot daemon and token files need root (or the pkcs11 group) here"
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the {implementation} tests: {why}")
    pytest.skip(f"SKIPPING {implementation.upper()} TESTS LOUDLY: {why}")


def _slotd_running() -> bool:
    """By its pid file (procps may be missing on a minimal machine)."""
    try:
        pid = int(Path("/run/pkcsslotd.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return Path(f"/proc/{pid}/comm").read_text().strip() == "pkcsslotd"


def _pkcsconf(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pkcsconf", "-c", OCK_SLOT, *args], input=stdin, capture_output=True, text=True,
                          timeout=60, check=False)


def opencryptoki_token(folder: Path, label: str) -> dict[str, Any]:
    """A freshly initialised openCryptoki soft token (every object of an earlier test gone) and the
    keyhsm settings naming it. Starts pkcsslotd if it does not run (it daemonises and stays)."""
    require(OPENCRYPTOKI)
    if not _slotd_running():
        for d in ("/var/lock/opencryptoki", "/var/log/opencryptoki"):
            os.makedirs(d, exist_ok=True)
        subprocess.run(["pkcsslotd"], check=True, timeout=60)
        for _ in range(50):
            if _pkcsconf("-t").returncode == 0:
                break
            time.sleep(0.1)
    init = _pkcsconf("-I", "-S", OCK_SO_PIN, stdin=f"{label}\n")
    assert init.returncode == 0, f"pkcsconf -I failed: {init.stdout}{init.stderr}"
    pin = os.urandom(OCK_PIN_LENGTH // 2).hex()
    user = _pkcsconf("-u", "-S", OCK_SO_PIN, "-n", pin)
    assert user.returncode == 0, f"pkcsconf -u failed: {user.stdout}{user.stderr}"
    folder.mkdir(parents=True, exist_ok=True)
    pin_file = folder / "user.pin"
    fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pin + "\n")
    return {"module": OCK_MODULE, "token_label": label, "pin_file": str(pin_file), "softhsm2_conf": None}
