"""Typed settings built once from YAML; every error names the key and what to fix.

Relative paths resolve against the config file's folder. ``KMIP_BRIDGE_DATABASE_URL`` overrides
``database.url``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .keyhsm import uri as pkcs11_uri

DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
KEK_KINDS = ("aes", "rsa")
# Former names of the kinds (an "aes-kwp" KEK always wrapped with AES-GCM), still accepted.
KEK_KIND_NAMES = (*KEK_KINDS, "aes-kwp", "rsa-oaep")
KEYHSM_MODES = ("inprocess", "socket")
DATABASE_WRITERS = ("process", "inline")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 5696
    workers: int = 0  # 0: one per CPU core
    max_message_size: int = 1_048_576
    max_connections: int = 1024
    # Threads per worker running requests (token and database calls). 8 served the most; 4 gave
    # a lower p99 at 16 clients for ~7% less throughput (docs/performance.md).
    handler_threads: int = 8
    idle_timeout: float = 300.0
    read_timeout: float = 30.0
    drain_timeout: float = 10.0
    max_batch_items: int = 1000  # a request with more gets one Invalid Message failure
    max_depth: int = 32  # TTLV structure nesting
    max_items: int = 100_000  # TTLV items in one message
    # CPU work one request may ask for, in HMAC calls (PBKDF2: iterations x output
    # blocks); beyond it the item fails with Invalid Field (docs/security.md, resource budgets).
    max_request_work: int = 4_000_000
    # Resource budgets (docs/security.md, "Resource budgets"): no client holds a shared resource
    # for long. Mirrored by operations.context.Budgets.
    max_response_size: int = 4 * 1024 * 1024  # bytes; beyond it items answer Response Too Large
    undo_lock_seconds: float = 2.0  # SQLite: the longest an Undo batch holds the write lock
    # Multi-part streams are kept in the database: these budgets hold across all workers and nodes.
    max_streams: int = 1024  # open multi-part streams in all
    max_streams_per_identity: int = 32
    max_stream_bytes: int = 4 * 1024 * 1024  # buffered input of one stream
    max_stream_bytes_per_identity: int = 16 * 1024 * 1024
    max_stream_bytes_total: int = 256 * 1024 * 1024  # every open stream
    stream_idle_timeout: float = 600.0  # seconds: a stream with no part for that long ends
    # identifiers one Locate returns at most (MySQL/Percona keyrings ask for up to 65,535 at
    # once); past it a client pages with Offset Items
    max_located_items: int = 65_535
    # Connections between TCP accept and the end of their TLS handshake hold a handshake slot, not
    # a connection slot: at most max_handshakes in all and max_handshakes_per_ip from one address
    # (both split across the workers, rounded up), each for at most handshake_timeout seconds.
    handshake_timeout: float = 10.0
    max_handshakes: int = 128
    max_handshakes_per_ip: int = 32


@dataclass(frozen=True)
class TlsSettings:
    ca: Path
    cert: Path
    key: Path
    min_version: str = "1.2"
    crl: Path | None = None  # PEM CRL of the client CA; re-read on SIGHUP
    profile: str = "modern"  # modern: ECDHE + AEAD on TLS 1.2; legacy: also CBC-SHA256 and RSA key exchange
    ciphers: str | None = None  # an OpenSSL cipher string for TLS 1.2, replacing the profile's suites


@dataclass(frozen=True)
class KeyHsmSettings:
    module: str = DEFAULT_MODULE
    token_label: str = "kmip-bridge"
    token_serial: str | None = None  # picks one of several tokens with the same label
    pin_file: Path | None = None
    pin: str | None = field(default=None, repr=False)
    softhsm2_conf: Path | None = None
    kek: str = "default"
    kek_kind: str = "aes"
    # Wrap mechanisms new wraps may use, in order of preference (names from keyhsm/mechanisms.py);
    # empty: every one, in the built-in order, as the token allows (see 'kmip-bridge keyhsm probe')
    wrap_mechanisms: tuple[str, ...] = ()
    kek_refresh_seconds: float = 5.0
    session_pool_size: int = 8
    lock_file: Path | None = None
    # group -> KEK name: objects created by members are sealed under that tenant's KEK. A value
    # may also be {kek: NAME, per_object: BOOL} (the tenant's own per_object switch).
    tenants: dict[str, str] = field(default_factory=dict)
    # true: each new object's DEK is wrapped by a token key made for it alone, destroyed with it
    # (keyhsm/per_object.py); a tenant's own switch in tenants wins over this one
    per_object: bool = False
    # derived (not a config key): the KEK names whose objects get per-object keys
    per_object_keks: frozenset[str] = field(default_factory=frozenset)
    # inprocess: each worker opens the token itself; socket: workers talk to 'kmip-bridge keyhsm
    # serve' on a Unix socket and never load the PKCS#11 module or read the PIN
    mode: str = "inprocess"
    socket: Path | None = None  # default: keyhsm.sock next to the config file
    # RFC 7512 URI naming token, KEK, module and PIN source at once (see _apply_uri); it sets
    # token_label, kek, kek_kind, module, pin_file / pin
    uri: str | None = field(default=None, repr=False)  # may hold pin-value

    def read_pin(self) -> str:
        env = os.environ.get("KMIP_BRIDGE_TOKEN_PIN")
        if env:
            return env
        if self.pin_file is not None:
            try:
                return self.pin_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"keyhsm.pin_file: cannot read {self.pin_file}: {exc.strerror}"
                ) from None
        if self.pin is not None:
            return self.pin
        raise ConfigError("keyhsm: set pin_file (or KMIP_BRIDGE_TOKEN_PIN) to the token user PIN")


@dataclass(frozen=True)
class DatabaseSettings:
    url: str
    pool_size: int = 8
    # Bounds on waiting for the database, so that an outage fails requests instead of hanging
    # them (docs/reliability.md). Seconds; statement_timeout 0 means none.
    connect_timeout: float = 5.0  # PostgreSQL: establishing a connection
    statement_timeout: float = 30.0  # PostgreSQL: one statement (server-side cancel)
    pool_timeout: float = 10.0  # waiting for a free pooled connection
    busy_timeout: float = 30.0  # SQLite: retrying while another writer holds the lock
    # process: the hot writes of every worker are committed by one writer process (group commit
    # across workers, off the workers' GIL; store/writer.py); inline: each worker commits its own
    writer: str = "process"
    writer_socket: Path | None = None  # default: db-writer.PORT.sock next to the config file


@dataclass(frozen=True)
class PolicySettings:
    admin_group: str = "admin"
    directory: Path | None = None  # policies/*.yaml and identities.yaml; None: built-in default
    groups_from: str = "ou"  # ou (certificate OUs) | map (identities.yaml) | both
    require_known: bool = False  # refuse identities not listed in identities.yaml
    # KMIP: a Pre-Active object is not to be used for any cryptographic purpose. PyKMIP clients
    # derive from registered, never activated secrets; true admits those (DeriveKey only).
    derive_from_pre_active: bool = False
    # A Username and Password credential in a request header (some appliances send one besides
    # their certificate) must name the certificate's identity; false: credentials are ignored.
    bind_credential: bool = False
    # Name values unique among the objects a client can see at Create/Register too, not only on
    # Add/Modify Attribute. Off by default: PyKMIP gives every object the same default Name.
    unique_names: bool = False


@dataclass(frozen=True)
class AuditSettings:
    enabled: bool = True
    path: Path | None = None  # default: audit.jsonl next to the config file
    # Signed checkpoints anchor the chain (audit.py): HMAC-SHA256 under the key in key_file (0600,
    # made on first use), appended to checkpoint_path every checkpoint_every records and whenever
    # a worker stops.
    key_file: Path | None = None  # default: audit.key next to the config file
    checkpoint_path: Path | None = None  # default: the audit path + ".checkpoints"
    checkpoint_every: int = 100


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "INFO"
    format: str = "json"


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = False
    host: str = "127.0.0.1"  # loopback unless deliberately exposed
    port: int = 9696
    # how often each worker recounts objects per KEK version (a GROUP BY over the objects table)
    kek_stats_seconds: float = 30.0


@dataclass(frozen=True)
class Settings:
    path: Path
    server: ServerSettings
    tls: TlsSettings
    keyhsm: KeyHsmSettings
    database: DatabaseSettings
    policy: PolicySettings = field(default_factory=PolicySettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    @property
    def instance_dir(self) -> Path:
        return self.path.parent


_PATH_KEYS = {"ca", "cert", "key", "crl", "pin_file", "softhsm2_conf", "lock_file", "directory", "path", "socket",
              "key_file", "checkpoint_path", "writer_socket"}


def _build(cls: type, section: str, raw: Any, base: Path) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{section}: must be a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(
            f"{section}.{unknown[0]}: unknown key (expected one of: {', '.join(sorted(known))})"
        )
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        if name not in raw:
            continue
        value = raw[name]
        key = f"{section}.{name}"
        expected = str(f.type)
        if name in _PATH_KEYS:
            if value is None:
                kwargs[name] = None
                continue
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{key}: must be a path string")
            p = Path(value).expanduser()
            kwargs[name] = p if p.is_absolute() else (base / p)
        elif expected.startswith("bool"):
            if not isinstance(value, bool):
                raise ConfigError(f"{key}: must be true or false, got {value!r}")
            kwargs[name] = value
        elif expected.startswith("dict"):
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise ConfigError(f"{key}: must be a mapping of names to names")
            kwargs[name] = dict(value)
        elif expected.startswith("tuple"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{key}: must be a list of names")
            kwargs[name] = tuple(value)
        elif expected.startswith("int"):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{key}: must be an integer, got {value!r}")
            kwargs[name] = value
        elif expected.startswith("float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{key}: must be a number, got {value!r}")
            kwargs[name] = float(value)
        else:
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{key}: must be a string, got {value!r}")
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        missing = [n for n, f in known.items() if n not in kwargs and _required(f)]
        if missing:
            raise ConfigError(f"{section}.{missing[0]}: required") from None
        raise ConfigError(f"{section}: {exc}") from None


def _required(f: Any) -> bool:
    from dataclasses import MISSING

    return f.default is MISSING and f.default_factory is MISSING


def _check(settings: Settings) -> None:
    s = settings.server
    if not 0 < s.port < 65536:
        raise ConfigError(f"server.port: {s.port} is not a TCP port (1-65535)")
    if s.workers < 0:
        raise ConfigError("server.workers: must be 0 (one per core) or more")
    if s.max_message_size < 1024:
        raise ConfigError("server.max_message_size: must be at least 1024 bytes")
    if s.max_connections < 1:
        raise ConfigError("server.max_connections: must be at least 1")
    for key in ("max_batch_items", "max_depth", "max_items", "max_request_work", "max_located_items",
                "max_handshakes", "max_handshakes_per_ip"):
        if getattr(s, key) < 1:
            raise ConfigError(f"server.{key}: must be at least 1")
    if not 1 <= s.handler_threads <= 256:
        raise ConfigError("server.handler_threads: must be between 1 and 256")
    if s.max_depth > 256:  # the decoder recurses once per level
        raise ConfigError("server.max_depth: must be at most 256")
    for key in ("idle_timeout", "read_timeout", "drain_timeout", "handshake_timeout"):
        if getattr(s, key) <= 0:
            raise ConfigError(f"server.{key}: must be a positive number of seconds")
    _check_budgets(s)
    if s.max_handshakes_per_ip > s.max_handshakes:
        raise ConfigError("server.max_handshakes_per_ip: must be at most server.max_handshakes")
    if settings.tls.min_version not in ("1.2", "1.3"):
        raise ConfigError("tls.min_version: must be \"1.2\" or \"1.3\"")
    if settings.tls.profile not in ("modern", "legacy"):
        raise ConfigError("tls.profile: must be modern or legacy")
    if settings.tls.ciphers is not None:
        import ssl

        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(settings.tls.ciphers)
        except ssl.SSLError:
            raise ConfigError(
                f"tls.ciphers: OpenSSL knows no cipher suite in {settings.tls.ciphers!r} (see 'openssl ciphers')"
            ) from None
    if settings.keyhsm.kek_kind not in KEK_KIND_NAMES:
        raise ConfigError(f"keyhsm.kek_kind: must be one of {', '.join(KEK_KINDS)}")
    from .keyhsm.mechanisms import WRITABLE

    for name in settings.keyhsm.wrap_mechanisms:
        if name not in WRITABLE:
            raise ConfigError(f"keyhsm.wrap_mechanisms: unknown mechanism {name!r} (use some of {', '.join(WRITABLE)})")
    if settings.policy.groups_from not in ("ou", "map", "both"):
        raise ConfigError("policy.groups_from: must be ou, map or both")
    if settings.keyhsm.mode not in KEYHSM_MODES:
        raise ConfigError(f"keyhsm.mode: must be one of {', '.join(KEYHSM_MODES)}")
    if settings.keyhsm.socket is not None and len(os.fsencode(settings.keyhsm.socket)) > 107:
        raise ConfigError("keyhsm.socket: path too long for a Unix socket (at most 107 bytes)")
    if not 0 < settings.metrics.port < 65536:
        raise ConfigError(f"metrics.port: {settings.metrics.port} is not a TCP port (1-65535)")
    if settings.database.pool_size < 1:
        raise ConfigError("database.pool_size: must be at least 1")
    for key in ("connect_timeout", "pool_timeout", "busy_timeout"):
        if getattr(settings.database, key) <= 0:
            raise ConfigError(f"database.{key}: must be a positive number of seconds")
    if settings.database.writer not in DATABASE_WRITERS:
        raise ConfigError(f"database.writer: must be one of {', '.join(DATABASE_WRITERS)}")
    if settings.database.statement_timeout < 0:
        raise ConfigError("database.statement_timeout: must be 0 (no limit) or a positive number of seconds")
    if settings.audit.checkpoint_every < 1:
        raise ConfigError("audit.checkpoint_every: must be at least 1 (a signed checkpoint every N records)")
    if settings.metrics.kek_stats_seconds <= 0:
        raise ConfigError("metrics.kek_stats_seconds: must be a positive number of seconds")
    if settings.logging.format not in ("json", "text"):
        raise ConfigError("logging.format: must be json or text")
    if settings.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("logging.level: must be DEBUG, INFO, WARNING or ERROR")


def _check_budgets(s: ServerSettings) -> None:
    if s.max_response_size < 4096:
        raise ConfigError("server.max_response_size: must be at least 4096 bytes")
    if s.undo_lock_seconds <= 0:
        raise ConfigError("server.undo_lock_seconds: must be a positive number of seconds")
    for key in ("max_streams", "max_streams_per_identity", "max_stream_bytes", "max_stream_bytes_per_identity",
                "max_stream_bytes_total"):
        if getattr(s, key) < 1:
            raise ConfigError(f"server.{key}: must be at least 1")
    if s.stream_idle_timeout <= 0:
        raise ConfigError("server.stream_idle_timeout: must be a positive number of seconds")
    if s.max_streams_per_identity > s.max_streams:
        raise ConfigError("server.max_streams_per_identity: must not exceed server.max_streams")
    if s.max_stream_bytes > s.max_stream_bytes_per_identity:
        raise ConfigError("server.max_stream_bytes: must not exceed server.max_stream_bytes_per_identity")
    if s.max_stream_bytes_per_identity > s.max_stream_bytes_total:
        raise ConfigError("server.max_stream_bytes_per_identity: must not exceed server.max_stream_bytes_total")


def load(path: str | os.PathLike[str] | None = None, port: int | None = None) -> Settings:
    """Reads and validates a config file (``KMIP_BRIDGE_CONFIG`` when ``path`` is None)."""
    if path is None:
        path = os.environ.get("KMIP_BRIDGE_CONFIG")
        if not path:
            raise ConfigError("no config: pass --config FILE or set KMIP_BRIDGE_CONFIG")
    cfg_path = Path(path).resolve()
    try:
        raw = yaml.safe_load(cfg_path.read_text())
    except OSError as exc:
        raise ConfigError(f"{cfg_path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{cfg_path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{cfg_path}: must be a YAML mapping of sections")
    sections = {"server", "tls", "keyhsm", "database", "policy", "logging", "audit", "metrics"}
    unknown = sorted(set(raw) - sections)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section (expected {', '.join(sorted(sections))})")
    base = cfg_path.parent
    db_raw = dict(raw.get("database") or {})
    if os.environ.get("KMIP_BRIDGE_DATABASE_URL"):
        db_raw["url"] = os.environ["KMIP_BRIDGE_DATABASE_URL"]
    server = _build(ServerSettings, "server", raw.get("server"), base)
    keyhsm_raw, tenant_switch = _tenant_switches(raw.get("keyhsm"))
    keyhsm = _build(KeyHsmSettings, "keyhsm", keyhsm_raw, base)
    if keyhsm.uri is not None:
        keyhsm = _apply_uri(keyhsm, raw.get("keyhsm") or {}, base)
    keyhsm = _per_object_keks(keyhsm, tenant_switch)
    if port is not None:
        server = ServerSettings(**{**server.__dict__, "port": port})
    settings = Settings(
        path=cfg_path,
        server=server,
        tls=_build(TlsSettings, "tls", raw.get("tls"), base),
        keyhsm=keyhsm,
        database=_build(DatabaseSettings, "database", db_raw, base),
        policy=_build(PolicySettings, "policy", raw.get("policy"), base),
        logging=_build(LoggingSettings, "logging", raw.get("logging"), base),
        audit=_build(AuditSettings, "audit", raw.get("audit"), base),
        metrics=_build(MetricsSettings, "metrics", raw.get("metrics"), base),
    )
    settings = _resolve_sqlite(settings, base)
    settings = _instance_defaults(settings, base)
    _check(settings)
    return settings


# URI attribute -> the keyhsm setting it gives; a key also set in the YAML must agree with it.
_URI_KEYS = {"token": "token_label", "serial": "token_serial", "object": "kek", "type": "kek_kind",
             "module-path": "module", "pin-source": "pin_file", "pin-value": "pin"}
_KEK_TYPES = {"secret-key": "aes", "private": "rsa"}


def _apply_uri(keyhsm: KeyHsmSettings, given: dict[str, Any], base: Path) -> KeyHsmSettings:
    """``keyhsm.uri`` (RFC 7512) onto the settings it names: token=LABEL (required),
    object=KEK name, type=secret-key (aes) or private (rsa), ?module-path=,
    ?pin-source=file (file:/abs, /abs or relative to the config) or ?pin-value=."""
    assert keyhsm.uri is not None
    try:
        uri = pkcs11_uri.parse(keyhsm.uri)
    except pkcs11_uri.Pkcs11UriError as exc:
        raise ConfigError(f"keyhsm.uri: {exc}") from None
    unsupported = sorted(set(uri.path) - set(_URI_KEYS)) + (["id"] if uri.id is not None else [])
    unsupported += sorted(set(uri.query) - set(_URI_KEYS))
    if unsupported:
        raise ConfigError(
            f"keyhsm.uri: '{unsupported[0]}' is not supported; name the token by token=LABEL (and serial=), the "
            "KEK by object=NAME and the module by module-path=/absolute/path.so"
        )
    if uri.token is None:
        raise ConfigError("keyhsm.uri: needs token=LABEL (the label of the token that holds the KEK)")
    values: dict[str, Any] = {}
    for attr, key in _URI_KEYS.items():
        text = uri.path.get(attr, uri.query.get(attr))
        if text is None:
            continue
        if attr == "type":
            if text not in _KEK_TYPES:
                raise ConfigError(
                    f"keyhsm.uri: type={text} cannot be a KEK: use type=secret-key (aes) or type=private (rsa)"
                )
            text = _KEK_TYPES[text]
        value: Any = text
        if attr == "pin-source":
            if text.startswith("|"):
                raise ConfigError("keyhsm.uri: pin-source must name a file (file:/path); commands are not run")
            path = Path(text.removeprefix("file://") if text.startswith("file://") else text.removeprefix("file:"))
            value = path if path.is_absolute() else base / path
        if key in given and given[key] is not None:
            mine = getattr(keyhsm, key)
            if key == "kek_kind":  # a former kind name means the same kind
                mine = {"aes-kwp": "aes", "rsa-oaep": "rsa"}.get(mine, mine)
            if mine != value:
                raise ConfigError(
                    f"keyhsm.{key}: differs from the {attr} in keyhsm.uri; set it in one place only"
                )
        values[key] = value
    return replace(keyhsm, **values)


def _tenant_switches(raw: Any) -> tuple[Any, dict[str, bool]]:
    """keyhsm.tenants with every {kek, per_object} value reduced to its KEK name, and the
    per-tenant per_object switches it gave."""
    if not isinstance(raw, dict):
        return raw, {}
    if "per_object_keks" in raw:
        raise ConfigError("keyhsm.per_object_keks: unknown key (set per_object, or per_object per tenant)")
    tenants = raw.get("tenants")
    if not isinstance(tenants, dict):
        return raw, {}
    names: dict[str, Any] = {}
    switch: dict[str, bool] = {}
    for group, value in tenants.items():
        if isinstance(value, dict):
            key = f"keyhsm.tenants.{group}"
            extra = sorted(set(value) - {"kek", "per_object"})
            if extra:
                raise ConfigError(f"{key}.{extra[0]}: unknown key (expected kek, per_object)")
            if not isinstance(value.get("kek"), str):
                raise ConfigError(f"{key}.kek: required, the tenant's KEK name")
            if "per_object" in value:
                if not isinstance(value["per_object"], bool):
                    raise ConfigError(f"{key}.per_object: must be true or false, got {value['per_object']!r}")
                switch[str(group)] = value["per_object"]
            value = value["kek"]
        names[group] = value
    return {**raw, "tenants": names}, switch


def _per_object_keks(keyhsm: KeyHsmSettings, switch: dict[str, bool]) -> KeyHsmSettings:
    """The per_object switch is kept per KEK name (what sealing knows): groups sharing a KEK must
    agree, and a tenant whose KEK is keyhsm.kek must agree with keyhsm.per_object."""
    effective: dict[str, tuple[bool, str]] = {keyhsm.kek: (keyhsm.per_object, "keyhsm.per_object")}
    for group, name in sorted(keyhsm.tenants.items()):
        on = switch.get(group, keyhsm.per_object)
        seen = effective.setdefault(name, (on, f"keyhsm.tenants.{group}"))
        if seen[0] != on:
            raise ConfigError(
                f"keyhsm.tenants.{group}.per_object: KEK '{name}' is per_object {str(seen[0]).lower()} by "
                f"{seen[1]}; groups sharing a KEK share the switch (give this tenant its own KEK)"
            )
    return replace(keyhsm, per_object_keks=frozenset(n for n, (on, _) in effective.items() if on))


def _resolve_sqlite(settings: Settings, base: Path) -> Settings:
    """``sqlite:///relative.db`` means relative to the config file, like every other path."""
    url = settings.database.url
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        url = prefix + str(base / url[len(prefix) :])
        db = replace(settings.database, url=url)
        return Settings(**{**settings.__dict__, "database": db})
    return settings


def _instance_defaults(settings: Settings, base: Path) -> Settings:
    """Files that live in the instance unless configured: the audit log and the Key HSM and
    database writer sockets."""
    audit, keyhsm, db = settings.audit, settings.keyhsm, settings.database
    if audit.path is None:
        audit = replace(audit, path=base / "audit.jsonl")
    if audit.key_file is None:
        audit = replace(audit, key_file=base / "audit.key")
    if audit.checkpoint_path is None:
        assert audit.path is not None
        audit = replace(audit, checkpoint_path=audit.path.with_name(audit.path.name + ".checkpoints"))
    if keyhsm.socket is None:
        keyhsm = replace(keyhsm, socket=base / "keyhsm.sock")
    if db.writer_socket is None:
        # One per node: several nodes (KMIP ports) may share an instance and its database.
        db = replace(db, writer_socket=base / f"db-writer.{settings.server.port}.sock")
    return replace(settings, audit=audit, keyhsm=keyhsm, database=db)


def config_warnings(settings: Settings) -> list[str]:
    """Insecure but accepted settings, for a startup warning in the log (never the secret itself)."""
    out = []
    k = settings.keyhsm
    t = settings.tls
    if t.profile == "legacy" or t.ciphers is not None:
        out.append(
            f"tls.{'ciphers' if t.ciphers is not None else 'profile'}: TLS 1.2 suites beyond ECDHE with AEAD "
            "are offered (CBC, or RSA key exchange without forward secrecy); for old appliances only"
        )
    if k.pin is not None:
        out.append(
            "keyhsm.pin: the token PIN is written in the config file; move it to a 0600 pin_file "
            "or KMIP_BRIDGE_TOKEN_PIN"
        )
    if k.pin_file is not None and not os.environ.get("KMIP_BRIDGE_TOKEN_PIN"):
        try:
            mode = k.pin_file.stat().st_mode
        except OSError:
            mode = 0
        if mode & 0o077:
            out.append(f"keyhsm.pin_file: {k.pin_file} is readable by others (mode {mode & 0o777:o}); chmod 600 it")
    return out
