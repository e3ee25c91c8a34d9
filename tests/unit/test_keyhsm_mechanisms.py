"""Wrap mechanisms against a real SoftHSM2 token: each one round trips and is recorded per row, key
wraps bind the object (a moved blob fails), rows keep opening when the choice changes, and a token
or KEK that cannot do a mechanism is refused with the reason."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkcs11 import KeyType, MechanismFlag

from kmip_bridge.keyhsm import IntegrityError, KeyHsm, KeyHsmError, TokenSettings, mechanisms
from tests.legacy_envelope import seal_v1, seal_v2_legacy_kind

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
LABEL = "kb-mech"
PIN = "1234"

pytestmark = pytest.mark.skipif(
    not os.path.exists(MODULE) or shutil.which("softhsm2-util") is None, reason="SoftHSM2 not installed"
)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> TokenSettings:
    d = tmp_path_factory.mktemp("softhsm-mech")
    (d / "tokens").mkdir()
    conf = d / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", LABEL, "--so-pin", "5678", "--pin", PIN],
        env={**os.environ, "SOFTHSM2_CONF": str(conf)}, check=True, capture_output=True,
    )
    return TokenSettings(MODULE, LABEL, PIN, softhsm2_conf=str(conf), lock_file=str(Path(d) / "lock"))


@pytest.fixture(scope="module")
def hsms(settings: TokenSettings) -> Iterator[dict[str, KeyHsm]]:
    """One KeyHsm per forced mechanism (keyhsm.wrap_mechanisms: [name]), plus 'auto'."""
    made = {name: KeyHsm(settings, "default", 0, (name,)) for name in mechanisms.WRITABLE}
    made["auto"] = KeyHsm(settings, "default", 0)
    made["auto"].create_kek("aeskek", "aes")
    made["auto"].create_kek("rsakek", "rsa")
    yield made
    for h in made.values():
        h.close()


def _kek(name: str) -> str:
    return "rsakek" if name.startswith("rsa") else "aeskek"


# SoftHSM2 2.6 offers these (no CKM_AES_KEY_WRAP_KWP; OAEP with SHA-1 only).
WORKING = ["aes-gcm", "aes-wrap-pad", "aes-wrap", "rsa-oaep-sha1"]
KEY_WRAPS = ["aes-wrap-pad", "aes-wrap"]


@pytest.mark.parametrize("name", WORKING)
def test_each_mechanism_round_trips_and_is_recorded_per_row(hsms: dict[str, KeyHsm], name: str) -> None:
    hsm = hsms[name]
    sealed = hsm.seal("obj", b"material " * 5, "ctx", kek_name=_kek(name))
    assert sealed.kek_kind == name
    assert len(sealed.wrap_nonce) == mechanisms.ALL[name].nonce_bytes
    assert hsm.open("obj", sealed, "ctx") == b"material " * 5
    # Any KeyHsm opens it: the row says how it was wrapped, whatever this one would choose.
    assert hsms["auto"].open("obj", sealed, "ctx") == b"material " * 5


def test_auto_picks_gcm_and_oaep_sha1_on_softhsm2(hsms: dict[str, KeyHsm]) -> None:
    assert hsms["auto"].seal("o", b"x", kek_name="aeskek").kek_kind == "aes-gcm"
    assert hsms["auto"].seal("o", b"x", kek_name="rsakek").kek_kind == "rsa-oaep-sha1"


@pytest.mark.parametrize("name", KEY_WRAPS)
def test_key_wrap_binds_the_object_a_moved_blob_fails(hsms: dict[str, KeyHsm], name: str) -> None:
    hsm = hsms[name]
    a = hsm.seal("obj-a", b"A" * 32, "ctx", kek_name="aeskek")
    b = hsm.seal("obj-b", b"B" * 32, "ctx", kek_name="aeskek")
    # The binding inside the wrap is what refuses a's wrapped DEK on b (before any material check).
    with pytest.raises(IntegrityError, match="belongs to another object"):
        hsm._unwrap("obj-b", dataclasses.replace(b, wrapped_dek=a.wrapped_dek), "ctx")
    with pytest.raises(IntegrityError, match="belongs to another object"):
        hsm._unwrap("obj-a", a, "other-ctx")
    for moved, target in ((dataclasses.replace(b, wrapped_dek=a.wrapped_dek), "obj-b"), (a, "obj-b")):
        with pytest.raises(IntegrityError):
            hsm.open(target, moved, "ctx")
    flipped = bytearray(a.wrapped_dek)
    flipped[3] ^= 1
    with pytest.raises(IntegrityError):  # the key wrap's own integrity check
        hsm.open("obj-a", dataclasses.replace(a, wrapped_dek=bytes(flipped)), "ctx")
    with pytest.raises(IntegrityError, match="format 1"):  # claims the older format, whose wrap had no binding
        hsm.open("obj-a", dataclasses.replace(a, format=1), "ctx")
    with pytest.raises(IntegrityError):  # re-labelled as another mechanism
        hsm.open("obj-a", dataclasses.replace(a, kek_kind="aes-wrap" if name != "aes-wrap" else "aes-wrap-pad"), "ctx")
    assert hsm.open("obj-a", a, "ctx") == b"A" * 32 and hsm.open("obj-b", b, "ctx") == b"B" * 32  # control


def test_rows_keep_opening_when_the_choice_changes_and_rewrap_moves_them(
    hsms: dict[str, KeyHsm], settings: TokenSettings
) -> None:
    old = hsms["aes-wrap-pad"]
    old.create_kek("switch", "aes")
    wrapped = old.seal("o1", b"one", "c", kek_name="switch")
    legacy_v2 = seal_v2_legacy_kind(old, "o2", b"two", "c", kek_name="switch")
    legacy_v1 = seal_v1(old, "o3", b"three", "c", kek_name="switch")
    assert (wrapped.kek_kind, legacy_v2.kek_kind, legacy_v1.kek_kind) == ("aes-wrap-pad", "aes-kwp", "aes-kwp")
    new = KeyHsm(settings, "default", 0, ("aes-gcm",))
    try:
        for oid, row, value in (("o1", wrapped, b"one"), ("o2", legacy_v2, b"two"), ("o3", legacy_v1, b"three")):
            assert new.open(oid, row, "c") == value
        new.rotate_kek("switch")
        moved = new.rewrap("o1", wrapped, "c")
        assert (moved.kek_label, moved.kek_kind) == ("switch-v2", "aes-gcm")
        assert (moved.nonce, moved.ciphertext) == (wrapped.nonce, wrapped.ciphertext)
        assert new.rewrap("o2", legacy_v2, "c").kek_kind == "aes-gcm"
        assert old.open("o1", moved, "c") == b"one"
    finally:
        new.close()


def test_legacy_rsa_rows_open(hsms: dict[str, KeyHsm]) -> None:
    h = hsms["auto"]
    for seal in (seal_v1, seal_v2_legacy_kind):
        row = seal(h, "r", b"legacy", "c", kek_name="rsakek")
        assert row.kek_kind == "rsa-oaep"
        assert h.open("r", row, "c") == b"legacy"
        with pytest.raises(IntegrityError):
            h.open("other", row, "c")


def test_a_mechanism_the_token_lacks_is_refused_with_the_reason(hsms: dict[str, KeyHsm]) -> None:
    kwp = hsms["aes-wrap-kwp"]
    with pytest.raises(KeyHsmError, match="AES_KEY_WRAP_KWP not offered"):
        kwp.create_kek("nokwp", "aes")
    with pytest.raises(KeyHsmError, match=r"no usable wrap mechanism for aes KEK 'aeskek-v1'.*KWP not offered"):
        kwp.seal("o", b"x", kek_name="aeskek")
    # Listed, but the token refuses the parameters: found out by the round trip.
    sha256 = hsms["rsa-oaep-sha256"]
    with pytest.raises(KeyHsmError, match=r"rsa-oaep-sha256: refused by the token \(ArgumentsBad\)"):
        sha256.check_mechanism("rsakek")
    assert hsms["auto"].check_mechanism("rsakek").name == "rsa-oaep-sha1"  # control


def test_a_kek_without_cka_wrap_falls_back_to_gcm(hsms: dict[str, KeyHsm], settings: TokenSettings) -> None:
    """KEKs made before this change were created for encrypt/decrypt only."""
    h = KeyHsm(settings, "default", 0, ("aes-wrap-pad", "aes-gcm"))
    try:
        with h._token.admin() as session:
            session.generate_key(KeyType.AES, 256, label="oldkek-v1", id=b"oldkek-v1", store=True,
                                 capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT)
        chosen, verdicts = h.choose_mechanism(h.current_kek("oldkek"))
        assert chosen is not None and chosen.name == "aes-gcm"
        assert verdicts[0] == ("aes-wrap-pad", "the KEK has CKA_WRAP false")
    finally:
        h.close()


def test_unknown_mechanism_names_are_refused() -> None:
    with pytest.raises(KeyHsmError, match="unknown wrap mechanism 'aes-cbc'"):
        mechanisms.check_names(["aes-gcm", "aes-cbc"])
    with pytest.raises(KeyHsmError):  # a former name is read, never chosen for new rows
        mechanisms.check_names(["aes-kwp"])
