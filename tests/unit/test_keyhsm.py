"""Key HSM against a real SoftHSM2 token: envelope round trips, AAD binding, rotation, revocation
(also from another process), thread safety, login failures."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pkcs11 import Attribute, ObjectClass

from kmip_bridge.keyhsm import (
    IntegrityError,
    KekExists,
    KekNotFound,
    KekRevoked,
    KeyHsm,
    KeyHsmError,
    Sealed,
    TokenSettings,
    TokenUnavailable,
)

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
LABEL = "kb-unit"
SPARE = "kb-spare"  # a token this process never logs in to, for a genuine wrong-PIN login
PIN = "1234"
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not os.path.exists(MODULE) or shutil.which("softhsm2-util") is None, reason="SoftHSM2 not installed"
)


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("softhsm")
    (d / "tokens").mkdir()
    conf = d / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    for label in (LABEL, SPARE):
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "5678", "--pin", PIN],
            env=env, check=True, capture_output=True,
        )
    return d


@pytest.fixture(scope="module")
def settings(token_dir: Path) -> TokenSettings:
    return TokenSettings(
        module=MODULE,
        token_label=LABEL,
        pin=PIN,
        softhsm2_conf=str(token_dir / "softhsm2.conf"),
        lock_file=str(token_dir / "token.lock"),
        session_pool_size=8,
    )


@pytest.fixture(scope="module")
def hsm(settings: TokenSettings) -> Iterator[KeyHsm]:
    h = KeyHsm(settings, "default", kek_refresh_seconds=0)
    h.check()
    h.create_kek("default", "aes-kwp")
    h.create_kek("rsa", "rsa-oaep")
    yield h
    h.close()


KINDS = {"aes-kwp": "default", "rsa-oaep": "rsa"}


@pytest.fixture(params=list(KINDS))
def kek(request: pytest.FixtureRequest) -> str:
    """Name of a ready KEK of each kind."""
    return KINDS[request.param]


def _run_other_process(settings: TokenSettings, code: str) -> str:
    """Runs `code` in a fresh interpreter with `hsm` open on the same token."""
    prelude = textwrap.dedent(
        f"""
        from kmip_bridge.keyhsm import KeyHsm, TokenSettings
        hsm = KeyHsm(TokenSettings(**{dataclasses.asdict(settings)!r}), "default")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code) + "\nhsm.close()\n"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _in_threads(n: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    if errors:
        raise errors[0]


# -- envelope ----------------------------------------------------------------------------------------


def test_round_trip_and_shape(hsm: KeyHsm, kek: str) -> None:
    material = b"top secret key material " * 8
    sealed = hsm.seal("obj-1", material, "type:2", kek_name=kek)
    info = hsm.current_kek(kek)
    # SoftHSM2: AES-GCM for aes KEKs, OAEP with SHA-1 for rsa KEKs (it refuses SHA-256)
    assert (sealed.kek_label, sealed.kek_kind) == (info.label, {"aes": "aes-gcm", "rsa": "rsa-oaep-sha1"}[info.kind])
    assert len(sealed.nonce) == 12
    assert len(sealed.ciphertext) == len(material) + 16
    if info.kind == "aes":
        assert len(sealed.wrap_nonce) == 12 and len(sealed.wrapped_dek) == 32 + 16
    else:
        assert sealed.wrap_nonce == b"" and len(sealed.wrapped_dek) == 384
    assert material not in sealed.ciphertext and b"top secret" not in sealed.ciphertext
    assert hsm.open("obj-1", sealed, "type:2") == material
    assert hsm.open("obj-1", hsm.seal("obj-1", b"", kek_name=kek)) == b""
    big = os.urandom(1 << 20)
    assert hsm.open("o", hsm.seal("o", big, kek_name=kek)) == big


def test_fresh_dek_and_nonces_per_seal(hsm: KeyHsm, kek: str) -> None:
    a, b = hsm.seal("same", b"same", kek_name=kek), hsm.seal("same", b"same", kek_name=kek)
    assert a.ciphertext != b.ciphertext and a.nonce != b.nonce and a.wrapped_dek != b.wrapped_dek


def test_sealed_blob_is_bound_to_object_id_and_context(hsm: KeyHsm, kek: str) -> None:
    sealed = hsm.seal("obj-a", b"material of a", "ctx", kek_name=kek)
    with pytest.raises(IntegrityError):
        hsm.open("obj-b", sealed, "ctx")
    with pytest.raises(IntegrityError):
        hsm.open("obj-a", sealed, "other-ctx")
    assert hsm.open("obj-a", sealed, "ctx") == b"material of a"


def test_swapped_wrapped_dek_fails(hsm: KeyHsm, kek: str) -> None:
    a = hsm.seal("obj-a", b"A" * 32, kek_name=kek)
    b = hsm.seal("obj-b", b"B" * 32, kek_name=kek)
    mixed = dataclasses.replace(b, wrapped_dek=a.wrapped_dek, wrap_nonce=a.wrap_nonce)
    with pytest.raises(IntegrityError):
        hsm.open("obj-b", mixed)
    with pytest.raises(IntegrityError):  # a's whole record copied onto b
        hsm.open("obj-b", a)


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def test_tampering_is_detected(hsm: KeyHsm, kek: str) -> None:
    sealed = hsm.seal("obj", b"material" * 4, kek_name=kek)
    tampered = [
        dataclasses.replace(sealed, ciphertext=_flip(sealed.ciphertext, 0)),
        dataclasses.replace(sealed, ciphertext=_flip(sealed.ciphertext, len(sealed.ciphertext) - 1)),
        dataclasses.replace(sealed, nonce=_flip(sealed.nonce, 3)),
        dataclasses.replace(sealed, wrapped_dek=_flip(sealed.wrapped_dek, 5)),
        dataclasses.replace(sealed, wrapped_dek=sealed.wrapped_dek[:-1]),
        dataclasses.replace(sealed, ciphertext=b""),
        dataclasses.replace(sealed, kek_kind="des"),
        dataclasses.replace(sealed, kek_label="not a label"),
        dataclasses.replace(sealed, kek_kind="rsa-oaep-sha1" if sealed.kek_kind == "aes-gcm" else "aes-gcm"),
        dataclasses.replace(sealed, kek_kind="rsa-oaep" if sealed.kek_kind == "aes-gcm" else "aes-kwp"),
        dataclasses.replace(sealed, kek_kind="aes-wrap" if sealed.kek_kind == "aes-gcm" else "aes-wrap-pad"),
    ]
    if sealed.kek_kind == "aes-gcm":
        tampered.append(dataclasses.replace(sealed, wrap_nonce=_flip(sealed.wrap_nonce, 0)))
    for bad in tampered:
        with pytest.raises(IntegrityError):
            hsm.open("obj", bad)
    if sealed.kek_kind == "rsa-oaep-sha1":  # relabelled to the OAEP hash SoftHSM2 refuses: never opens
        with pytest.raises((IntegrityError, TokenUnavailable), match=r"integrity|ArgumentsBad"):
            hsm.open("obj", dataclasses.replace(sealed, kek_kind="rsa-oaep-sha256"))
    assert hsm.open("obj", sealed) == b"material" * 4


def test_format_2_material_is_bound_to_the_object_and_the_wrap_to_object_and_kek(hsm: KeyHsm, kek: str) -> None:
    sealed = hsm.seal("obj", b"material", "ctx", kek_name=kek)
    assert sealed.format == 2
    info = hsm.current_kek(kek)
    if info.kind == "rsa":  # the OAEP plaintext carries the binding after the DEK
        assert len(sealed.wrapped_dek) == 384
    # Claiming another KEK label, or downgrading to format 1, fails before or at the tag check.
    for bad in (dataclasses.replace(sealed, format=1), dataclasses.replace(sealed, format=3),
                dataclasses.replace(sealed, kek_label=info.name + "-v99")):
        with pytest.raises((IntegrityError, KekRevoked)):
            hsm.open("obj", bad, "ctx")
    other = hsm.seal("other", b"material", "ctx", kek_name=kek)
    for moved in (dataclasses.replace(other, wrapped_dek=sealed.wrapped_dek, wrap_nonce=sealed.wrap_nonce),
                  dataclasses.replace(sealed, wrapped_dek=other.wrapped_dek, wrap_nonce=other.wrap_nonce)):
        with pytest.raises(IntegrityError):
            hsm.open("other", moved, "ctx")
        with pytest.raises(IntegrityError):
            hsm.open("obj", moved, "ctx")


@pytest.mark.parametrize("kind", ["aes-kwp", "rsa-oaep"])
def test_rewrap_moves_only_the_dek_and_converts_format_1_once(hsm: KeyHsm, kind: str) -> None:
    from tests.legacy_envelope import seal_v1

    name = f"rw{kind[:3]}"
    hsm.create_kek(name, kind)
    new_format = hsm.seal("obj-2", b"format 2 material", "ctx", kek_name=name)
    old_format = seal_v1(hsm, "obj-1", b"format 1 material", "ctx", kek_name=name)
    assert hsm.open("obj-1", old_format, "ctx") == b"format 1 material"  # old rows keep opening
    assert hsm.rewrap("obj-2", new_format, "ctx") is new_format  # already current: unchanged
    hsm.rotate_kek(name)

    moved = hsm.rewrap("obj-2", new_format, "ctx")
    assert (moved.kek_label, moved.format) == (f"{name}-v2", 2)
    assert (moved.nonce, moved.ciphertext) == (new_format.nonce, new_format.ciphertext)  # byte for byte
    assert moved.wrapped_dek != new_format.wrapped_dek
    converted = hsm.rewrap("obj-1", old_format, "ctx")
    assert (converted.kek_label, converted.format) == (f"{name}-v2", 2)
    assert converted.ciphertext != old_format.ciphertext  # re-sealed: new DEK, new nonce

    # A rewrapped DEK stays bound to its object; a record whose parts do not belong together is
    # refused by rewrap itself, while the old KEK still exists.
    with pytest.raises(IntegrityError):
        hsm.open("obj-1", moved, "ctx")
    with pytest.raises(IntegrityError):
        hsm.rewrap("obj-2", dataclasses.replace(new_format, ciphertext=_flip(new_format.ciphertext, 0)), "ctx")
    hsm.revoke_kek(f"{name}-v1")
    assert hsm.open("obj-2", moved, "ctx") == b"format 2 material"
    assert hsm.open("obj-1", converted, "ctx") == b"format 1 material"
    with pytest.raises(KekRevoked):
        hsm.open("obj-2", new_format, "ctx")


def test_kek_objects_are_sensitive_and_not_extractable(hsm: KeyHsm) -> None:
    with hsm._token.session() as ps:
        for label, cls in (("default-v1", ObjectClass.SECRET_KEY), ("rsa-v1", ObjectClass.PRIVATE_KEY)):
            (key,) = ps.session.get_objects({Attribute.LABEL: label, Attribute.CLASS: cls})
            assert key[Attribute.ID] == label.encode()
            assert key[Attribute.TOKEN] and key[Attribute.PRIVATE] and key[Attribute.SENSITIVE]
            assert not key[Attribute.EXTRACTABLE]
        (pub,) = ps.session.get_objects({Attribute.LABEL: "rsa-v1", Attribute.CLASS: ObjectClass.PUBLIC_KEY})
        assert pub[Attribute.TOKEN] and pub[Attribute.ID] == b"rsa-v1"


# -- KEK management ----------------------------------------------------------------------------------


def test_kek_management_errors(hsm: KeyHsm) -> None:
    with pytest.raises(KekExists):
        hsm.create_kek("default", "aes-kwp")
    with pytest.raises(KeyHsmError, match="invalid KEK kind"):
        hsm.create_kek("fresh", "des")
    with pytest.raises(KeyHsmError, match="invalid KEK name"):
        hsm.create_kek("bad-name", "aes-kwp")
    with pytest.raises(KekNotFound):
        hsm.rotate_kek("nothing")
    with pytest.raises(KekNotFound):
        hsm.revoke_kek("nothing-v1")
    with pytest.raises(KekNotFound):
        hsm.revoke_kek("nothing")
    with pytest.raises(KekNotFound, match="no version of KEK 'nothing'"):
        hsm.current_kek("nothing")
    with pytest.raises(KekNotFound):
        hsm.seal("x", b"x", kek_name="nothing")


def test_rotate_then_revoke_in_process(hsm: KeyHsm) -> None:
    v1 = hsm.create_kek("rot", "aes-kwp")
    old = hsm.seal("old", b"old material", kek_name="rot")
    v2 = hsm.rotate_kek("rot")
    assert (v1.label, v2.label, v2.version, v2.kind) == ("rot-v1", "rot-v2", 2, "aes")
    assert hsm.current_kek("rot") == v2
    new = hsm.seal("new", b"new material", kek_name="rot")
    assert new.kek_label == "rot-v2"
    assert hsm.open("old", old) == b"old material"
    assert [k.label for k in hsm.list_keks() if k.name == "rot"] == ["rot-v1", "rot-v2"]

    assert hsm.revoke_kek("rot-v1") == ["rot-v1"]
    with pytest.raises(KekRevoked, match="irretrievable because KEK 'rot-v1' was revoked"):
        hsm.open("old", old)
    assert hsm.open("new", new) == b"new material"
    with pytest.raises(KekNotFound):
        hsm.revoke_kek("rot-v1")
    hsm.rotate_kek("rot")
    assert hsm.revoke_kek("rot") == ["rot-v2", "rot-v3"]
    assert not [k for k in hsm.list_keks() if k.name == "rot"]
    with pytest.raises(KekRevoked):
        hsm.open("new", new)


def test_current_kek_is_cached_for_the_refresh_period(settings: TokenSettings, hsm: KeyHsm) -> None:
    hsm.create_kek("ttl", "aes-kwp")
    with KeyHsm(settings, "ttl", kek_refresh_seconds=3600) as cached:
        assert cached.current_kek().label == "ttl-v1"
        hsm.rotate_kek("ttl")
        assert cached.current_kek().label == "ttl-v1"  # another process's rotation is seen later
        assert hsm.current_kek("ttl").label == "ttl-v2"
        sealed = cached.seal("o", b"still fine")
        assert sealed.kek_label == "ttl-v1" and hsm.open("o", sealed) == b"still fine"
        # A revoked current version is noticed at once: never seal under a destroyed KEK.
        hsm.revoke_kek("ttl-v1")
        assert cached.seal("o", b"moved on").kek_label == "ttl-v2"


@pytest.mark.parametrize("kind", ["aes-kwp", "rsa-oaep"])
def test_revoke_from_another_process(settings: TokenSettings, kind: str) -> None:
    name = f"xp_{kind[:3]}"
    with KeyHsm(settings, name, kek_refresh_seconds=3600) as hsm:
        hsm.create_kek(name, kind)
        old = [hsm.seal(f"old-{i}", f"old {i}".encode()) for i in range(8)]

        def warm(i: int) -> None:  # several pooled sessions now cache the v1 handle
            for j in range(8):
                assert hsm.open(f"old-{j}", old[j]) == f"old {j}".encode()

        _in_threads(8, warm)
        hsm.rotate_kek(name)
        new = hsm.seal("new", b"new material", kek_name=name)
        assert new.kek_label == f"{name}-v2"

        out = _run_other_process(settings, f"print(hsm.revoke_kek('{name}-v1'))")
        assert f"{name}-v1" in out

        def opens(i: int) -> None:
            with pytest.raises(KekRevoked, match=f"KEK '{name}-v1' was revoked"):
                hsm.open(f"old-{i}", old[i])
            assert hsm.open("new", new) == b"new material"

        _in_threads(8, opens)
        assert [k.label for k in hsm.list_keks() if k.name == name] == [f"{name}-v2"]

        # The current version (cached for an hour here) revoked elsewhere: sealing must not use it.
        _run_other_process(settings, f"hsm.revoke_kek('{name}-v2')")
        with pytest.raises(KekNotFound):
            hsm.seal("newer", b"x")
        with pytest.raises(KekRevoked):
            hsm.open("new", new)


# -- concurrency ----------------------------------------------------------------------------------------


def _hammer(hsm: KeyHsm, kek: str, threads: int, rounds: int) -> None:
    def work(t: int) -> None:
        for i in range(rounds):
            oid = f"t{t}-{i}"
            material = f"{oid} material".encode() * 3
            sealed = hsm.seal(oid, material, "ctx", kek_name=kek)
            assert hsm.open(oid, sealed, "ctx") == material

    _in_threads(threads, work)


def test_threads_hammer_aes(hsm: KeyHsm) -> None:
    _hammer(hsm, "default", threads=8, rounds=150)  # 2400 token operations


def test_threads_hammer_rsa(hsm: KeyHsm) -> None:
    _hammer(hsm, "rsa", threads=8, rounds=12)


def test_pool_smaller_than_thread_count(settings: TokenSettings, hsm: KeyHsm) -> None:
    with KeyHsm(dataclasses.replace(settings, session_pool_size=2), "default") as small:
        _hammer(small, "default", threads=6, rounds=30)


# -- login and lifecycle -------------------------------------------------------------------------------


def test_wrong_pin(settings: TokenSettings, hsm: KeyHsm) -> None:
    with pytest.raises(TokenUnavailable, match="PIN is incorrect"):
        KeyHsm(dataclasses.replace(settings, token_label=SPARE, pin="0000"), "default")
    # The process is already logged in to LABEL, so a different PIN cannot be checked: refused.
    with pytest.raises(TokenUnavailable, match="another PIN"):
        KeyHsm(dataclasses.replace(settings, pin="0000"), "default")
    hsm.check()


def test_missing_token_and_module(settings: TokenSettings) -> None:
    with pytest.raises(TokenUnavailable, match="no token 'no-such-token'"):
        KeyHsm(dataclasses.replace(settings, token_label="no-such-token"), "default")
    with pytest.raises(TokenUnavailable, match="does not exist"):
        KeyHsm(dataclasses.replace(settings, module="/nonexistent/libpkcs11.so"), "default")


def test_other_softhsm2_conf_refused_while_logged_in(settings: TokenSettings, hsm: KeyHsm) -> None:
    # SoftHSM2 reads SOFTHSM2_CONF in C_Initialize only; switching would cut off the live login.
    other = dataclasses.replace(settings, softhsm2_conf=settings.softhsm2_conf + ".other")
    with pytest.raises(TokenUnavailable, match="cannot switch"):
        KeyHsm(other, "default")
    hsm.check()


def test_spare_token_login_and_close(settings: TokenSettings) -> None:
    with KeyHsm(dataclasses.replace(settings, token_label=SPARE), "default") as spare:
        spare.check()
        with pytest.raises(KekNotFound):
            spare.current_kek()


def test_closing_one_instance_keeps_the_others_logged_in(settings: TokenSettings, hsm: KeyHsm) -> None:
    sealed = hsm.seal("obj", b"material")
    other = KeyHsm(settings, "default")
    assert other.open("obj", sealed) == b"material"
    other.close()
    other.close()  # idempotent
    with pytest.raises(TokenUnavailable, match="closed"):
        other.open("obj", sealed)
    hsm.check()
    assert hsm.open("obj", sealed) == b"material"


def test_lost_login_is_restored_not_reported_as_revoked(hsm: KeyHsm) -> None:
    sealed = hsm.seal("obj", b"material")
    login = hsm._token._login
    assert login.library.raw.logout(login.session.handle) == 0  # as if some other code logged out
    assert not login.logged_in()
    assert hsm.open("obj", sealed) == b"material"
    assert login.logged_in()
    hsm.check()


def test_forked_child_initialises_its_own_library(settings: TokenSettings, hsm: KeyHsm) -> None:
    sealed = hsm.seal("obj", b"material")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            with KeyHsm(settings, "default") as child:
                code = 0 if child.open("obj", sealed) == b"material" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert hsm.open("obj", sealed) == b"material"


def test_sealed_is_a_plain_record() -> None:
    s = Sealed("default-v1", "aes-kwp", b"n" * 12, b"c" * 20, b"w" * 48, b"i" * 12, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.kek_label = "x"  # type: ignore[misc]
