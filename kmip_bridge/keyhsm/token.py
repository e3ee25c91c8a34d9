"""Token access: one login per (process, token), an admin session and a pool of sessions.

Login state belongs to the process, not to a session, and closing the session that logged in logs
every session of the process out. Hence one shared login session per (process, token), reference
counted across KeyHsm instances, and login/logout through ctypes: python-pkcs11's Session.close()
logs out, and its open(user_pin=...) leaks the session when the PIN is wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11e
from pkcs11.types import Session, Token

from .errors import SessionBroken, TokenUnavailable
from .library import (
    CKR_OK,
    CKR_USER_ALREADY_LOGGED_IN,
    PIN_FAILURES,
    Library,
    file_lock,
    library_for,
    registry_lock,
    rv_text,
)
from .per_object import KeyCache

log = logging.getLogger("kmip_bridge.keyhsm")

LOGIN_ATTEMPTS = 5
POOL_WAIT_SECONDS = 30.0
# A lost token is looked for again (module restart + login) at most this often per process.
RECOVERY_INTERVAL = 1.0

# Errors after which a pooled session is not worth keeping.
SESSION_BROKEN: tuple[type[Exception], ...] = (
    p11e.SessionHandleInvalid,
    p11e.SessionClosed,
    p11e.DeviceRemoved,
    p11e.TokenNotPresent,
    p11e.DeviceError,
    p11e.DeviceMemory,
)


def token_serial(token: Token) -> str:
    """CKA serialNumber as text: 16 bytes, blank-padded (SoftHSM2) or not, per vendor."""
    return token.serial.decode("ascii", errors="replace").strip()


def login_key(label: str, serial: str | None) -> str:
    return label if serial is None else f"{label}\0{serial}"


def _close_quietly(session: Session) -> None:
    with suppress(p11e.PKCS11Error):
        session.close()


class _Login:
    """The session that holds this process's login to one token, shared by every KeyHsm on it."""

    def __init__(
        self, library: Library, token_label: str, pin: str, lock_file: str | None, serial: str | None = None
    ) -> None:
        self.library = library
        self.token_label = token_label
        self.serial = serial
        self.lock_file = lock_file
        self.lock = threading.RLock()
        self.refs = 0
        self._pin_digest = hashlib.sha256(pin.encode()).digest()
        # True after a module restart until a login succeeds: the old session handle is void and
        # its number may already belong to a new session, so it is neither queried nor closed.
        self.stale = False
        self.token, self.session = self._login(pin)

    def _login(self, pin: str) -> tuple[Token, Session]:
        # Concurrent logins from several processes fail now and then: serialise and retry.
        delay = 0.05
        last = ""
        for attempt in range(LOGIN_ATTEMPTS):
            with file_lock(self.lock_file):
                result = self._login_once(pin)
            if not isinstance(result, str):
                return result
            last = result
            log.info("token login attempt %d failed: %s", attempt + 1, result)
            if attempt + 1 < LOGIN_ATTEMPTS:
                time.sleep(delay * (1 + random.random()))
                delay *= 2
                if not self.library.logins:
                    # Nothing of this process depends on the library state yet: rescan the tokens.
                    self.library.restart(self.library.conf)
        raise TokenUnavailable(last)

    def _login_once(self, pin: str) -> tuple[Token, Session] | str:
        """The logged-in token and session, or why not (a retryable reason)."""
        serial = f" serial '{self.serial}'" if self.serial else ""
        where = f"token '{self.token_label}'{serial} of {self.library.path}"
        try:
            tokens = [
                t for t in self.library.lib.get_tokens(token_label=self.token_label)
                if self.serial is None or token_serial(t) == self.serial
            ]
        except p11e.PKCS11Error as exc:
            return f"cannot list the tokens of {self.library.path}: {type(exc).__name__}"
        if not tokens:
            return f"no {where} (SOFTHSM2_CONF={os.environ.get('SOFTHSM2_CONF', 'unset')})"
        if len(tokens) > 1:
            raise TokenUnavailable(
                f"several tokens are labelled '{self.token_label}' (serials "
                f"{', '.join(token_serial(t) for t in tokens)}): set keyhsm.token_serial to pick one"
            )
        token = tokens[0]
        try:
            session = token.open(rw=True)
        except p11e.PKCS11Error as exc:
            return f"cannot open a session on {where}: {type(exc).__name__}"
        rv = self.library.raw.login_user(session.handle, pin)
        if rv in (CKR_OK, CKR_USER_ALREADY_LOGGED_IN):
            return token, session
        _close_quietly(session)
        if rv in PIN_FAILURES:
            raise TokenUnavailable(f"login to {where} failed: {PIN_FAILURES[rv]}")
        return f"login to {where} failed: {rv_text(rv)}"

    def same_pin(self, pin: str) -> bool:
        return hmac.compare_digest(self._pin_digest, hashlib.sha256(pin.encode()).digest())

    def logged_in(self) -> bool:
        return self.library.raw.logged_in(self.session.handle)

    def relogin(self, pin: str) -> None:
        """One login attempt after a module restart (see ``stale``)."""
        with file_lock(self.lock_file):
            result = self._login_once(pin)
        if isinstance(result, str):
            self.stale = True
            raise TokenUnavailable(result)
        self.token, self.session = result
        self.stale = False

    def ensure(self, pin: str) -> None:
        """Logs in again if the login was lost (e.g. something else closed a logged-in session)."""
        if self.stale:
            raise TokenUnavailable(f"token '{self.token_label}' is not present or does not answer")
        if self.logged_in():
            return
        with self.lock:
            if self.logged_in():
                return
            log.warning("login to token '%s' lost; logging in again", self.token_label)
            old = self.session
            self.token, self.session = self._login(pin)
            _close_quietly(old)

    def logout(self) -> None:
        with suppress(p11e.PKCS11Error):
            self.library.raw.logout(self.session.handle)
        _close_quietly(self.session)


@dataclass(frozen=True)
class TokenSettings:
    module: str  # path to the PKCS#11 .so
    token_label: str
    pin: str = field(repr=False)
    softhsm2_conf: str | None = None  # if set, exported as SOFTHSM2_CONF before the library loads
    lock_file: str | None = None  # if set, flock-serialises logins, KEK changes and KEK lookups across processes
    session_pool_size: int = 8
    token_serial: str | None = None  # with token_label: picks one of several tokens with that label


@dataclass
class PooledSession:
    session: Session
    generation: int  # the library generation the session was opened in (see Library.restart)
    # Key objects bound to this session, by (label, object class); python-pkcs11 ties a key object to
    # the session it was found on, so each pooled session keeps its own.
    keys: dict[tuple[str, int], Any] = field(default_factory=dict)
    object_keys: KeyCache = field(default_factory=KeyCache)  # per-object keys, bounded


class TokenConnection:
    """One KeyHsm's view of the token: the shared login, an admin session and a session pool."""

    def __init__(self, settings: TokenSettings) -> None:
        self._pin = settings.pin
        self._lock_file = settings.lock_file
        self._pool_size = max(1, settings.session_pool_size)
        self._idle: queue.LifoQueue[PooledSession] = queue.LifoQueue()
        self._count = 0
        self._count_lock = threading.Lock()
        self._closed = False
        with registry_lock():
            library = library_for(settings.module, settings.softhsm2_conf, settings.lock_file)
            label = settings.token_label
            key = login_key(label, settings.token_serial)
            login = library.logins.get(key)
            if login is None:
                login = _Login(library, label, settings.pin, settings.lock_file, settings.token_serial)
                library.logins[key] = login
            elif not login.same_pin(settings.pin):
                # Already logged in, so the PIN cannot be verified; a different one is refused.
                raise TokenUnavailable(
                    f"token '{label}' is already logged in by this process with another PIN"
                )
            login.refs += 1
        self._login = login
        self._library = library

    @property
    def token_label(self) -> str:
        return self._login.token_label

    def ensure_login(self) -> None:
        self._check_open()
        try:
            with self._library.gate.shared():
                self._login.ensure(self._pin)
        except TokenUnavailable:
            if not self.recover():
                raise

    def confirm_present(self) -> None:
        """Raises TokenUnavailable unless the logged-in token still answers as itself. SoftHSM2
        shows a token whose folder vanished as an empty token — the same answer as for destroyed
        KEKs — but C_GetTokenInfo fails then; so a KEK is only called revoked after this check."""
        if self._answers():
            return
        if self.recover():
            raise TokenUnavailable(f"token '{self.token_label}' stopped answering and was re-opened; retry")
        raise TokenUnavailable(
            f"token '{self.token_label}' is not present or does not answer; requests resume when it is back"
        )

    def _answers(self) -> bool:
        with self._library.gate.shared():
            return self._answers_unlocked()

    def recover(self) -> bool:
        """After a token failure: if the token does not answer, restart the module and log in
        again — SoftHSM2 never re-reads a token folder that vanished, and a removed HSM token
        needs a fresh C_Initialize too. At most once per RECOVERY_INTERVAL per process, and never
        from inside a PKCS#11 call of this thread. True if the token answers afterwards."""
        lib = self._library
        if self._closed or time.monotonic() - lib.last_recovery < RECOVERY_INTERVAL:
            return False
        with lib.gate.exclusive() as alone:
            if not alone or time.monotonic() - lib.last_recovery < RECOVERY_INTERVAL:
                return False
            lib.last_recovery = time.monotonic()
            if self._answers_unlocked():
                return True  # a broken session, not a lost token: the pool replaces it
            log.warning("token '%s' does not answer; restarting the PKCS#11 module", self.token_label)
            outcome: list[str] = []
            # On a thread of its own: SoftHSM2 leaves OpenSSL errors on the calling thread's error
            # queue when C_Initialize fails, and Python's ssl would then fail this connection.
            helper = threading.Thread(target=self._restart_and_login, args=(outcome,), daemon=True)
            helper.start()
            helper.join()
        if outcome != ["ok"]:
            log.warning("token '%s' still unusable: %s", self.token_label, outcome[0] if outcome else "?")
            return False
        log.warning("token '%s' is back; logged in again", self.token_label)
        return True

    def _restart_and_login(self, outcome: list[str]) -> None:
        lib = self._library
        try:
            lib.restart(lib.conf)
            for login in lib.logins.values():
                login.stale = True
            self._login.relogin(self._pin)
            outcome.append("ok")
        except TokenUnavailable as exc:
            for login in lib.logins.values():
                login.stale = True
            outcome.append(str(exc))
        except Exception as exc:  # noqa: BLE001 - reported, never raised from a helper thread
            outcome.append(f"{type(exc).__name__}")

    def _answers_unlocked(self) -> bool:
        login = self._login
        if login.stale:
            return False
        try:
            # Under the shared token lock: another process's login rewrites the token files, and
            # C_GetTokenInfo reading them half-written fails (seen at start-up of two workers).
            with self.reading():
                info = login.token.slot.get_token()
        except p11e.PKCS11Error:
            return False
        return bool(info.serial == login.token.serial and info.label == login.token_label)

    def mechanisms(self) -> dict[int, Any]:
        """The token's mechanism list with flags (C_GetMechanismList / C_GetMechanismInfo)."""
        from .mechanisms import offered

        self._check_open()
        with self._library.gate.shared():
            return offered(self._login.token.slot)

    def info(self) -> dict[str, str]:
        """Library and token identity, for 'keyhsm probe'."""
        lib, token = self._library.lib, self._login.token
        with self._library.gate.shared():
            flags = token.slot.get_token().flags
        return {
            "module": self._library.path,
            "library": f"{lib.library_description} {lib.library_version[0]}.{lib.library_version[1]} "
                       f"by {lib.manufacturer_id}",
            "token": f"'{token.label}' serial {token_serial(token)} "
                     f"model {token.model.strip()} by {token.manufacturer_id.strip()}",
            "flags": f"0x{int(flags):X}",
        }

    def _check_open(self) -> None:
        if self._closed:
            raise TokenUnavailable("the key HSM connection is closed")

    def reading(self) -> contextlib.AbstractContextManager[None]:
        """Shared lock for searching token objects. SoftHSM2 (file backend) reads object files that
        another process is writing without waiting, and then finds half-written KEKs (measured:
        MechanismInvalid, objects missing from listings); writers hold the exclusive lock."""
        return file_lock(self._lock_file, shared=True)

    @contextmanager
    def admin(self) -> Iterator[Session]:
        """The read-write login session, one caller at a time, across processes with a lock file
        (so that 'highest version + 1' cannot be picked twice)."""
        self.ensure_login()
        with self._library.gate.shared(), self._login.lock, file_lock(self._lock_file):
            try:
                yield self._login.session
            except SESSION_BROKEN as exc:
                raise TokenUnavailable(f"token session failed: {type(exc).__name__}") from None

    @contextmanager
    def session(self) -> Iterator[PooledSession]:
        """A pooled read-only session for this thread alone until the block ends."""
        try:
            with self._library.gate.shared():
                ps = self._take()
                try:
                    yield ps
                except SESSION_BROKEN as exc:
                    self._discard(ps)
                    raise SessionBroken(f"token session failed: {type(exc).__name__}") from None
                except BaseException:
                    self._give_back(ps)
                    raise
                self._give_back(ps)
        except TokenUnavailable:
            self.recover()  # outside the gate; for the next request, this one has failed
            raise

    def _take(self) -> PooledSession:
        self._check_open()
        while True:
            try:
                ps = self._idle.get_nowait()
            except queue.Empty:
                break
            if ps.generation == self._library.generation:
                return ps
            self._discard(ps)  # opened before a module restart: void
        with self._count_lock:
            grow = self._count < self._pool_size
            if grow:
                self._count += 1
        if grow:
            try:
                # Not logged in itself: login state is per process, and a session opened with a PIN
                # would log the whole process out when closed.
                return PooledSession(self._logged_in(self._login.token.open()), self._library.generation)
            except TokenUnavailable:  # the new session could not log in (and is closed)
                with self._count_lock:
                    self._count -= 1
                raise
            except p11e.SessionCount:
                # The token's session limit (HSMs have one, shared by every process): this pool
                # stops growing at what it got, and waits for one of its own sessions instead.
                with self._count_lock:
                    self._count -= 1
                    self._pool_size = max(1, min(self._pool_size, self._count))
                    alone = self._count == 0
                if alone:
                    raise TokenUnavailable(
                        f"token '{self.token_label}' refuses more sessions (CKR_SESSION_COUNT) and this "
                        "process holds none"
                    ) from None
                log.warning("token '%s' allows no more sessions: pool capped at %d", self.token_label,
                            self._pool_size)
            except p11e.PKCS11Error as exc:
                with self._count_lock:
                    self._count -= 1
                if self._login.stale:
                    raise TokenUnavailable(
                        f"token '{self.token_label}' is not present or does not answer"
                    ) from None
                raise TokenUnavailable(f"cannot open a token session: {type(exc).__name__}") from None
        try:
            ps = self._idle.get(timeout=POOL_WAIT_SECONDS)
            if ps.generation != self._library.generation:
                self._discard(ps)
                return self._take()
            return ps
        except queue.Empty:
            raise TokenUnavailable(
                f"all {self._pool_size} token sessions stayed busy for {POOL_WAIT_SECONDS:.0f} s"
            ) from None

    def _logged_in(self, session: Session) -> Session:
        """The new pooled session, logged in. PKCS#11 shares the process's login with every session,
        but some HSM libraries keep a login per session: such a session is logged in on its own
        (through ctypes, so that closing it later does not log the process out)."""
        raw = self._library.raw
        if raw.logged_in(session.handle):
            return session
        rv = raw.login_user(session.handle, self._pin)
        if rv in (CKR_OK, CKR_USER_ALREADY_LOGGED_IN) and raw.logged_in(session.handle):
            log.info("token '%s' wants a login per session; logged in the new session", self.token_label)
            return session
        _close_quietly(session)
        raise TokenUnavailable(f"login on a new session of token '{self.token_label}' failed: {rv_text(rv)}")

    def _give_back(self, ps: PooledSession) -> None:
        if self._closed:
            self._discard(ps)
        else:
            self._idle.put(ps)

    def _discard(self, ps: PooledSession) -> None:
        if ps.generation == self._library.generation:  # an older handle's number may be reused
            _close_quietly(ps.session)
        with self._count_lock:
            self._count -= 1

    def check(self) -> None:
        """Raises TokenUnavailable unless the login holds and a pooled session can search the token."""
        self.ensure_login()
        try:
            with self.session() as ps, self.reading():
                list(ps.session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.TOKEN: True}))
        except p11e.PKCS11Error as exc:
            raise TokenUnavailable(
                f"token '{self.token_label}' does not answer: {type(exc).__name__}"
            ) from None
        if not self._login.logged_in():
            raise TokenUnavailable(f"not logged in to token '{self.token_label}'")
        try:
            self.confirm_present()
        except TokenUnavailable:
            self.confirm_present()  # once more: a token just re-opened by recover() answers now

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        while True:
            try:
                self._discard(self._idle.get_nowait())
            except queue.Empty:
                break
        with registry_lock():
            login = self._login
            login.refs -= 1
            if login.refs == 0:
                login.logout()
                login.library.logins.pop(login_key(login.token_label, login.serial), None)
