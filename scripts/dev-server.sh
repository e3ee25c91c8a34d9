#!/usr/bin/env bash
# README command (a): set up everything and run the server on the embedded default
# (SQLite + SoftHSM2 token + self-made dev PKI) on 127.0.0.1:5696. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
INSTANCE=${KMIP_BRIDGE_INSTANCE:-var/instance}
.venv/bin/kmip-bridge init --dir "$INSTANCE"
exec .venv/bin/kmip-bridge serve --config "$INSTANCE/server.yaml" "$@"
