"""Composition root: builds one worker's services from the settings and serves sessions.

The only module that wires keyhsm, store, policy and operations together for the server.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import cast

from kmip.core.enums import ResultReason

from . import metrics
from .audit import Anchor, AuditLog
from .config import Settings, load
from .keyhsm import KekNotFound, KeyHsm, TokenSettings, per_object
from .keyhsm.remote import RemoteKeyHsm
from .operations import auditing
from .operations.context import Budgets, Services
from .operations.dispatch import handle_message
from .policy import AccessDenied, Policy, identity_from_certificate
from .policy.identity import Identity, IdentityError
from .policy.revocation import certificate_serial, revoked_serials
from .protocol import messages, ttlv
from .protocol.errors import KmipError
from .store import Store
from .store.migrate import pending
from .store.store import Timeouts

log = logging.getLogger("kmip_bridge.app")


def token_settings(settings: Settings) -> TokenSettings:
    k = settings.keyhsm
    return TokenSettings(
        module=k.module,
        token_label=k.token_label,
        pin=k.read_pin(),
        softhsm2_conf=str(k.softhsm2_conf) if k.softhsm2_conf else None,
        lock_file=str(k.lock_file) if k.lock_file else str(settings.instance_dir / "token.lock"),
        session_pool_size=k.session_pool_size,
        token_serial=k.token_serial,
    )


def open_keyhsm(settings: Settings) -> KeyHsm:
    return KeyHsm(
        token_settings(settings),
        kek_name=settings.keyhsm.kek,
        kek_refresh_seconds=settings.keyhsm.kek_refresh_seconds,
        wrap_mechanisms=settings.keyhsm.wrap_mechanisms,
        per_object_keks=settings.keyhsm.per_object_keks,
    )


def build_keyhsm(settings: Settings) -> KeyHsm | RemoteKeyHsm:
    """keyhsm.mode socket: the 'kmip-bridge keyhsm serve' process holds the token (this process
    loads no PKCS#11 module and reads no PIN); inprocess: this process opens the token itself."""
    k = settings.keyhsm
    if k.mode == "socket":
        assert k.socket is not None  # config.load sets the default
        return RemoteKeyHsm(k.socket, k.kek, pool_size=k.session_pool_size)
    return open_keyhsm(settings)


def _check_tenant_keks(keyhsm: KeyHsm | RemoteKeyHsm, tenants: dict[str, str]) -> None:
    """Every tenant KEK must exist at start-up, as the default KEK must: found missing only at a
    tenant's first Create, it would fail that tenant's writes while the server looks healthy."""
    for group, name in sorted(tenants.items()):
        try:
            keyhsm.current_kek(name)
        except KekNotFound as exc:
            hint = f"create it: kmip-bridge keyhsm create {name}"
            raise KekNotFound(name, f"keyhsm.tenants.{group}: {exc} ({hint})") from None


def budgets(settings: Settings) -> Budgets:
    s = settings.server
    return Budgets(**{f.name: getattr(s, f.name) for f in dataclasses.fields(Budgets)})


def build_policy(settings: Settings) -> Policy:
    p = settings.policy
    return Policy(p.admin_group, p.directory, p.groups_from, p.require_known, p.derive_from_pre_active)


class Session:
    def __init__(self, app: App, identity: Identity | None, refusal: str, peer: str, serial: int | None = None) -> None:
        self._app = app
        self._identity = identity
        self._refusal = refusal
        self._peer = peer
        self._serial = serial

    def handle(self, data: bytes) -> bytes:
        identity, refusal = self._identity, self._refusal
        if identity is not None and self._serial in self._app.revoked:
            # Per message, like identity disablement: a CRL reloaded by SIGHUP also applies to
            # connections opened before it (OpenSSL checks the CRL at the handshake only).
            identity, refusal = None, "client certificate revoked"
        if identity is not None:
            try:  # per message, so that a reloaded identities.yaml applies to open connections
                identity = self._app.services.policy.resolve(identity)
            except AccessDenied as exc:
                identity, refusal = None, str(exc)
        if identity is None:
            message = ttlv.decode(data, self._app.limits)
            error = KmipError(ResultReason.PERMISSION_DENIED, refusal)
            log.info("request refused", extra={"peer": self._peer, "reason": refusal})
            auditing.refused(self._app.services, self._identity.name if self._identity else None, self._peer, refusal)
            return messages.error_response(messages.peek_version(message), error)
        return handle_message(self._app.services, identity, self._peer, data, self._app.limits,
                              self._app.settings.server.max_batch_items)


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limits = ttlv.Limits(settings.server.max_depth, settings.server.max_items)
        self.revoked = revoked_serials(settings.tls.ca, settings.tls.crl)  # replaced on SIGHUP
        db = settings.database
        store = Store(db.url, db.pool_size, Timeouts(db.connect_timeout, db.statement_timeout,
                                                     db.pool_timeout, db.busy_timeout),
                      writer=str(db.writer_socket) if db.writer == "process" and db.writer_socket else None)
        try:
            store.ping()
            if pending(store.engine):
                raise RuntimeError(
                    "database schema is not current: run 'kmip-bridge db upgrade --config FILE'"
                )
            keyhsm = build_keyhsm(settings)
            keyhsm.check()
            if isinstance(keyhsm, KeyHsm):
                keyhsm.check_mechanism()  # refuses, naming what the token lacks, if nothing can wrap
            else:
                keyhsm.current_kek()  # 'keyhsm serve' checked the mechanism at its start
            _check_tenant_keks(keyhsm, settings.keyhsm.tenants)
        except Exception:
            store.close()
            raise
        if metrics.enabled():  # latency of each token call (seal, open, rewrap)
            keyhsm = cast(KeyHsm, metrics.TimedKeyHsm(keyhsm))
        a = settings.audit
        audit = None
        if a.enabled and a.path:
            assert a.key_file is not None and a.checkpoint_path is not None  # config.load sets them
            audit = AuditLog(a.path, Anchor(a.key_file, a.checkpoint_path, a.checkpoint_every))
        self.services = Services(
            keyhsm=keyhsm, store=store, policy=build_policy(settings), tenant_keks=settings.keyhsm.tenants,
            audit=audit, max_request_work=settings.server.max_request_work, budgets=budgets(settings),
            max_located_items=settings.server.max_located_items,
            bind_credential=settings.policy.bind_credential,
            unique_names=settings.policy.unique_names,
        )
        # metrics on: this worker's token and database checks, published for /readyz
        self._readiness = metrics.start_readiness(self._check_ready)
        self._kek_stats = metrics.start_kek_stats(self._read_kek_stats, settings.metrics.kek_stats_seconds)
        log.info("worker ready", extra={"pid": os.getpid()})

    def _read_kek_stats(self) -> tuple[list[str], dict[str, int]]:
        """The KEK versions new objects are sealed under (default and tenant KEKs) and how many
        objects each KEK version seals (metrics: KEK versions in use)."""
        keyhsm = self.services.keyhsm
        names = [None, *sorted(set(self.settings.keyhsm.tenants.values()))]
        counts: dict[str, int] = {}
        for label, n in self.services.store.count_by_kek().items():
            # per-object keys: one label per object, summed under one (bounded metric labels)
            key = "per-object" if per_object.parse_label(label) is not None else label
            counts[key] = counts.get(key, 0) + n
        return [keyhsm.current_kek(n).label for n in names], counts

    def _check_ready(self) -> None:
        with metrics.probe("keyhsm"):
            self.services.keyhsm.check()
        with metrics.probe("database"):
            self.services.store.ping()

    def open_session(self, peer_cert_der: bytes, peer: str) -> Session:
        try:
            identity = identity_from_certificate(peer_cert_der)
        except (IdentityError, ValueError) as exc:
            log.info("client refused", extra={"peer": peer, "reason": str(exc)})
            return Session(self, None, f"client certificate refused: {exc}", peer)
        return Session(self, identity, "", peer, certificate_serial(peer_cert_der))

    def reload(self) -> None:
        """SIGHUP: re-read policies and identities, and the CRL of the (re-read) tls section; the
        worker reloads the TLS context itself."""
        tls = load(self.settings.path).tls
        revoked = revoked_serials(tls.ca, tls.crl)
        self.services.policy.reload()
        self.revoked = revoked

    def close(self) -> None:
        for stop in (self._readiness, self._kek_stats):
            if stop is not None:
                stop.set()
        self.services.keyhsm.close()
        self.services.store.close()
        if self.services.audit is not None:
            self.services.audit.close()
