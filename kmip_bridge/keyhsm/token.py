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

from .errors import TokenUnavailable
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

log = logging.getLogger("kmip_bridge.keyhsm")

LOGIN_ATTEMPTS = 5
POOL_WAIT_SECONDS = 30.0

# Errors after which a pooled session is not worth keeping.
SESSION_BROKEN: tuple[type[Exception], ...] = (
    p11e.SessionHandleInvalid,
    p11e.SessionClosed,
    p11e.DeviceRemoved,
    p11e.TokenNotPresent,
    p11e.DeviceError,
    p11e.DeviceMemory,
)


def _close_quietly(session: Session) -> None:
    with suppress(p11e.PKCS11Error):
        session.close()


class _Login:
    """The session that holds this process's login to one token, shared by every KeyHsm on it."""

    def __init__(self, library: Library, token_label: str, pin: str, lock_file: str | None) -> None:
        self.library = library
        self.token_label = token_label
        self.lock_file = lock_file
        self.lock = threading.RLock()
        self.refs = 0
        self._pin_digest = hashlib.sha256(pin.encode()).digest()
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
        where = f"token '{self.token_label}' of {self.library.path}"
        try:
            token = self.library.lib.get_token(token_label=self.token_label)
        except p11e.NoSuchToken:
            return f"no {where} (SOFTHSM2_CONF={os.environ.get('SOFTHSM2_CONF', 'unset')})"
        except p11e.MultipleTokensReturned:
            raise TokenUnavailable(f"several tokens are labelled '{self.token_label}'") from None
        except p11e.PKCS11Error as exc:
            return f"cannot list the tokens of {self.library.path}: {type(exc).__name__}"
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

    def ensure(self, pin: str) -> None:
        """Logs in again if the login was lost (e.g. something else closed a logged-in session)."""
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


@dataclass
class PooledSession:
    session: Session
    # Key objects bound to this session, by (label, object class); python-pkcs11 ties a key object to
    # the session it was found on, so each pooled session keeps its own.
    keys: dict[tuple[str, int], Any] = field(default_factory=dict)


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
            login = library.logins.get(label)
            if login is None:
                login = _Login(library, label, settings.pin, settings.lock_file)
                library.logins[label] = login
            elif not login.same_pin(settings.pin):
                # Already logged in, so the PIN cannot be verified; a different one is refused.
                raise TokenUnavailable(
                    f"token '{label}' is already logged in by this process with another PIN"
                )
            login.refs += 1
        self._login = login

    @property
    def token_label(self) -> str:
        return self._login.token_label

    def ensure_login(self) -> None:
        self._check_open()
        self._login.ensure(self._pin)

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
        with self._login.lock, file_lock(self._lock_file):
            try:
                yield self._login.session
            except SESSION_BROKEN as exc:
                raise TokenUnavailable(f"token session failed: {type(exc).__name__}") from None

    @contextmanager
    def session(self) -> Iterator[PooledSession]:
        """A pooled read-only session for this thread alone until the block ends."""
        ps = self._take()
        try:
            yield ps
        except SESSION_BROKEN as exc:
            self._discard(ps)
            raise TokenUnavailable(f"token session failed: {type(exc).__name__}") from None
        except BaseException:
            self._give_back(ps)
            raise
        self._give_back(ps)

    def _take(self) -> PooledSession:
        self._check_open()
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._count_lock:
            grow = self._count < self._pool_size
            if grow:
                self._count += 1
        if grow:
            try:
                # Not logged in itself: login state is per process, and a session opened with a PIN
                # would log the whole process out when closed.
                return PooledSession(self._login.token.open())
            except p11e.PKCS11Error as exc:
                with self._count_lock:
                    self._count -= 1
                raise TokenUnavailable(f"cannot open a token session: {type(exc).__name__}") from None
        try:
            return self._idle.get(timeout=POOL_WAIT_SECONDS)
        except queue.Empty:
            raise TokenUnavailable(
                f"all {self._pool_size} token sessions stayed busy for {POOL_WAIT_SECONDS:.0f} s"
            ) from None

    def _give_back(self, ps: PooledSession) -> None:
        if self._closed:
            self._discard(ps)
        else:
            self._idle.put(ps)

    def _discard(self, ps: PooledSession) -> None:
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
                login.library.logins.pop(login.token_label, None)
