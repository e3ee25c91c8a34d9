"""PKCS #11 URIs (RFC 7512) and their mapping onto keyhsm settings; the production example."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from kmip_bridge.config import ConfigError, load
from kmip_bridge.keyhsm.uri import Pkcs11UriError, parse

REPO = Path(__file__).resolve().parents[2]


# -- the parser ----------------------------------------------------------------------------------------
def test_path_and_query_attributes() -> None:
    uri = parse("pkcs11:token=kmip-bridge;object=default;type=secret-key"
                "?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pin")
    assert uri.token == "kmip-bridge"
    assert uri.object == "default"
    assert uri.type == "secret-key"
    assert uri.module_path == "/usr/lib/softhsm/libsofthsm2.so"
    assert uri.pin_source == "file:/etc/pin"
    assert uri.pin_value is None


def test_rfc_7512_examples() -> None:
    assert parse("pkcs11:").path == {}
    uri = parse("pkcs11:object=my-pubkey;type=public")
    assert (uri.object, uri.type) == ("my-pubkey", "public")
    uri = parse("pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;"
                "model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=")
    assert uri.token == "The Software PKCS#11 Softtoken"
    assert uri.path["manufacturer"] == "Snake Oil, Inc."
    assert uri.path["serial"] == ""
    assert uri.id == bytes.fromhex("69953e5cf4bdec91")
    uri = parse("pkcs11:token=Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.?pin-value=the-pin")
    assert uri.pin_value == "the-pin"
    assert "the-pin" not in repr(uri)
    uri = parse("pkcs11:object=%E2%82%AC?module-name=mypkcs11")
    assert uri.object == "\u20ac"
    assert parse("pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;object=my-certificate;type=cert").token \
        == "A name with a substring %;"
    assert parse("PKCS11:token=x").token == "x"  # the scheme is case-insensitive
    assert parse("pkcs11:library-version=7.1;slot-id=3;x-vendor=yes").path["library-version"] == "7.1"
    # '&' may appear in a path value; '/', '?' and '|' in a query value.
    assert parse("pkcs11:object=a&b").object == "a&b"
    assert parse("pkcs11:token=t?pin-source=|/usr/bin/pin?x").pin_source == "|/usr/bin/pin?x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("token=x", "must start with 'pkcs11:'"),
        ("pkcs11:tokn=x", "unknown path attribute 'tokn'"),
        ("pkcs11:token=x;token=y", "'token' appears more than once"),
        ("pkcs11:token=x;", "is not NAME=VALUE"),
        ("pkcs11:token", "is not NAME=VALUE"),
        ("pkcs11:token=my token", "a space must be percent-encoded (as %20)"),
        ("pkcs11:object=a/b", "'/' must be percent-encoded (as %2F)"),
        ("pkcs11:object=100%", "'%' must be percent-encoded (as %25)"),
        ("pkcs11:object=%zz", "'%' must be percent-encoded"),
        ("pkcs11:object=\u20ac", "non-ASCII characters must be percent-encoded"),
        ("pkcs11:object=%FF%FE", "not UTF-8 text"),
        ("pkcs11:type=secret", "type=secret: must be one of"),
        ("pkcs11:slot-id=one", "slot-id=one: must be a decimal number"),
        ("pkcs11:library-version=v7", "must be M or M.N"),
        ("pkcs11:token=x?pin-value=a&pin-source=/p", "exclude each other"),
        ("pkcs11:token=x?module-path=lib.so", "must be an absolute path"),
        ("pkcs11:token=x?pinsource=/p", "unknown query attribute 'pinsource'"),
        ("pkcs11:?token=x", "'token' is a path attribute"),
        ("pkcs11:token=x?pin-value=a;b", "';' must be percent-encoded"),
        ("pkcs11:token=x#frag", "no fragment"),
    ],
)
def test_refusals_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(Pkcs11UriError, match=None) as info:
        parse(text)
    assert message in str(info.value)


# -- keyhsm.uri in a config ------------------------------------------------------------------------------
def _config(tmp_path: Path, keyhsm: dict[str, object]) -> Path:
    cfg = {"server": {}, "tls": {"ca": "ca.pem", "cert": "c.pem", "key": "k.pem"},
           "keyhsm": keyhsm, "database": {"url": "sqlite:///x.db"}}
    path = tmp_path / "server.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_uri_sets_token_kek_kind_module_and_pin_file(tmp_path: Path) -> None:
    (tmp_path / "token.pin").write_text("1234\n")
    settings = load(_config(tmp_path, {
        "uri": "pkcs11:token=hsm%20one;object=payments;type=private"
               "?module-path=/opt/hsm/libp11.so&pin-source=token.pin",
    }))
    k = settings.keyhsm
    assert (k.token_label, k.kek, k.kek_kind, k.module) == ("hsm one", "payments", "rsa", "/opt/hsm/libp11.so")
    assert k.pin_file == tmp_path / "token.pin"  # relative: next to the config, like every path
    assert k.read_pin() == "1234"
    k = load(_config(tmp_path, {"uri": "pkcs11:token=t?pin-source=file:///etc/kb.pin"})).keyhsm
    assert k.pin_file == Path("/etc/kb.pin")
    assert k.kek == "default" and k.kek_kind == "aes"  # not named: the defaults
    assert k.token_serial is None
    k = load(_config(tmp_path, {"uri": "pkcs11:token=t;serial=0d18ba6ac1c2f73?pin-value=1"})).keyhsm
    assert (k.token_label, k.token_serial) == ("t", "0d18ba6ac1c2f73")  # picks one of same-labelled tokens
    k = load(_config(tmp_path, {"uri": "pkcs11:token=t?pin-value=4321"})).keyhsm
    assert k.read_pin() == "4321"
    assert "4321" not in repr(k)  # settings may end up in a log line or a traceback


@pytest.mark.parametrize(
    ("keyhsm", "message"),
    [
        ({"uri": "pkcs11:object=default"}, "keyhsm.uri: needs token=LABEL"),
        ({"uri": "pkcs11:token=t;type=cert"}, "type=cert cannot be a KEK"),
        ({"uri": "pkcs11:token=t;slot-id=42"}, "keyhsm.uri: 'slot-id' is not supported"),
        ({"uri": "pkcs11:token=t;serial=42", "token_serial": "43"}, "keyhsm.token_serial: differs from the serial"),
        ({"uri": "pkcs11:token=t;id=%01"}, "keyhsm.uri: 'id' is not supported"),
        ({"uri": "pkcs11:token=t?module-name=softhsm2"}, "'module-name' is not supported"),
        ({"uri": "pkcs11:token=t?pin-source=|/bin/echo"}, "pin-source must name a file"),
        ({"uri": "pkcs11:token=a", "token_label": "b"}, "keyhsm.token_label: differs from the token in keyhsm.uri"),
        ({"uri": "pkcs11:token=a;object=k", "kek": "other"}, "keyhsm.kek: differs from the object"),
        ({"uri": "pkcs11:token=a;type=secret-key", "kek_kind": "rsa"}, "keyhsm.kek_kind: differs"),
        ({"uri": "pkcs11:token=a my"}, "keyhsm.uri: token: a space must be percent-encoded"),
    ],
)
def test_uri_config_errors_say_what_to_fix(tmp_path: Path, keyhsm: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(_config(tmp_path, keyhsm))
    assert message in str(info.value)


def test_uri_agreeing_with_explicit_keys_is_accepted(tmp_path: Path) -> None:
    k = load(_config(tmp_path, {"uri": "pkcs11:token=a;object=k", "token_label": "a", "kek": "k"})).keyhsm
    assert (k.token_label, k.kek) == ("a", "k")


# -- conf/production.example.yaml ----------------------------------------------------------------------
_PREFIXES = ("/etc/kmip-bridge/", "/var/lib/kmip-bridge/", "/run/kmip-bridge/", "/opt/hsm/")


def test_production_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped example, through the real loader, with its absolute paths moved under a temp
    folder (and those files made), so that it cannot rot."""
    monkeypatch.delenv("KMIP_BRIDGE_DATABASE_URL", raising=False)
    monkeypatch.delenv("KMIP_BRIDGE_TOKEN_PIN", raising=False)
    text = (REPO / "conf" / "production.example.yaml").read_text()
    for prefix in _PREFIXES:
        text = text.replace(prefix, f"{tmp_path}{prefix}")
    for folder in ("etc/kmip-bridge/tls", "etc/kmip-bridge/policies", "var/lib/kmip-bridge", "run/kmip-bridge",
                   "opt/hsm/lib"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    pin = tmp_path / "etc/kmip-bridge/token.pin"
    pin.write_text("24680\n")
    pin.chmod(0o600)
    config = tmp_path / "etc/kmip-bridge/server.yaml"
    config.write_text(text)

    settings = load(config)
    k = settings.keyhsm
    assert (k.token_label, k.kek, k.kek_kind) == ("kmip-bridge", "default", "aes")
    assert k.module == f"{tmp_path}/opt/hsm/lib/libvendorpkcs11.so"
    assert k.read_pin() == "24680"
    assert settings.database.url.startswith("postgresql://kmip_bridge@")
    assert settings.server.host == "0.0.0.0" and settings.metrics.enabled
    assert settings.logging.format == "json"
    # Every path the example names was under one of the patched prefixes: none escaped the test.
    paths = [v for section in (settings.tls, settings.keyhsm, settings.policy, settings.audit)
             for v in dataclasses.asdict(section).values() if isinstance(v, Path)]
    assert paths and all(str(p).startswith(str(tmp_path)) for p in paths), paths
