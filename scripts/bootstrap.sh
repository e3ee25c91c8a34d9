#!/usr/bin/env bash
# Installs what kmip-bridge needs on a Debian machine, idempotently:
# the softhsm2 package (PKCS#11 token for development) and the package in ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -e /usr/lib/softhsm/libsofthsm2.so ] || ! command -v softhsm2-util >/dev/null; then
    echo "bootstrap: installing softhsm2" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq softhsm2 >/dev/null
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
