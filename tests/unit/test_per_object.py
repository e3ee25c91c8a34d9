"""Per-object keys in the Key HSM (real SoftHSM2 token), their labels, the config switch, and
Store.after_commit (what Destroy uses to destroy the key only once the row's change is durable)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from pkcs11 import exceptions as p11e

from kmip_bridge.config import ConfigError, load
from kmip_bridge.keyhsm import IntegrityError, KekRevoked, KeyHsm, TokenSettings, per_object
from kmip_bridge.store import Store

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
LABEL = "kb-per-object"
PIN = "1234"

softhsm = pytest.mark.skipif(
    not os.path.exists(MODULE) or shutil.which("softhsm2-util") is None, reason="SoftHSM2 not installed"
)


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyHsm]:
    d = tmp_path_factory.mktemp("softhsm")
    (d / "tokens").mkdir()
    conf = d / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", LABEL, "--so-pin", "5678", "--pin", PIN],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)}, check=True, capture_output=True,
    )
    settings = TokenSettings(MODULE, LABEL, PIN, str(conf), str(d / "token.lock"))
    h = KeyHsm(settings, "default", kek_refresh_seconds=0, per_object_keks=frozenset({"own"}))
    h.create_kek("default", "aes-kwp")
    h.create_kek("own", "aes-kwp")  # exists, but its objects get per-object keys instead
    yield h
    h.close()


@softhsm
def test_seal_open_destroy(hsm: KeyHsm) -> None:
    shared = hsm.seal("uid-shared", b"under the KEK", "ctx")
    assert (shared.kek_label, shared.kek_kind) == ("default-v1", "aes-gcm")  # the mechanism SoftHSM2 gives
    own = hsm.seal("uid-own", b"under its own key", "ctx", kek_name="own")
    parsed = per_object.parse_label(own.kek_label)
    assert own.kek_kind == "object-aes" and parsed is not None and parsed.uid == "uid-own"
    assert own.kek_label in {k.label for k in hsm.list_object_keys()}
    assert not any(k.label == own.kek_label for k in hsm.list_keks())  # never a KEK
    assert hsm.open("uid-own", own, "ctx") == b"under its own key"
    assert hsm.rewrap("uid-own", own, "ctx") is own  # nothing to move to
    # The record is bound to its object: moved to another id, or with another context, it fails.
    with pytest.raises(IntegrityError):
        hsm.open("uid-other", own, "ctx")
    with pytest.raises(IntegrityError):
        hsm.open("uid-own", own, "other-ctx")
    # Another object's key cannot open it, even with the record's label rewritten to match.
    other = hsm.seal("uid-own", b"x", "ctx", kek_name="own")
    with pytest.raises(IntegrityError):
        hsm.open("uid-own", dataclasses.replace(own, kek_label=other.kek_label), "ctx")

    assert hsm.destroy_object_key(own.kek_label) is True
    assert hsm.destroy_object_key(own.kek_label) is False  # idempotent (the sweep may race Destroy)
    with pytest.raises(KekRevoked) as err:  # the cached handle went stale: found missing, reported
        hsm.open("uid-own", own, "ctx")
    assert isinstance(err.value, per_object.ObjectKeyDestroyed)
    assert f"per-object key '{own.kek_label}'" in str(err.value)
    assert hsm.open("uid-shared", shared, "ctx") == b"under the KEK"  # nothing else affected
    assert hsm.open("uid-own", other, "ctx") == b"x"
    with pytest.raises(Exception, match="not the label of a per-object key"):
        hsm.destroy_object_key("default-v1")  # never a KEK by this path


class _Full:
    def __init__(self, session: object) -> None:
        self._session = session

    def generate_key(self, *args: object, **kwargs: object) -> None:
        raise p11e.DeviceMemory()

    def __getattr__(self, name: str) -> object:
        return getattr(self._session, name)


@softhsm
def test_token_full_is_a_precise_error_and_leaves_nothing(hsm: KeyHsm, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {k.label for k in hsm.list_object_keys()}

    real_admin = hsm._token.admin

    @contextmanager
    def full_token() -> Iterator[object]:
        """The admin session of a token with no room left (SoftHSM2 never fills up on its own)."""
        with real_admin() as session:
            yield _Full(session)

    monkeypatch.setattr(hsm._token, "admin", full_token)
    with pytest.raises(per_object.TokenFull) as err:
        hsm.seal("uid-full", b"m", "ctx", kek_name="own")
    assert "no room for the per-object key 'obj.uid-full." in str(err.value) and "DeviceMemory" in str(err.value)
    monkeypatch.undo()
    assert {k.label for k in hsm.list_object_keys()} == before


def test_labels() -> None:
    label = per_object.make_label("4f1c-uid", now=1700000000)
    parsed = per_object.parse_label(label)
    assert parsed is not None and (parsed.uid, parsed.created) == ("4f1c-uid", 1700000000)
    assert per_object.make_label("4f1c-uid", now=1) != per_object.make_label("4f1c-uid", now=1)  # random tail
    for bad in ("default-v1", "obj.x.t1", "obj.x.t1.zzzzzzzz", "obj..t1.0123abcd", "obj.a b.t1.0123abcd"):
        assert per_object.parse_label(bad) is None, bad
    with pytest.raises(Exception, match="cannot name a per-object key"):
        per_object.make_label("has space")


BASE = {
    "tls": {"ca": "pki/ca.pem", "cert": "pki/s.pem", "key": "/abs/s.key"},
    "keyhsm": {"pin_file": "token/user.pin"},
    "database": {"url": "sqlite:///data.db"},
}


def _load(tmp_path: Path, **keyhsm: object):  # type: ignore[no-untyped-def]
    cfg = yaml.safe_load(yaml.safe_dump(BASE))
    cfg["keyhsm"].update(keyhsm)
    p = tmp_path / "server.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return load(p).keyhsm


def test_config_switch(tmp_path: Path) -> None:
    assert _load(tmp_path).per_object_keks == frozenset()
    assert _load(tmp_path, per_object=True).per_object_keks == {"default"}
    k = _load(tmp_path, tenants={"a": "ka", "b": {"kek": "kb", "per_object": True}, "c": {"kek": "kc"}})
    assert k.tenants == {"a": "ka", "b": "kb", "c": "kc"} and k.per_object_keks == {"kb"}
    k = _load(tmp_path, per_object=True, tenants={"a": "ka", "b": {"kek": "kb", "per_object": False}})
    assert k.per_object_keks == {"default", "ka"}


@pytest.mark.parametrize(
    ("keyhsm", "message"),
    [
        ({"per_object": "yes"}, "keyhsm.per_object: must be true or false"),
        ({"tenants": {"b": {"kek": "kb", "per_object": 1}}}, "keyhsm.tenants.b.per_object: must be true or false"),
        ({"tenants": {"b": {"per_object": True}}}, "keyhsm.tenants.b.kek: required"),
        ({"tenants": {"b": {"kek": "kb", "shred": True}}}, "keyhsm.tenants.b.shred: unknown key"),
        ({"tenants": {"a": "k", "b": {"kek": "k", "per_object": True}}}, "groups sharing a KEK share the switch"),
        ({"tenants": {"b": {"kek": "default", "per_object": True}}}, "keyhsm.tenants.b.per_object: KEK 'default'"),
        ({"per_object_keks": ["x"]}, "keyhsm.per_object_keks: unknown key"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, keyhsm: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        _load(tmp_path, **keyhsm)


def test_after_commit_runs_only_after_a_commit(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    ran: list[str] = []
    try:
        with store.unit_of_work():
            store.after_commit(lambda: ran.append("committed"))
            assert ran == []  # not while the transaction is open
        assert ran == ["committed"]
        with pytest.raises(RuntimeError), store.unit_of_work():
            store.after_commit(lambda: ran.append("rolled back"))
            raise RuntimeError("undo")
        assert ran == ["committed"]
        store.after_commit(lambda: ran.append("no unit"))  # outside one: each write has committed
        assert ran == ["committed", "no unit"]
    finally:
        store.close()
