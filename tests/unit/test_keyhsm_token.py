"""Token selection and session limits against a real SoftHSM2 token: two tokens with one label are
told apart by serial, and a token's session limit (CKR_SESSION_COUNT) caps the pool instead of
failing requests."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable

import pytest
from pkcs11 import exceptions as p11e

from kmip_bridge.keyhsm import KekNotFound, KeyHsm, TokenSettings, TokenUnavailable
from kmip_bridge.keyhsm.token import TokenConnection, token_serial

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "1234"

pytestmark = pytest.mark.skipif(
    not os.path.exists(MODULE) or shutil.which("softhsm2-util") is None, reason="SoftHSM2 not installed"
)


@pytest.fixture(scope="module")
def conf(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("softhsm-twins")
    (d / "tokens").mkdir()
    path = d / "softhsm2.conf"
    path.write_text(f"directories.tokendir = {d / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    for label in ("twin", "twin", "solo"):  # two tokens share a label
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "5678", "--pin", PIN],
            env={**os.environ, "SOFTHSM2_CONF": str(path)}, check=True, capture_output=True,
        )
    return str(path)


def _serials(conf: str) -> list[str | None]:
    out = subprocess.run(["softhsm2-util", "--show-slots"], env={**os.environ, "SOFTHSM2_CONF": conf},
                         capture_output=True, text=True, check=True).stdout
    serials, serial = [], None
    for line in out.splitlines():  # each token: its serial number line, then its label line
        line = line.strip()
        if line.startswith("Serial number:"):
            serial = line.split(":", 1)[1].strip()
        if line.startswith("Label:") and line.split(":", 1)[1].strip() == "twin":
            serials.append(serial)
    return serials


def test_a_label_shared_by_two_tokens_needs_the_serial(conf: str) -> None:
    with pytest.raises(TokenUnavailable, match=r"several tokens are labelled 'twin'.*keyhsm.token_serial"):
        KeyHsm(TokenSettings(MODULE, "twin", PIN, softhsm2_conf=conf), "default")
    first, second = _serials(conf)
    a = KeyHsm(TokenSettings(MODULE, "twin", PIN, softhsm2_conf=conf, token_serial=first), "default")
    b = KeyHsm(TokenSettings(MODULE, "twin", PIN, softhsm2_conf=conf, token_serial=second), "default")
    try:
        a.create_kek("default", "aes")
        assert [k.label for k in a.list_keks()] == ["default-v1"]
        with pytest.raises(KekNotFound):  # the other token, not the same login
            b.current_kek()
        assert token_serial(a._token._login.token) == first and token_serial(b._token._login.token) == second
    finally:
        a.close()
        b.close()
    with pytest.raises(TokenUnavailable, match="no token 'twin' serial 'nope'"):
        KeyHsm(TokenSettings(MODULE, "twin", PIN, softhsm2_conf=conf, token_serial="nope"), "default")


def test_session_count_limit_caps_the_pool_and_requests_wait(conf: str, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = TokenConnection(TokenSettings(MODULE, "solo", PIN, softhsm2_conf=conf, session_pool_size=8))
    try:
        real_open = conn._login.token.open
        opened: list[int] = []

        def limited(*args: object, **kwargs: object) -> object:
            if len(opened) >= 2:  # a token that allows this process two sessions
                raise p11e.SessionCount()
            opened.append(1)
            return real_open(*args, **kwargs)

        monkeypatch.setattr(conn._login, "token", _Token(conn._login.token, limited))
        got: list[str] = []
        with conn.session(), conn.session() as second:
            waiter = threading.Thread(target=lambda: got.append(_use(conn)))
            waiter.start()
            waiter.join(timeout=0.5)
            assert not got  # waiting for one of the two, not failed
            held = second
        waiter.join(timeout=30)
        assert got == ["ok"] and conn._pool_size == 2 and held is not None
    finally:
        conn.close()


class _Token:
    """The real token with C_OpenSession replaced (python-pkcs11's Token is read-only)."""

    def __init__(self, real: object, open_session: Callable[..., object]) -> None:
        self._real, self.open = real, open_session

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


def _use(conn: TokenConnection) -> str:
    with conn.session():
        return "ok"


def test_session_count_with_no_session_held_is_a_clear_error(conf: str, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = TokenConnection(TokenSettings(MODULE, "solo", PIN, softhsm2_conf=conf))
    try:
        def refuse(*args: object, **kwargs: object) -> object:
            raise p11e.SessionCount()

        monkeypatch.setattr(conn._login, "token", _Token(conn._login.token, refuse))
        with pytest.raises(TokenUnavailable, match="CKR_SESSION_COUNT"), conn.session():
            pass
    finally:
        conn.close()


def test_a_token_with_a_login_per_session_gets_each_pooled_session_logged_in(
    conf: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SoftHSM2 shares the process's login with every session; a library that does not is
    imitated by reporting new sessions as logged out until they log in themselves."""
    conn = TokenConnection(TokenSettings(MODULE, "solo", PIN, softhsm2_conf=conf))
    try:
        raw = conn._library.raw
        real_logged_in, real_login = raw.logged_in, raw.login_user
        own_login: set[int] = set()

        def logged_in(handle: int) -> bool:
            return handle == conn._login.session.handle or handle in own_login

        def login_user(handle: int, pin: str) -> int:
            own_login.add(handle)
            return real_login(handle, pin)

        monkeypatch.setattr(raw, "logged_in", logged_in)
        monkeypatch.setattr(raw, "login_user", login_user)
        with conn.session() as ps:
            assert ps.session.handle in own_login and real_logged_in(ps.session.handle)
        monkeypatch.setattr(raw, "login_user", lambda handle, pin: 0xA0)  # CKR_PIN_INCORRECT
        with pytest.raises(TokenUnavailable, match=r"login on a new session.*the user PIN is incorrect"):
            with conn.session(), conn.session():  # the second one is new
                pass
        assert conn._count == 1  # the refused session is not counted as held
    finally:
        conn.close()
