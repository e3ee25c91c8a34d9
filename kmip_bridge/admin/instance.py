"""``kmip-bridge init``: a self-contained instance in one folder, made idempotently.

DIR/server.yaml, DIR/pki (dev CA + server cert), DIR/token (a SoftHSM2 token private to DIR, its
PINs in 0600 files), the KEK on that token, the migrated database and an ``admin`` client.
Every step first checks whether its result exists, so running init again changes nothing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ..config import DEFAULT_MODULE, Settings, load
from . import pki

TOKEN_LABEL = "kmip-bridge"


class InitError(RuntimeError):
    pass


def _secret_file(path: Path, nbytes: int = 16) -> None:
    if path.exists():
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(nbytes) + "\n")


def _default_config(port: int, database_url: str | None, kek_kind: str) -> dict:
    return {
        "server": {"host": "127.0.0.1", "port": port, "workers": 0},
        "tls": {"ca": "pki/ca.pem", "cert": "pki/server.pem", "key": "pki/server.key"},
        "keyhsm": {
            "module": DEFAULT_MODULE,
            "softhsm2_conf": "token/softhsm2.conf",
            "token_label": TOKEN_LABEL,
            "pin_file": "token/user.pin",
            "kek": "default",
            "kek_kind": kek_kind,
        },
        "database": {"url": database_url or "sqlite:///kmip-bridge.db"},
        "policy": {"admin_group": "admin", "directory": "policies"},
        "logging": {"level": "INFO", "format": "json"},
    }


def _init_token(token_dir: Path) -> Path:
    conf = token_dir / "softhsm2.conf"
    tokens = token_dir / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    os.chmod(token_dir, 0o700)
    if not conf.exists():
        conf.write_text(
            f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
        )
    _secret_file(token_dir / "user.pin")
    _secret_file(token_dir / "so.pin")
    if not any(tokens.iterdir()):
        tool = shutil.which("softhsm2-util")
        if tool is None:
            raise InitError("softhsm2-util not found: install the Debian package softhsm2")
        env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
        result = subprocess.run(
            [
                tool, "--init-token", "--free", "--label", TOKEN_LABEL,
                "--so-pin", (token_dir / "so.pin").read_text().strip(),
                "--pin", (token_dir / "user.pin").read_text().strip(),
            ],
            env=env, capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise InitError(f"softhsm2-util --init-token failed: {result.stderr.strip()}")
    return conf


SHIPPED_POLICIES = Path(__file__).resolve().parents[2] / "policies"  # the repository's policies/


def _copy_policies(target: Path) -> None:
    """The shipped policies/ (or the built-in default when installed without them)."""
    if target.exists():
        return
    target.mkdir(parents=True)
    shipped = sorted(SHIPPED_POLICIES.glob("*.yaml")) if SHIPPED_POLICIES.is_dir() else []
    for src in shipped:
        shutil.copyfile(src, target / src.name)
    if not shipped:
        (target / "default.yaml").write_text(
            "policy: default\nrules:\n  - groups: ['*']\n    operations: ['*']\n    scope: owner\n"
        )


def ensure_client(settings: Settings, name: str, groups: tuple[str, ...] = ()) -> Path:
    """Issues NAME's certificate from the dev CA and writes clients/NAME/pykmip.conf. When NAME
    already has a certificate with other groups, it is re-issued with the groups given, and the
    previous one is added to the dev CA's CRL (it would otherwise keep its old groups).
    Raises pki.CertNameError for a name or group that cannot be a subject."""
    pki.check_client_name(name)
    for g in groups:
        pki.check_group(g)
    folder = settings.instance_dir / "clients" / name
    cert, key = folder / "cert.pem", folder / "key.pem"
    ca_key = settings.tls.ca.with_suffix(".key")
    wanted = tuple(sorted(set(groups)))
    if not cert.exists() or pki.client_groups(cert) != wanted:
        if not ca_key.exists():
            raise InitError(f"no dev CA key at {ca_key}: client certificates come from your own CA")
        if cert.exists():
            old = pki.client_groups(cert)
            crl = crl_path(settings)
            pki.revoke(settings.tls.ca, ca_key, cert, crl)
            print(
                f"re-issued {name}'s certificate with groups [{', '.join(wanted)}] (was [{', '.join(old)}]); "
                f"the previous certificate is revoked in {crl}: send the server SIGHUP"
                + ("" if settings.tls.crl else f" after setting tls.crl: {crl}"),
                file=sys.stderr,
            )
        pki.issue(settings.tls.ca, ca_key, cert, key, name, server=False, groups=wanted)
    conf = folder / "pykmip.conf"
    host = settings.server.host if settings.server.host not in ("0.0.0.0", "::") else "127.0.0.1"
    conf.write_text(
        f"[{name}]\n"
        f"host={host}\n"
        f"port={settings.server.port}\n"
        f"certfile={cert}\n"
        f"keyfile={key}\n"
        f"ca_certs={settings.tls.ca}\n"
        "cert_reqs=CERT_REQUIRED\n"
        "ssl_version=PROTOCOL_SSLv23\n"
        "do_handshake_on_connect=True\n"
        "suppress_ragged_eofs=True\n"
    )
    return conf


def crl_path(settings: Settings) -> Path:
    """The dev CA's CRL: ``tls.crl`` when set, else pki/crl.pem next to the CA."""
    return settings.tls.crl or settings.tls.ca.parent / "crl.pem"


def revoke_client(settings: Settings, name: str) -> Path:
    """Adds NAME's certificate (clients/NAME/cert.pem) to the dev CA's CRL; returns the CRL path."""
    pki.check_client_name(name)
    cert = settings.instance_dir / "clients" / name / "cert.pem"
    if not cert.is_file():
        raise InitError(f"no client certificate for '{name}' (no {cert})")
    crl = crl_path(settings)
    pki.revoke(settings.tls.ca, settings.tls.ca.with_suffix(".key"), cert, crl)
    return crl


def init_instance(
    directory: Path,
    port: int = 5696,
    database_url: str | None = None,
    kek_kind: str = "aes",
) -> Settings:
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    config_path = directory / "server.yaml"
    if not config_path.exists():
        config_path.write_text(
            "# kmip-bridge instance made by 'kmip-bridge init'; paths are relative to this file.\n"
            + yaml.safe_dump(_default_config(port, database_url, kek_kind), sort_keys=False)
        )
    settings = load(config_path)

    pki_dir = settings.tls.ca.parent
    ca_key = settings.tls.ca.with_suffix(".key")
    if not settings.tls.ca.exists():
        pki.make_ca(settings.tls.ca, ca_key)
    if not settings.tls.cert.exists():
        pki.issue(
            settings.tls.ca, ca_key, settings.tls.cert, settings.tls.key, "kmip-bridge server",
            server=True, hosts=("localhost", "127.0.0.1", "::1"),
        )
    os.chmod(pki_dir, 0o700)

    if settings.policy.directory is not None:
        _copy_policies(settings.policy.directory)

    if settings.keyhsm.softhsm2_conf is not None:
        _init_token(settings.keyhsm.softhsm2_conf.parent)

    from ..store import Store
    from ..store.migrate import upgrade

    store = Store(settings.database.url, pool_size=1)
    try:
        upgrade(store.engine)
    finally:
        store.close()

    from ..app import open_keyhsm
    from ..keyhsm import KekNotFound

    hsm = open_keyhsm(settings)
    try:
        try:
            hsm.current_kek()
        except KekNotFound:
            hsm.create_kek(settings.keyhsm.kek, settings.keyhsm.kek_kind)
    finally:
        hsm.close()

    ensure_client(settings, "admin", groups=("admin",))
    return settings
