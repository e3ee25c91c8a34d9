#!/usr/bin/env bash
# README command (b): install what is missing, make sure PostgreSQL runs, lint, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

# The end-to-end suite also runs against PostgreSQL on 127.0.0.1:5432; start the local
# cluster if one is installed but down.
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    if command -v pg_ctlcluster >/dev/null; then
        for v in $(ls /etc/postgresql 2>/dev/null); do
            pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
        done
        for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    fi
fi

.venv/bin/ruff check kmip_bridge tools tests scripts
.venv/bin/python -m pytest "$@"

# Again with the Key HSM as its own service (keyhsm.mode: socket, 'kmip-bridge keyhsm serve'):
# the envelope and core end-to-end modules. Exit 5 means the arguments selected none of them.
rc=0
KMIP_BRIDGE_TEST_KEYHSM_MODE=socket .venv/bin/python -m pytest \
    tests/e2e/test_envelope.py tests/e2e/test_core.py "$@" || rc=$?
if [ "$rc" -ne 5 ]; then exit "$rc"; fi
