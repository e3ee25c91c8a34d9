#!/usr/bin/env bash
# Installs what kmip-bridge needs on a Debian machine, idempotently: the softhsm2 and opencryptoki
# packages (PKCS#11 tokens for development and tests) and the package in ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

# softhsm2: the development token. opencryptoki: a second PKCS#11 implementation (its software
# token and slot daemon pkcsslotd), on which the end-to-end tests also run (tests/e2e/tokens.py).
want_pkgs=()
if [ ! -e /usr/lib/softhsm/libsofthsm2.so ] || ! command -v softhsm2-util >/dev/null; then
    want_pkgs+=(softhsm2)
fi
if [ ! -e /usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so ] && [ ! -e /usr/lib/aarch64-linux-gnu/pkcs11/libopencryptoki.so ] \
    || ! command -v pkcsslotd >/dev/null; then
    want_pkgs+=(opencryptoki)
fi
if [ "${#want_pkgs[@]}" -gt 0 ]; then
    echo "bootstrap: installing ${want_pkgs[*]}" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${want_pkgs[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv" >&2
    "$PYTHON" -m venv .venv
fi
# Reinstall only when the package metadata changed.
stamp=.venv/.kmip-bridge-installed
want=$(sha256sum setup.cfg pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "bootstrap: installing kmip-bridge into .venv" >&2
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[test]'
    echo "$want" > "$stamp"
fi
