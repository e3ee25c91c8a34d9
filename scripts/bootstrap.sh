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

# promtool (Prometheus' rule checker) for the test of conf/prometheus-rules.yaml: extracted from
# Debian's prometheus package into the git-ignored .cache/ (no service installed). Optional.
if [ ! -x .cache/promtool/promtool ] && ! command -v promtool >/dev/null && command -v apt-get >/dev/null; then
    echo "bootstrap: fetching promtool (Debian package prometheus, binary only)" >&2
    tmp=$(mktemp -d)
    if (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1 \
        && dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool); then
        mkdir -p .cache/promtool && mv "$tmp/usr/bin/promtool" .cache/promtool/promtool
    else
        echo "bootstrap: promtool unavailable; the rules test then checks structure only" >&2
    fi
    rm -rf "$tmp"
fi
