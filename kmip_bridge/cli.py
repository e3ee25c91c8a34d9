"""Command line: kmip-bridge init | serve | certs | keyhsm | db | audit."""

from __future__ import annotations

import argparse
import ssl
import sys
from collections.abc import Callable
from pathlib import Path

from . import __version__, logs
from .config import KEK_KIND_NAMES, ConfigError, Settings, config_warnings, load


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="server.yaml (default: $KMIP_BRIDGE_CONFIG)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kmip-bridge", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kmip-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("conformance", help="replay OASIS KMIP test vectors against a server (--help for options)")
    sub.add_parser("bench", help="benchmark against a server, or side by side with stock PyKMIP (--help)")

    p = sub.add_parser("init", help="create (or complete) a self-contained instance in DIR")
    p.add_argument("--dir", required=True, type=Path)
    p.add_argument("--port", type=int, default=5696)
    p.add_argument("--database-url")
    p.add_argument("--kek-kind", choices=KEK_KIND_NAMES, default="aes")

    p = sub.add_parser("serve", help="run the KMIP server in the foreground")
    _config_arg(p)
    p.add_argument("--port", type=int, help="override server.port")

    p = sub.add_parser("certs", help="issue certificates from the instance's dev CA")
    certs = p.add_subparsers(dest="certs_command", required=True)
    c = certs.add_parser("client", help="issue a client certificate and pykmip.conf")
    c.add_argument("name")
    c.add_argument("--group", action="append", default=[], help="group (certificate OU); repeatable")
    _config_arg(c)
    c = certs.add_parser("sign", help="sign an appliance's CSR with the instance CA (CN/OU from the arguments)")
    c.add_argument("--csr", required=True, type=Path, help="the appliance's certificate signing request (PEM or DER)")
    c.add_argument("--name", required=True, help="client identity (certificate CN); the CSR's subject is ignored")
    c.add_argument("--group", action="append", default=[], help="group (certificate OU); repeatable")
    c.add_argument("--days", type=int, default=None, help="validity in days (default 365, at most 825)")
    _config_arg(c)
    c = certs.add_parser("revoke", help="add NAME's client certificate to the dev CA's CRL (pki/crl.pem)")
    c.add_argument("name")
    _config_arg(c)

    p = sub.add_parser("keyhsm", help="key-encryption keys on the token")
    kh = p.add_subparsers(dest="keyhsm_command", required=True)
    c = kh.add_parser("list", help="one line per KEK: label, kind, state, objects under it")
    _config_arg(c)
    c = kh.add_parser("create", help="create KEK NAME (version 1)")
    c.add_argument("name")
    c.add_argument("--kind", choices=KEK_KIND_NAMES)
    _config_arg(c)
    c = kh.add_parser("rotate", help="create the next version of KEK NAME; new objects use it")
    c.add_argument("name", nargs="?")
    _config_arg(c)
    c = kh.add_parser("revoke", help="destroy KEK LABEL (NAME-vN, or NAME for every version)")
    c.add_argument("label")
    _config_arg(c)
    c = kh.add_parser("rewrap", help="move every object under a retired KEK version to the current one (online)")
    c.add_argument("--batch", type=int, default=200, help="objects per batch and transaction (default 200)")
    c.add_argument("--pause", type=float, default=0.0, help="seconds to sleep between batches (throttle)")
    _config_arg(c)
    c = kh.add_parser("probe", help="what the token offers and which wrap mechanism each KEK kind gets")
    _config_arg(c)
    c = kh.add_parser("serve", help="run the Key HSM as a local service on keyhsm.socket (for keyhsm.mode: socket)")
    _config_arg(c)

    p = sub.add_parser("audit", help="the hash-chained audit log")
    au = p.add_subparsers(dest="audit_command", required=True)
    c = au.add_parser("verify", help="check the chain; exit 0 if intact, 1 at the first broken record")
    c.add_argument("--file", type=Path, help="audit file to check (default: audit.path of the config)")
    c.add_argument("--checkpoints", type=Path,
                   help="signed checkpoint file to check it against (default: audit.checkpoint_path, "
                        "for the configured file only)")
    _config_arg(c)

    p = sub.add_parser("db", help="database maintenance")
    db = p.add_subparsers(dest="db_command", required=True)
    c = db.add_parser("upgrade", help="apply schema migrations")
    _config_arg(c)
    c = db.add_parser("check", help="integrity check of the store; exit 0 if whole, 1 if damaged")
    c.add_argument("--open", action="store_true",
                   help="also unseal every live object through the Key HSM (proves it can be read)")
    c.add_argument("--repair", action="store_true",
                   help="destroy orphan per-object keys on the token (of destroyed objects, or without a row)")
    c.add_argument("--grace", type=float, default=600.0,
                   help="a per-object key without a row is an orphan only when older (default 600 s)")
    _config_arg(c)
    c = db.add_parser("backup", help="consistent copy of the database, safe while servers run (sealed material only)")
    c.add_argument("--output", required=True, type=Path, help="backup file to write (replaced if it exists)")
    _config_arg(c)
    c = db.add_parser("restore", help="replace the database with a backup (stop the servers first)")
    c.add_argument("--input", required=True, type=Path, help="backup file made by 'db backup'")
    c.add_argument("--force", action="store_true", help="overwrite a database that already holds objects")
    _config_arg(c)
    return parser


def cmd_init(args: argparse.Namespace) -> int:
    from .admin.instance import init_instance

    settings = init_instance(args.dir, args.port, args.database_url, args.kek_kind)
    print(f"instance ready: {settings.path}")
    print(f"admin client:   {settings.instance_dir / 'clients' / 'admin' / 'pykmip.conf'}")
    return 0


def _database_writer(settings: Settings) -> Callable[[Callable[[str], None]], int]:
    """The writer process's body (store/writer.py), run in a child the master forks."""
    import signal

    from .store import writer
    from .store.store import Store, Timeouts

    db = settings.database
    assert db.writer_socket is not None  # config.load sets it

    def store() -> Store:
        # One leader's transaction at a time: 2 connections (the second for a retry's new one).
        return Store(db.url, 2, Timeouts(db.connect_timeout, db.statement_timeout, db.pool_timeout, db.busy_timeout))

    def stop_on(stop: Callable[[], None]) -> None:
        signal.signal(signal.SIGTERM, lambda *_: stop())

    return lambda report: writer.run(store, str(db.writer_socket), report, stop_on)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load(args.config, port=args.port)
    logs.setup(settings.logging.level, settings.logging.format)
    _warn(settings)
    from .app import App
    from .server.connection import Limits
    from .server.master import ServeOptions, serve
    from .server.tls import server_context

    s = settings.server
    opts = ServeOptions(
        host=s.host,
        port=s.port,
        workers=s.workers,
        limits=Limits(s.max_message_size, s.idle_timeout, s.read_timeout, s.handshake_timeout),
        max_connections=s.max_connections,
        drain_timeout=s.drain_timeout,
        max_handshakes=s.max_handshakes,
        max_handshakes_per_ip=s.max_handshakes_per_ip,
        handler_threads=s.handler_threads,
        # One multiprocess directory per node (KMIP port): several nodes may share an instance.
        metrics=(m.host, m.port, settings.instance_dir / "metrics" / str(s.port)) if (m := settings.metrics).enabled
        else None,
        writer=_database_writer(settings) if settings.database.writer == "process" else None,
    )

    def tls() -> ssl.SSLContext:
        # Re-run by each worker on SIGHUP: the tls section is re-read, so renewed certificates
        # and a new or updated CRL take effect without a restart.
        t = load(settings.path).tls
        return server_context(t.ca, t.cert, t.key, t.min_version, t.crl, t.profile, t.ciphers)

    return serve(opts, tls, lambda: App(settings))


def cmd_certs_sign(args: argparse.Namespace, settings: Settings) -> int:
    from .admin import pki

    days = pki.SIGN_DEFAULT_DAYS if args.days is None else args.days
    try:
        name = pki.check_name("client name", args.name)
        csr = pki.load_csr(args.csr.read_bytes())
        ca, ca_key = pki.ca_pair(settings.tls.ca, settings.tls.ca.with_suffix(".key"))
        signed = pki.sign_csr(ca, ca_key, csr, name, tuple(args.group), days)
        path = pki.write_signed(settings.instance_dir / "clients" / name, signed.cert, ca)
    except pki.CsrError as exc:
        print(f"kmip-bridge: certs sign: {exc}", file=sys.stderr)
        return 1
    if signed.requested_subject:
        print(f"note: the CSR asked for '{signed.requested_subject}'; the certificate says "
              f"'{signed.cert.subject.rfc4514_string()}'", file=sys.stderr)
    if signed.clamped:
        print(f"note: validity cut to the CA's own expiry, {signed.cert.not_valid_after_utc:%Y-%m-%d}",
              file=sys.stderr)
    print(path)
    return 0


def cmd_certs(args: argparse.Namespace, settings: Settings) -> int:
    from .admin.instance import ensure_client, revoke_client
    from .admin.pki import CertNameError

    if args.certs_command == "sign":
        return cmd_certs_sign(args, settings)
    try:
        if args.certs_command == "revoke":
            crl = revoke_client(settings, args.name)
            print(crl)
            if settings.tls.crl is None:
                print(f"set tls.crl: {crl} in the config, then send the server SIGHUP", file=sys.stderr)
            return 0
        print(ensure_client(settings, args.name, tuple(args.group)))
    except CertNameError as exc:
        print(f"kmip-bridge: certs {args.certs_command}: {exc}", file=sys.stderr)
        return 2
    return 0


def _warn(settings: Settings) -> None:
    import logging

    for warning in config_warnings(settings):
        logging.getLogger("kmip_bridge.config").warning(warning)


def cmd_keyhsm_serve(settings: Settings) -> int:
    logs.setup(settings.logging.level, settings.logging.format)
    _warn(settings)
    from .app import open_keyhsm
    from .keyhsm import service

    assert settings.keyhsm.socket is not None  # config.load sets the default
    hsm = open_keyhsm(settings)
    try:
        hsm.check()
        hsm.check_mechanism()  # refuses, naming what the token lacks, if nothing can wrap
        return service.run(hsm, settings.keyhsm.socket, settings.server.drain_timeout)
    finally:
        hsm.close()


def cmd_keyhsm_probe(settings: Settings) -> int:
    """Opens the token itself (in either keyhsm.mode); exit 1 if the configured KEK kind has no
    usable wrap mechanism."""
    from .app import open_keyhsm
    from .keyhsm import kek
    from .keyhsm.probe import probe

    hsm = open_keyhsm(settings)
    try:
        lines, uses = probe(hsm, settings.keyhsm.wrap_mechanisms)
    finally:
        hsm.close()
    for topic, text in lines:
        print(f"{topic:8} {text}")
    kind = kek.check_kind(settings.keyhsm.kek_kind)
    if uses.get(kind) is None:
        print(f"refused  keyhsm.kek_kind {kind}: the token has no usable wrap mechanism for it", file=sys.stderr)
        return 1
    return 0


def cmd_keyhsm(args: argparse.Namespace, settings: Settings) -> int:
    from .app import build_keyhsm
    from .keyhsm import per_object
    from .store import Store

    if args.keyhsm_command == "serve":
        return cmd_keyhsm_serve(settings)
    if args.keyhsm_command == "probe":
        return cmd_keyhsm_probe(settings)
    # keyhsm.mode socket: through the service, which holds the token login (no PIN needed here).
    hsm = build_keyhsm(settings)
    try:
        if args.keyhsm_command == "list":
            store = Store(settings.database.url, pool_size=1)
            try:
                counts = store.count_by_kek()
            finally:
                store.close()
            keks = hsm.list_keks()
            current = {}
            for k in keks:
                if k.version > current.get(k.name, 0):
                    current[k.name] = k.version
            on_token = set()
            for k in sorted(keks, key=lambda k: (k.name, k.version)):
                on_token.add(k.label)
                state = "current" if current[k.name] == k.version else "retired"
                print(f"{k.label} {k.kind} {state} {counts.get(k.label, 0)}")
            per_object_rows = sum(n for label, n in counts.items() if per_object.parse_label(label))
            for label in sorted(set(counts) - on_token):
                if per_object.parse_label(label) is None:
                    print(f"{label} - revoked {counts[label]}")
            object_keys = hsm.list_object_keys()
            if object_keys or per_object_rows or settings.keyhsm.per_object_keks:
                # One line for all of them: a label each would be one line per object.
                names = ",".join(sorted(settings.keyhsm.per_object_keks)) or "-"
                print(f"per-object {per_object.OBJECT_AES} keys {len(object_keys)} objects {per_object_rows} "
                      f"for {names}")
        elif args.keyhsm_command == "create":
            kek = hsm.create_kek(args.name, args.kind or settings.keyhsm.kek_kind)
            print(f"{kek.label} {kek.kind} created")
        elif args.keyhsm_command == "rotate":
            kek = hsm.rotate_kek(args.name or settings.keyhsm.kek)
            print(f"{kek.label} {kek.kind} created; new objects use it")
        elif args.keyhsm_command == "rewrap":
            return _rewrap(args, settings, hsm)
        elif args.keyhsm_command == "revoke":
            for label in hsm.revoke_kek(args.label):
                print(f"{label} destroyed on the token; objects under it are irretrievable")
    finally:
        hsm.close()
    return 0


def _rewrap(args: argparse.Namespace, settings: Settings, hsm: object) -> int:
    from .admin.rewrap import rewrap
    from .store import Store

    if args.batch < 1:
        print("kmip-bridge: --batch must be at least 1", file=sys.stderr)
        return 2
    names = [settings.keyhsm.kek, *sorted(set(settings.keyhsm.tenants.values()))]
    store = Store(settings.database.url, pool_size=2)
    try:
        out = rewrap(hsm, store, names, batch=args.batch, progress=sys.stderr, pause=args.pause)
    finally:
        store.close()
    resealed = f" ({out.resealed} of envelope format 1 re-sealed)" if out.resealed else ""
    print(f"rewrapped {out.rewrapped} objects in {out.seconds:.1f} s{resealed}; {out.remaining} left under "
          f"retired KEK versions ({', '.join(out.retired) or 'none'})")
    for uid, why in sorted(out.failed.items()):
        print(f"{uid}: not rewrapped: {why}", file=sys.stderr)
    if out.remaining:
        print("kmip-bridge: objects remain under retired KEK versions; run rewrap again before revoking",
              file=sys.stderr)
        return 1
    return 0


def cmd_db_check(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy.exc import DBAPIError

    from .admin.dbcheck import check, check_object_keys, render
    from .app import build_keyhsm
    from .store import Store
    from .store.store import normalise_url

    store = Store(settings.database.url, pool_size=1)
    hsm = build_keyhsm(settings) if args.open or args.repair else None
    try:
        report = check(store.engine, hsm.open if hsm is not None and args.open else None)
        if hsm is not None:
            check_object_keys(store.engine, hsm, report, opened=args.open, repair=args.repair, grace=args.grace)
    except DBAPIError as exc:
        print(f"kmip-bridge: database unavailable ({type(exc.orig or exc).__name__})", file=sys.stderr)
        return 1
    finally:
        store.close()
        if hsm is not None:
            hsm.close()
    # the URL without a password, if one is written in it
    print(render(report, store.engine.url.render_as_string(hide_password=True) or normalise_url(store.url)))
    return 0 if report.ok else 1


def cmd_db_backup(args: argparse.Namespace, settings: Settings) -> int:
    from .store.backup import BackupError, backup

    try:
        backup(settings.database.url, args.output)
    except BackupError as exc:
        print(f"kmip-bridge: backup failed: {exc}", file=sys.stderr)
        return 1
    print(f"backup written to {args.output} (sealed material only: useless without the token's KEKs)")
    return 0


def cmd_db_restore(args: argparse.Namespace, settings: Settings) -> int:
    from .store.backup import BackupError, restore

    try:
        restore(settings.database.url, args.input, force=args.force)
    except BackupError as exc:
        print(f"kmip-bridge: restore failed: {exc}", file=sys.stderr)
        return 1
    print(f"database restored from {args.input}")
    _restore_checks(settings)
    return 0


def _restore_checks(settings: Settings) -> None:
    """Warnings only: the restore itself is done and correct; these say what will not work yet."""
    from .admin.kekcheck import check_keks
    from .app import build_keyhsm
    from .keyhsm import KeyHsmError
    from .store import Store
    from .store.migrate import pending

    store = Store(settings.database.url, pool_size=1)
    try:
        if pending(store.engine):
            print("warning: the backup's schema is not the code's: run 'kmip-bridge db upgrade' before serving",
                  file=sys.stderr)
        try:
            hsm = build_keyhsm(settings)
        except KeyHsmError as exc:
            print(f"warning: cannot check the backup's KEKs against the token: {exc}", file=sys.stderr)
            return
        try:
            problems = check_keks(hsm, store)
        finally:
            hsm.close()
    finally:
        store.close()
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if problems:
        print("warning: restore the token that holds these KEKs (or accept the loss); "
              "'kmip-bridge db check --open' unseals every object to confirm", file=sys.stderr)


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    if args.db_command == "check":
        return cmd_db_check(args, settings)
    if args.db_command == "backup":
        return cmd_db_backup(args, settings)
    if args.db_command == "restore":
        return cmd_db_restore(args, settings)
    from .store import Store
    from .store.migrate import upgrade

    store = Store(settings.database.url, pool_size=1)
    try:
        upgrade(store.engine)
    finally:
        store.close()
    print("database schema is current")
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from .audit import AuditError, load_key, verify

    a = settings.audit
    path = args.file or a.path
    # The configured log is checked against its signed checkpoints; another file only when
    # --checkpoints names its checkpoint file.
    checkpoints = args.checkpoints or (a.checkpoint_path if args.file is None else None)
    try:
        key = load_key(a.key_file) if a.key_file is not None else None
        if key is None and checkpoints is not None and not checkpoints.exists():
            checkpoints = None  # never anchored (no key, no checkpoints): the chain alone
        verdict = verify(path, key, checkpoints)
    except OSError as exc:
        print(f"audit log {path}: cannot read ({exc.strerror})", file=sys.stderr)
        return 1
    except AuditError as exc:
        print(f"audit log {path}: {exc}", file=sys.stderr)
        return 1
    if verdict.anchor_problem:
        print(f"audit log {path}: checkpoints: {verdict.anchor_problem}")
    if verdict.broken_line is not None:
        print(
            f"audit log {path}: broken at line {verdict.broken_line}: {verdict.reason} "
            f"({verdict.records} records intact before it)"
        )
    if not verdict.intact:
        return 1
    anchor = (f"; signed checkpoint at record {verdict.checkpoint}" if checkpoints is not None
              else "; not anchored (no signed checkpoints checked)")
    print(f"audit log {path}: intact, {verdict.records} records, head {verdict.head}{anchor}")
    return 0


# Tools with their own argument parsers: `kmip-bridge conformance ...` / `kmip-bridge bench ...`.
PASSTHROUGH = {
    "conformance": "kmip_bridge.conformance.runner",
    "bench": "kmip_bridge.bench",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PASSTHROUGH:
        import importlib

        return int(importlib.import_module(PASSTHROUGH[argv[0]]).main(argv[1:]) or 0)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "init":
            return cmd_init(args)
        if args.command == "serve":
            return cmd_serve(args)
        settings = load(args.config)
        handler = {"certs": cmd_certs, "keyhsm": cmd_keyhsm, "db": cmd_db, "audit": cmd_audit}[args.command]
        return handler(args, settings)
    except ConfigError as exc:
        print(f"kmip-bridge: config error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .keyhsm import KeyHsmError

        if isinstance(exc, (KeyHsmError, RuntimeError, OSError)):
            print(f"kmip-bridge: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
