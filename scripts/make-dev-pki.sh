#!/usr/bin/env bash
# Writes a dev CA, a server certificate and an admin client certificate into OUT (default
# certs/dev). For development only; the files hold private keys and are git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-certs/dev}
mkdir -p "$OUT"
.venv/bin/python - "$OUT" <<'PY'
import sys
from pathlib import Path
from kmip_bridge.admin import pki
out = Path(sys.argv[1])
if not (out / "ca.pem").exists():
    pki.make_ca(out / "ca.pem", out / "ca.key")
pki.issue(out / "ca.pem", out / "ca.key", out / "server.pem", out / "server.key", "kmip-bridge server",
          server=True, hosts=("localhost", "127.0.0.1", "::1"))
pki.issue(out / "ca.pem", out / "ca.key", out / "admin.pem", out / "admin.key", "admin",
          server=False, groups=("admin",))
print(out)
PY
